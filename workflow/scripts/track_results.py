import json
from pathlib import Path

from dogbreed.runtime import tracking
from dogbreed.runtime.rule_runner import run_rule


def main(smk):
    """The rule verdicts (rules.json, a tag per rule, how many triggered), the evaluation (metrics.json and its
    numbers) and the profiler report into the final training's MLflow run; what was logged where, as the output."""
    verdicts = {rule["rule"]: rule["verdict"] for rule in json.loads(Path(smk.input.verdicts).read_text())["rules"]}
    evaluation = json.loads(Path(smk.input.evaluation).read_text())
    logged = tracking.log_to_final_run(
        smk.config,
        smk.input.model_json,
        files=[smk.input.verdicts, smk.input.evaluation],
        reports=[smk.input.profiler_report],
        metrics={
            "rules_triggered": sum(verdict == "triggered" for verdict in verdicts.values()),
            **tracking.evaluation_metrics(evaluation),
        },
        tags={f"rule.{name}": verdict for name, verdict in verdicts.items()},
    )
    run = json.loads(Path(smk.input.model_json).read_text()).get("tracking") or {}
    Path(smk.output[0]).parent.mkdir(parents=True, exist_ok=True)
    Path(smk.output[0]).write_text(json.dumps({**(run if logged else {"run_id": None}), "logged": logged}, indent=2))
    if logged:
        return f"logged {', '.join(logged)} into MLflow run {run['run_id']}"
    return "tracking is off" if tracking.tracker(smk.config) is None else f"nothing logged (why: {smk.log[0]})"


run_rule(main, snakemake)
