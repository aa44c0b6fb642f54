"""The few lines printed when a run ends: accuracy, best hyperparameters, where to look next."""

import json
from pathlib import Path

from dogbreed.backends.base import read_endpoint_state
from dogbreed.runtime import run_options


def run_summary(results_dir, endpoint_state_dir, seconds=None) -> str:
    """seconds: the run's wall time, from Snakemake reading the workflow to now (said when the run did anything)."""
    results = Path(results_dir)
    lines = []
    metrics, best, endpoint = (
        results / "evaluation/metrics.json",
        results / "best_hyperparameters.json",
        results / "endpoint.json",
    )
    if metrics.exists():
        m = json.loads(metrics.read_text())
        lines.append(
            f"test accuracy {m['accuracy']:.4f} (top-5 {m['top5_accuracy']:.4f}) on {m['n']} images; "
            f"latency p50 {m['latency_ms']['p50']} ms per request"
        )
    if best.exists():
        b = json.loads(best.read_text())
        lines.append(
            f"best hyperparameters {b['hyperparameters']} ({b['objective']['metric']} {b['objective']['value']:.4f}, trial {b['trial']})"
        )
    if endpoint.exists():
        url = json.loads(endpoint.read_text())["url"]
        if read_endpoint_state(endpoint_state_dir) is not None:
            lines.append(
                f"endpoint {url} is up (stop it: {run_options.command('teardown')}; every endpoint this checkout "
                f"started: {run_options.command('endpoints')})"
            )
        else:
            lines.append(f"endpoint {url} is stopped (bring it back: {run_options.command('deploy')})")
    for name in ("report.html", "profiler/profiler-report.html"):
        if (results / name).exists():
            lines.append(f"{'report' if name == 'report.html' else 'profiler report'}: {results / name}")
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    return "\n".join(["", f"=== dog-breed run{took} ===", *lines]) if lines else ""
