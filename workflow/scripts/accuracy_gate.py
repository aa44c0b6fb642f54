from pathlib import Path

from dogbreed.checks import gates
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    verdict = gates.accuracy_gate(smk.input.metrics, smk.params.min_accuracy)
    Path(smk.output[0]).write_text(verdict + "\n")
    return verdict


run_rule(main, snakemake)
