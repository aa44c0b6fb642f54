import json
from pathlib import Path

from dogbreed import job_rules
from dogbreed.rule_runner import run_rule


def main(smk):
    result = job_rules.evaluate(smk.input.output, smk.params.rules)
    Path(smk.output[0]).parent.mkdir(parents=True, exist_ok=True)
    Path(smk.output[0]).write_text(json.dumps(result, indent=2, default=str))
    for rule in result["rules"]:
        print(f"{rule['rule']:26s} {rule['verdict']}" + (f"  → {rule['recommendation']}" if rule["recommendation"] else ""))


run_rule(main, snakemake)
