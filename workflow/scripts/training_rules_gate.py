from pathlib import Path

from dogbreed import gates
from dogbreed.rule_runner import run_rule


def main(smk):
    Path(smk.output[0]).write_text(gates.training_rules_gate(smk.input.rules, smk.params.stop_on) + "\n")


run_rule(main, snakemake)
