"""What a results folder holds: the data source and backend of the run that last finished there, so that a run
of another data or backend, which redoes that run's jobs in the same folder (a rerun, by design), says so first
instead of replacing the finished run's outputs silently."""

import json
from datetime import UTC, datetime
from pathlib import Path

NAME = "finished-run.json"  # <results_dir>/finished-run.json


def _what(record: dict) -> str:
    return f"{record['data_source']} on {record['backend']}"


def remember(results_dir, config) -> None:
    """After a run finished: what ran in this folder."""
    record = {
        "data_source": config["data_source"],
        "backend": config["backend"],
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    Path(results_dir, NAME).write_text(json.dumps(record, indent=2) + "\n")


def replacing(results_dir, config, jobs_to_run=None):
    """The line to say first when this run is about to redo a finished run of another data source or backend
    in its folder (jobs_to_run: how many of its jobs; None in a dry run, whose plan lists them); None otherwise."""
    path = Path(results_dir, NAME)
    try:
        there = json.loads(path.read_text())
        there_now = _what(there)
    except (OSError, ValueError, KeyError):
        return None  # no finished run there (or a folder from before this record)
    this = {"data_source": config["data_source"], "backend": config["backend"]}
    if jobs_to_run == 0 or _what(this) == there_now:
        return None
    redoes = "would redo its jobs" if jobs_to_run is None else f"redoes {jobs_to_run} of its jobs"
    return (
        f"note: {results_dir}/ holds a finished run of {there_now}; this run ({_what(this)}) {redoes} there "
        f"(to keep both: --config results_dir=another-folder)"
    )


def evaluated_since(results_dir, started: float) -> bool:
    """Whether this run, started at `started` (time.time()), made the folder's evaluation: only then is the
    folder's finished run this one (a run of `prepare` alone with other data is not)."""
    metrics = Path(results_dir, "evaluation", "metrics.json")
    return metrics.is_file() and metrics.stat().st_mtime >= started
