"""The run's gates: rules that fail the run after the fact, and leave the outputs that explain why."""

import json
from pathlib import Path


class GateFailed(RuntimeError):
    """A gate's condition does not hold; the message says which and where the evidence is."""


def accuracy_gate(metrics_path, min_accuracy) -> str:
    """The verdict line; GateFailed below min_accuracy."""
    accuracy = json.loads(Path(metrics_path).read_text())["accuracy"]
    verdict = f"test accuracy {accuracy:.4f}, min_accuracy {min_accuracy}"
    print(verdict)
    if accuracy < min_accuracy:
        raise GateFailed(f"accuracy gate failed: {verdict} (metrics kept in {metrics_path})")
    return f"passed: {verdict}"


def training_gate(rules_path, stop_on) -> str:
    """Like SageMaker's StopTraining action, after the fact: GateFailed when a rule in stop_on triggered."""
    verdicts = {r["rule"]: r for r in json.loads(Path(rules_path).read_text())["rules"]}
    unknown = [name for name in stop_on if name not in verdicts]
    if unknown:
        raise GateFailed(f"profiling.stop_on names rules that did not run: {unknown}")
    lines = "\n".join(f"{name}: {verdicts[name]['verdict']}" for name in stop_on)
    print(lines)
    hit = [name for name in stop_on if verdicts[name]["verdict"] == "triggered"]
    if hit:
        raise GateFailed(
            f"training rules set to stop the run triggered: {', '.join(hit)} (see {rules_path} and the profiler report)"
        )
    return lines
