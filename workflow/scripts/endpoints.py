"""List every endpoint this checkout started and has not torn down, on every backend, with its age, what it has
cost so far (SageMaker) and the command that stops each."""

from dogbreed.runtime.rule_runner import run_rule, say
from dogbreed.serving import endpoint_registry


def main(smk):
    lines = endpoint_registry.listing(smk.params.endpoints_dir)
    for line in lines:
        say(line)
    return f"{len(lines)} endpoint(s) running" if lines else "no endpoint of this checkout is running"


run_rule(main, snakemake)
