"""Reading what a training job recorded about itself (scripts/instrumentation.py) into tables.

debug/    → load_debug(): tensor reductions at the saved steps, each step's loss, labels and predictions
profiler/ → load_profile(): system samples, step timings, job info
"""

import json
from pathlib import Path

import job_contract as contract
import numpy as np
import pandas as pd

# one column per reduction a job saves (job_contract.TENSOR_REDUCTIONS: each collection those its rules read; a
# column a collection lacks is NaN)
REDUCTION_COLUMNS = list(dict.fromkeys(r for reductions in contract.TENSOR_REDUCTIONS.values() for r in reductions))


def load_debug(debug_dir) -> dict:
    """{"losses": (step, mode, loss), "tensors": (step, mode, collection, tensor, reductions…),
    "labels": (step, mode, label, prediction)}; empty tables when the job saved no tensors. From the job's
    tensors.jsonl and batches.jsonl (instrumentation.DebugRecord)."""
    debug_dir = Path(debug_dir)
    empty = {
        "losses": pd.DataFrame(columns=["step", "mode", "loss"]),
        "tensors": pd.DataFrame(columns=["step", "mode", "collection", "tensor", *REDUCTION_COLUMNS]),
        "labels": pd.DataFrame(columns=["step", "mode", "label", "prediction"]),
    }
    losses, labels = [], []
    for batch in _read_jsonl(debug_dir / contract.BATCHES_FILE):
        losses.append({"step": batch["step"], "mode": batch["mode"], "loss": float(batch["loss"])})
        labels.extend(
            {"step": batch["step"], "mode": batch["mode"], "label": int(label), "prediction": int(prediction)}
            for label, prediction in zip(batch["labels"], batch["predictions"])
        )
    tensors = [
        {"step": saved["step"], "mode": saved["mode"], "tensor": name, **values}
        for saved in _read_jsonl(debug_dir / contract.TENSORS_FILE)
        for name, values in saved["tensors"].items()
    ]
    return {
        "losses": pd.DataFrame(losses, columns=empty["losses"].columns).sort_values("step", ignore_index=True),
        "tensors": pd.DataFrame(tensors, columns=empty["tensors"].columns),
        "labels": pd.DataFrame(labels, columns=empty["labels"].columns),
    }


def save_debug_tables(debug: dict, folder):
    """The tables load_debug() made, as CSV: the rules check reads the job's files once and the profiler report
    reads these."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, table in debug.items():
        table.to_csv(Path(folder) / f"{name}.csv", index=False)


def load_debug_tables(folder) -> dict:
    return {name: pd.read_csv(Path(folder) / f"{name}.csv") for name in ("losses", "tensors", "labels")}


def _read_jsonl(path) -> list:
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_profile(profiler_dir) -> dict:
    """{"system": one row per sample (cpu_total, cpu_max_core, gpu_* columns when a GPU was seen),
    "steps": one row per step (duration_s), "job": the job info}."""
    profiler_dir = Path(profiler_dir)
    samples = _read_jsonl(profiler_dir / "system.jsonl")
    rows = []
    for sample in samples:
        cores = sample.get("cpu_percent") or [0.0]
        row = {key: value for key, value in sample.items() if key not in ("cpu_percent", "gpus")}
        row["cpu_total"] = float(np.mean(cores))
        row["cpu_max_core"] = float(np.max(cores))
        row["cpu_cores"] = len(cores)
        gpus = sample.get("gpus") or []
        if gpus:
            row["gpu_utilization"] = float(np.mean([g["utilization_percent"] for g in gpus]))
            row["gpu_memory_percent"] = float(np.max([g["memory_percent"] for g in gpus]))
            row["gpu_memory_used_mb"] = float(np.sum([g["memory_used_mb"] for g in gpus]))
        rows.append(row)
    system = pd.DataFrame(rows)
    steps = _read_steps(profiler_dir / "steps.jsonl")
    # a DDP job's other ranks keep their own step timings (rank 0's are `steps`)
    ranks = {
        int(path.name.split(".rank")[1].split(".")[0]): _read_steps(path)
        for path in profiler_dir.glob("steps.rank*.jsonl")
    }
    job_file = profiler_dir / "job.json"
    job = json.loads(job_file.read_text()) if job_file.exists() else {}
    return {"system": system, "steps": steps, "job": job, "rank_steps": {0: steps, **ranks} if ranks else {}}


def _read_steps(path):
    steps = pd.DataFrame(
        _read_jsonl(path), columns=["phase", "epoch", "step", "start", "data_wait_s", "compute_s", "end", "forward_s"]
    )
    steps["duration_s"] = steps["end"] - steps["start"]
    return steps


def has_gpu(profile) -> bool:
    return "gpu_utilization" in profile["system"].columns and profile["system"]["gpu_utilization"].notna().any()
