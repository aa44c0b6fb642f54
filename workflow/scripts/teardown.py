"""Stop this run's endpoint (the options given say which run), and name every other endpoint this
checkout started that it left running, with the command that stops each."""

from pathlib import Path

from dogbreed.backends.registry import rule_backend
from dogbreed.runtime.rule_runner import run_rule, say
from dogbreed.serving import endpoint_registry


def main(smk):
    state_dir = Path(smk.params.state_dir)
    stopped = rule_backend(smk).teardown(state_dir)
    endpoint_registry.forget(state_dir, keep_log_as=Path(smk.log[0]).with_name("endpoint-server.log"))
    for line in endpoint_registry.not_touched(smk.params.endpoints_dir, state_dir):
        say(line)
    return (
        "stopped: " + ", ".join(stopped)
        if stopped
        else f"no endpoint of this run ({smk.params.endpoint_name}) is running"
    )


run_rule(main, snakemake)
