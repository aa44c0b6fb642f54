"""Every endpoint this checkout started, whichever options started it (docs/architecture.md §4).

Each endpoint has a folder under ENDPOINTS_DIR (common.smk), named after it: the backend's state.json
(what runs: pid, container, SageMaker names) and run.json, written before the endpoint starts, saying
which run started it and the command that stops it. teardown stops its own run's endpoint and names
the others it left running, with their own commands; deploy finds its endpoint there to check it.
"""

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from dogbreed.backends.base import read_endpoint_state
from dogbreed.runtime import run_options

RUN_FILE = "run.json"


def note_run(state_dir, results_dir, backend: str):
    """Before deploy starts anything: which run this endpoint belongs to, and how to stop it."""
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    (Path(state_dir) / RUN_FILE).write_text(
        json.dumps(
            {"results_dir": str(results_dir), "backend": backend, "stop_it": run_options.command("teardown")}, indent=2
        )
    )


def bring_back(backend, endpoint: dict, model_tar, state_dir, results_dir, backend_name: str) -> dict:
    """A recorded endpoint that no longer serves (stopped, crashed, rebooted away), back under its name at its
    address from the same served artifact, checked first; its description. deploy and evaluate call it."""
    from dogbreed.serving import servable

    servable.check_servable(model_tar, run_options.command("deploy --forcerun package_model"))
    note_run(state_dir, results_dir, backend_name)
    revived = backend.revive(endpoint, model_tar, state_dir)
    _note_restart(Path(results_dir) / "endpoint.json", revived)
    return revived


def _note_restart(description_path: Path, revived: dict) -> None:
    """endpoint.json says when the endpoint serving now started. Its time stamp stays: start_endpoint's output
    is the same endpoint, and a newer file would make Snakemake rerun the evaluation for nothing."""
    if not description_path.is_file():
        return
    before = description_path.stat()
    description = json.loads(description_path.read_text())
    description.update({key: revived[key] for key in ("url", "started_at") if key in revived})
    description_path.write_text(json.dumps(description, indent=2))
    os.utime(description_path, ns=(before.st_atime_ns, before.st_mtime_ns))


def forget(state_dir, keep_log_as):
    """After teardown: nothing of this endpoint runs, so nothing of it is kept but the server's log,
    which outlives it at keep_log_as (beside the teardown rule's own log)."""
    if (Path(state_dir) / "server.log").is_file():
        shutil.copyfile(Path(state_dir) / "server.log", keep_log_as)
    shutil.rmtree(state_dir, ignore_errors=True)


def recorded(endpoints_dir) -> list:
    """[(endpoint name, state, run)] of every endpoint recorded as started and not torn down."""
    found = []
    for folder in sorted(Path(endpoints_dir).glob("*/")):
        state = read_endpoint_state(folder)
        if state is not None:
            run_file = folder / RUN_FILE
            found.append((folder.name, state, json.loads(run_file.read_text()) if run_file.is_file() else {}))
    return found


def not_touched(endpoints_dir, state_dir) -> list:
    """One line for each recorded endpoint other than this run's: what it is and how to stop it."""
    lines = []
    for name, state, run in recorded(endpoints_dir):
        if Path(endpoints_dir, name).resolve() == Path(state_dir).resolve():
            continue
        where = state.get("url") or f"SageMaker, {state.get('region', '?')}"
        started = f", results in {run['results_dir']}" if run.get("results_dir") else ""
        lines.append(
            f"not touched: {name} ({state.get('backend', '?')}, {where}{started}); "
            f"stop it: {run.get('stop_it', 'snakemake --cores 1 teardown with the options that started it')}"
        )
    return lines


def listing(endpoints_dir, now=None) -> list:
    """One line for each endpoint this checkout started and has not torn down, on every backend: its name, backend,
    address, age and, on SageMaker, its kind and what it has cost so far at the price it was deployed at; then the
    command that stops it. Empty: none runs."""
    now = now or datetime.now(UTC)
    lines = []
    for name, state, run in recorded(endpoints_dir):
        started = _started(state)
        age = now - started if started else None
        facts = [state.get("backend", "?"), state.get("url") or f"SageMaker, {state.get('region', '?')}"]
        facts.append(f"up {_duration(age.total_seconds())}" if age is not None else "age unknown")
        if state.get("backend") == "sagemaker":
            facts.append(_sagemaker_cost(state, age))
        if run.get("results_dir"):
            facts.append(f"results in {run['results_dir']}")
        stop = run.get("stop_it", "snakemake --cores 1 teardown with the options that started it")
        lines.append(f"{name} ({', '.join(facts)}); stop it: {stop}")
    return lines


def _started(state):
    try:
        return datetime.fromisoformat(state["started_at"])
    except (KeyError, TypeError, ValueError):  # a state file written before it recorded its start
        return None


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours < 48 else f"{hours // 24} days {hours % 24} h"


def _sagemaker_cost(state, age) -> str:
    """What a SageMaker endpoint has cost so far: an instance endpoint bills its instances every hour it is up; a
    serverless one only its requests' compute time (which the listing does not know), nothing while idle."""
    if state.get("kind") == "serverless":
        per_second = float(state.get("price_per_gb_second", 0)) * int(state.get("memory_mb", 0)) / 1024
        return (
            f"serverless endpoint, {state.get('memory_mb', '?')} MB, billed per request at ${per_second:.6f} per "
            f"second of compute, nothing while idle"
        )
    instances = f"{state.get('instance_count', 1)} × {state.get('instance_type', '?')}"
    price = state.get("price_per_hour")
    if "kind" not in state:  # recorded before the listing's facts were
        return "cost so far unknown (deployed before its price was recorded)"
    if price is None or age is None:
        return f"instance endpoint, {instances}, cost so far unknown (no price: backends.sagemaker.prices_per_hour)"
    dollars = float(price) * int(state.get("instance_count", 1)) * age.total_seconds() / 3600
    return f"instance endpoint, {instances} at ${float(price):g}/h, ${dollars:,.2f} so far"
