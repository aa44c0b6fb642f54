from pathlib import Path

from dogbreed.checks import gates
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    Path(smk.output[0]).write_text(gates.training_gate(smk.input.verdicts, smk.params.stop_on) + "\n")


run_rule(main, snakemake)
