import json
from pathlib import Path

from dogbreed.checks import artifacts, run_checks
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    debug = artifacts.load_debug(f"{smk.input.output}/debug")
    artifacts.save_debug_tables(debug, smk.output.tables)  # the report reads these, not the job's files again
    result = run_checks.evaluate(smk.input.output, smk.params.check_settings, debug)
    Path(smk.output.verdicts).write_text(json.dumps(result, indent=2, default=str))
    for rule in result["rules"]:
        print(
            f"{rule['rule']:26s} {rule['verdict']}"
            + (f"  → {rule['recommendation']}" if rule["recommendation"] else "")
        )
    verdicts = {rule["rule"]: rule["verdict"] for rule in result["rules"]}
    triggered = [name for name, verdict in verdicts.items() if verdict == "triggered"]
    return f"{len(verdicts)} training checks, " + (
        f"triggered: {', '.join(triggered)}" if triggered else "none triggered"
    )


run_rule(main, snakemake)
