"""SageMaker ProfilerReport's rules, evaluated on the system metrics and step timings the job recorded.

Each rule is a plain function over artifacts.load_profile() with SageMaker's default
thresholds as keyword defaults. GPU rules on a job that saw no GPU answer "not_applicable": they
neither pass nor fail it. `patience` (samples skipped at the start, as SageMaker does) is applied
only when the run has more samples than that; a short run is judged on all of its samples
(SageMaker's skip would leave it nothing to judge).
"""

import job_contract as contract
import numpy as np

from dogbreed.checks.artifacts import has_gpu


def _result(triggered_steps, evidence, verdict=None):
    verdict = verdict or ("triggered" if triggered_steps else "ok")
    return {"verdict": verdict, "triggered_steps": [int(s) for s in triggered_steps][:100], "evidence": evidence}


def _not_applicable(reason):
    return _result([], {"reason": reason}, verdict="not_applicable")


def _after_patience(frame, patience):
    return frame.iloc[patience:] if len(frame) > patience else frame


def _percentile(values, q):
    return round(float(np.percentile(values, q)), 2)


def _gpu_samples(profile, patience):
    if not has_gpu(profile):
        return None
    return _after_patience(profile["system"], patience)


NO_GPU = "the job saw no GPU"


def low_gpu_utilization(profile, threshold_p95=70, threshold_p5=10, window=500, patience=1000):
    """Triggers when GPU utilisation's p95 is below threshold_p95 (the GPU idles), or when it swings:
    p95 above threshold_p95 while p5 is below threshold_p5, within a window of samples.

    Versus SageMaker: the same test; not_applicable on a job that saw no GPU."""
    samples = _gpu_samples(profile, patience)
    if samples is None:
        return _not_applicable(NO_GPU)
    triggered, windows = [], []
    for start in range(0, len(samples), window):
        values = samples["gpu_utilization"].iloc[start : start + window]
        p95, p5 = _percentile(values, 95), _percentile(values, 5)
        windows.append({"first_sample": start, "p95": p95, "p5": p5})
        if p95 < threshold_p95 or (p95 > threshold_p95 and p5 < threshold_p5):
            triggered.append(start)
    return _result(triggered, {"windows": windows[:50], "samples": len(samples)})


def batch_size(
    profile, cpu_threshold_p95=70, gpu_threshold_p95=70, gpu_memory_threshold_p95=70, patience=1000, window=500
):
    """Triggers when CPU, GPU and GPU memory are all under-used (p95 below their thresholds):
    a bigger batch (or a smaller instance) would use the hardware.

    Versus SageMaker: the same test; not_applicable on a job that saw no GPU."""
    samples = _gpu_samples(profile, patience)
    if samples is None:
        return _not_applicable(NO_GPU)
    triggered, windows = [], []
    for start in range(0, len(samples), window):
        part = samples.iloc[start : start + window]
        p95 = {
            "cpu": _percentile(part["cpu_total"], 95),
            "gpu": _percentile(part["gpu_utilization"], 95),
            "gpu_memory": _percentile(part["gpu_memory_percent"], 95),
        }
        windows.append({"first_sample": start, **p95})
        if (
            p95["cpu"] < cpu_threshold_p95
            and p95["gpu"] < gpu_threshold_p95
            and p95["gpu_memory"] < gpu_memory_threshold_p95
        ):
            triggered.append(start)
    return _result(triggered, {"windows": windows[:50], "batch_size": profile["job"].get("batch_size")})


def _starved_gpu(profile, patience, threshold, busy_column, busy_threshold, gpu_threshold):
    """Samples where `busy_column` is above busy_threshold while the GPU is below gpu_threshold;
    triggered when they are more than threshold % of all samples."""
    samples = _gpu_samples(profile, patience)
    if samples is None:
        return _not_applicable(NO_GPU)
    starved = (samples[busy_column] > busy_threshold) & (samples["gpu_utilization"] < gpu_threshold)
    share = 100 * float(starved.mean())
    return _result(
        list(np.flatnonzero(starved.to_numpy())) if share > threshold else [],
        {"bottleneck_percent_of_samples": round(share, 2), "samples": len(samples)},
    )


def cpu_bottleneck(profile, threshold=50, gpu_threshold=10, cpu_threshold=90, patience=1000):
    """Triggers when, in more than threshold % of samples, the CPU is above cpu_threshold while the
    GPU is below gpu_threshold: the GPU waits for the CPU.

    Versus SageMaker: the same test; not_applicable on a job that saw no GPU (the CPU then does the
    compute, and a busy CPU is what it should be)."""
    return _starved_gpu(profile, patience, threshold, "cpu_total", cpu_threshold, gpu_threshold)


def io_bottleneck(profile, threshold=50, io_threshold=50, gpu_threshold=10, patience=1000):
    """Triggers when, in more than threshold % of samples, I/O wait is above io_threshold while the GPU
    is below gpu_threshold: the GPU waits for storage.

    Versus SageMaker: the same test; not_applicable on a job that saw no GPU."""
    return _starved_gpu(profile, patience, threshold, "iowait_percent", io_threshold, gpu_threshold)


def dataloader(profile, max_wait_percent=10.0, min_threshold=70, max_threshold=200):
    """Triggers when training steps spend more than max_wait_percent of their time waiting for the
    data loader (each epoch's first step, the loader's start-up, left out). The workers' share of the
    CPU cores (SageMaker's min_threshold–max_threshold %) is reported, and worded into the advice.

    Versus SageMaker: SageMaker triggers on the number of workers against the cores alone, so a job
    whose loader keeps up with one worker (a small model, a CPU doing the compute itself) is flagged;
    this rule judges the wait it measured, and names the worker count as the likely cause.
    """
    job = profile["job"]
    if "num_workers" not in job or not job.get("cpu_count"):
        return _result([], {"reason": "the job did not record its loader settings"}, verdict="no_data")
    if job.get("inputs") == contract.INPUTS_FEATURES:  # a tensor in memory: there is no loader to size
        return _not_applicable("the job trained on cached backbone features, which need no loader workers")
    steps = profile["steps"]
    steps = steps[(steps["phase"] == "train") & (steps["step"] > 0)] if len(steps) else steps
    if steps.empty or not steps["duration_s"].sum():
        return _result([], {"reason": "no training steps recorded"}, verdict="no_data")
    share = 100 * job["num_workers"] / job["cpu_count"]
    waiting = 100 * float(steps["data_wait_s"].sum() / steps["duration_s"].sum())
    workers = "too few" if share < min_threshold else ("too many" if share > max_threshold else "within range")
    row = steps["data_wait_s"].idxmax()
    longest = steps.loc[row]
    return _result(
        [int(row)] if waiting > max_wait_percent else [],  # a row, as StepOutlier's
        {
            "data_wait_percent_of_step_time": round(waiting, 2),
            "num_workers": job["num_workers"],
            "longest_wait": {
                "epoch": int(longest["epoch"]),
                "step": int(longest["step"]),
                "seconds": round(float(longest["data_wait_s"]), 3),
            },
            "cpu_cores": job["cpu_count"],
            "workers_percent_of_cores": round(share, 1),
            "workers": workers,
        },
    )


def gpu_memory_increase(profile, increase=5, patience=1000, window=10):
    """Triggers when GPU memory use (moving average over window samples) rises by more than
    `increase` percentage points above where it settled.

    Versus SageMaker: the same test; not_applicable on a job that saw no GPU."""
    samples = _gpu_samples(profile, patience)
    if samples is None:
        return _not_applicable(NO_GPU)
    average = samples["gpu_memory_percent"].rolling(window, min_periods=1).mean().to_numpy()
    baseline = average[min(window, len(average) - 1)]
    rise = average - baseline
    return _result(
        list(np.flatnonzero(rise > increase)[:1]),
        {"baseline_percent": round(float(baseline), 2), "largest_rise_points": round(float(rise.max()), 2)},
    )


def step_outlier(profile, stddev=3, mode="train", n_outliers=10):
    """Triggers when more than n_outliers steps take longer than mean + stddev × std of the step
    durations (of the `mode` phase).

    Versus SageMaker: the first step of every epoch (the loader's start-up, which every epoch has)
    is left out; SageMaker counts it, so a many-epoch job triggers on its epoch starts."""
    steps = profile["steps"]
    steps = steps[(steps["phase"] == mode) & (steps["step"] > 0)] if mode else steps[steps["step"] > 0]
    if len(steps) < 3:
        return _result([], {"steps": len(steps)}, verdict="no_data")
    durations = steps["duration_s"]
    limit = float(durations.mean() + stddev * durations.std())
    outliers = steps[durations > limit]
    return _result(
        list(outliers.index) if len(outliers) > n_outliers else [],
        {
            "outliers": len(outliers),
            "limit_s": round(limit, 4),
            "mean_s": round(float(durations.mean()), 4),
            "max_s": round(float(durations.max()), 4),
            "steps": len(steps),
        },
    )


def load_balancing(profile, threshold=0.5):
    """Triggers when, in a job of several processes (DDP), one rank's own time per training step (its wait for
    data plus its forward pass, the parts no other rank's speed is in) has a median more than `threshold` (0.5:
    50 %) above the fastest rank's: every step of the others waits for it in the gradient all-reduce.

    Versus SageMaker: its LoadBalancing compares the GPUs' utilisation; this compares the ranks' own step
    times, so it also sees a slow loader, CPU process or host. `not_applicable` on one process."""
    ranks = profile.get("rank_steps") or {}
    if len(ranks) < 2:
        return _not_applicable("the job ran on one process")
    medians = {}
    for rank, steps in sorted(ranks.items()):
        training = steps[(steps["phase"] == "train") & (steps["step"] > 0)]
        if len(training):  # backward and the optimiser step hold the all-reduce: a fast rank's wait is in them
            own = training["data_wait_s"] + training["forward_s"].fillna(training["compute_s"])
            medians[rank] = float(own.median())
    if len(medians) < 2 or min(medians.values()) <= 0:
        return _result([], {"ranks": len(ranks)}, verdict="no_data")
    fastest = min(medians.values())
    slow = {rank: round(m / fastest - 1, 3) for rank, m in medians.items() if m / fastest - 1 > threshold}
    return _result(
        sorted(slow),
        {
            "median_own_step_s": {str(r): round(m, 5) for r, m in medians.items()},
            "slower_than_fastest": {str(r): v for r, v in slow.items()},
        },
    )


def max_initialization_time(profile, threshold=20):
    """Triggers when start-up (process start → first step) takes longer than threshold minutes.

    Versus SageMaker: measured from the training process's start, not the instance's (this
    machine has no instance start to see)."""
    steps, job = profile["steps"], profile["job"]
    if steps.empty or "process_started" not in job:
        return _result([], {}, verdict="no_data")
    minutes = (float(steps["start"].min()) - job["process_started"]) / 60
    return _result([0] if minutes > threshold else [], {"initialization_minutes": round(minutes, 3)})


def overall_system_usage(profile):
    """Percentiles of CPU, memory and GPU use over the whole job; informational, it never triggers.

    Versus SageMaker: the same summary, from samples of this job's own machine (or container)."""
    system = profile["system"]
    if system.empty:
        return _result([], {}, verdict="no_data")
    columns = [
        c
        for c in (
            "cpu_total",
            "cpu_max_core",
            "memory_percent",
            "iowait_percent",
            "gpu_utilization",
            "gpu_memory_percent",
        )
        if c in system
    ]
    stats = {c: {q: _percentile(system[c].dropna(), int(q[1:])) for q in ("p50", "p95", "p99")} for c in columns}
    return _result([], {"percentiles": stats, "samples": len(system)})


RULES = {
    "LowGPUUtilization": low_gpu_utilization,
    "BatchSize": batch_size,
    "CPUBottleneck": cpu_bottleneck,
    "IOBottleneck": io_bottleneck,
    "Dataloader": dataloader,
    "GPUMemoryIncrease": gpu_memory_increase,
    "StepOutlier": step_outlier,
    "LoadBalancing": load_balancing,
    "MaxInitializationTime": max_initialization_time,
    "OverallSystemUsage": overall_system_usage,
}

RECOMMENDATIONS = {
    "LowGPUUtilization": "Raise the batch size, use more data loader workers, or a smaller (cheaper) GPU instance.",
    "BatchSize": "Raise the batch size, or move to a smaller instance.",
    "CPUBottleneck": "More data loader workers, lighter preprocessing, or augmentation on the GPU.",
    "IOBottleneck": "Prefetch and cache the data locally (File or FastFile mode on SageMaker), or use faster storage.",
    "Dataloader": "Set num_workers close to the number of CPU cores per GPU (num_workers: -1 does), lighten the "
    "preprocessing, or use the feature cache with a frozen backbone.",
    "GPUMemoryIncrease": "Look for tensors kept across steps (e.g. summing losses without .item()).",
    "StepOutlier": "Look at what the slow steps do: data loading stalls, checkpoints, other processes on the machine.",
    "LoadBalancing": "A slow rank holds up every step of the others: look at its GPU or host (other processes, "
    "thermal throttling), and that each process has its own GPU and share of the CPU cores.",
    "MaxInitializationTime": "Shorten start-up: smaller downloads at start, FastFile mode, a smaller container.",
    "OverallSystemUsage": "",
}
