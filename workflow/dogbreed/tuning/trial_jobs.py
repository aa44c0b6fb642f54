"""The local tuner's trials as training jobs: each Optuna trial (optuna_study.py) runs one job of the backend, its
objective read from the job's epoch lines with the spec's regex; trials running at once share this machine's GPUs
or CPU threads."""

import math
import os
import queue
from pathlib import Path

from dogbreed.backends.errors import JobFailed, JobInterrupted
from dogbreed.runtime import naming, run_guard
from dogbreed.training import jobspec, metrics
from dogbreed.tuning import optuna_study
from dogbreed.tuning.optuna_study import StudyStopped, TrialFailed


def tune(
    backend, spec, fixed_hyperparameters, channels, jobs_dir, source_dir, tuning_name, study_db, parallel, tracking
):
    """Run the spec as an Optuna study of this backend's training jobs; returns (trials table rows, best trial)."""
    run_trial = trial_runner(
        backend,
        spec,
        fixed_hyperparameters,
        channels,
        jobs_dir,
        source_dir,
        tuning_name,
        trial_resources(parallel),
        tracking,
    )
    study = optuna_study.run_study(spec, run_trial, study_db, tuning_name, parallel, spec["seed"], tracking=tracking)
    return optuna_study.trials_table(study, spec), optuna_study.best_trial(study, spec)


def _visible_gpus() -> list:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES' entries when it is set, else all of them."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def trial_resources(parallel: int, gpus=None, cpus=None) -> list:
    """One environment per trial running at once on this machine. With GPUs, each trial its own
    (CUDA_VISIBLE_DEVICES; more trials than GPUs share them in turn); without, each an equal share of
    the CPU threads (OMP_NUM_THREADS), so parallel trials do not fight over the cores. SM_NUM_CPUS
    sizes each trial's DataLoader workers to its share."""
    if parallel <= 1:
        return [{}]
    gpus = _visible_gpus() if gpus is None else gpus
    # the threads Snakemake gave the tune rule (it sets OMP_NUM_THREADS to them), else this machine's
    cpus = cpus or int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))
    share = str(max(1, cpus // parallel))
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)], "SM_NUM_CPUS": share} for i in range(parallel)]
    return [{"OMP_NUM_THREADS": share, "MKL_NUM_THREADS": share, "SM_NUM_CPUS": share} for _ in range(parallel)]


def trial_runner(
    backend, spec, fixed_hyperparameters, channels, jobs_dir, source_dir, study_name, resources=({},), tracking=None
):
    """run_trial for run_study: one training job per trial, its objective read with the spec's regex.
    resources: one environment per trial slot (trial_resources); a trial holds one while it runs.
    tracking (tracking.TrialTracking): each trial an MLflow run, which its job logs its epochs into."""
    regex, metric = spec["objective"]["regex"], spec["objective"]["metric"]
    slots = queue.Queue()
    for environment in resources:
        slots.put(environment)

    def run_trial(trial, hyperparameters, report):
        # a retried trial keeps the interrupted one's job name, and so resumes from its checkpoint
        job_name = trial.user_attrs.get("job_name") or naming.trial_name(study_name, trial.number)
        trial.set_user_attr("job_name", job_name)
        trial.set_user_attr("log", str(Path(jobs_dir) / job_name / "log.txt"))  # where both local backends write it
        values, diverged = [], []

        def on_line(line):
            if (epoch := metrics.parse_epoch_line(line)) is None:
                return False
            if tracking is not None:
                tracking.epoch(trial, epoch)
            value = metrics.read_metric(regex, line)
            if value is None:  # a regex for numbers misses "nan": the training diverged, the regex is fine
                diverged.extend([epoch[metric]] if not math.isfinite(epoch.get(metric, 0.0)) else [])
                return False
            values.append(value)
            return report(len(values), value)

        if run_guard.stopping.is_set():  # the study is stopping: no new job starts
            raise JobInterrupted(f"{job_name} not started")
        whole = jobspec.merge(fixed_hyperparameters, hyperparameters)  # the job's flags: the study's, then the trial's
        logging_into_run = tracking.start(trial, job_name, whole) if tracking is not None else {}
        environment = slots.get()
        try:
            result = backend.train(
                job_name,
                whole,
                channels,
                jobs_dir,
                source_dir,
                on_line=on_line,
                echo=False,
                keep_model=False,
                environment={**environment, **logging_into_run},
            )
        except JobFailed as error:
            raise failure_of(trial, error) from None
        finally:
            slots.put(environment)
        if tracking is not None:
            tracking.job_done(trial, result["metrics"])
        trial.set_user_attr("log", result["log"])
        trial.set_user_attr("seconds", result["seconds"])
        if result["status"] == "Stopped":
            return None
        if not values and diverged:
            raise TrialFailed(f"objective {metric} is {diverged[-1]} (the training diverged; log: {result['log']})")
        if not values:  # the same for every trial: the regex or the training script is wrong
            raise StudyStopped(
                f"{job_name} finished without a line matching the objective regex {regex!r} "
                f"(tuning.objective.regex); see {result['log']}"
            )
        return values[-1]  # SageMaker takes the last value a job emitted

    return run_trial


def failure_of(trial, error) -> Exception:
    """A failed trial's job, as the error the study acts on: StudyStopped when the job could not set up
    (no hyperparameters would help: missing weights, bad data, a broken environment), else TrialFailed."""
    log = Path(trial.user_attrs["log"])
    text = log.read_text(errors="replace") if log.is_file() else str(error)
    if (reason := metrics.setup_failure(text)) is not None:
        return StudyStopped(
            f"trial {trial.number} failed before its first step, as any trial would: {reason} "
            f"(log: {log}); the study stopped there, fix that and run again"
        )
    last_line = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), str(error))
    return TrialFailed(f"failed: {last_line[:300]} (log: {log})")
