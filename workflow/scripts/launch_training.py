import json
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path

import job_contract as contract
import pandas as pd
from dogbreed.backends.registry import rule_backend
from dogbreed.data import store
from dogbreed.runtime import run_guard, tracking
from dogbreed.runtime.rule_runner import run_rule
from dogbreed.training import jobspec, metrics
from tqdm import tqdm


def main(smk):
    best = json.loads(Path(smk.input.best).read_text())
    job = jobspec.job_spec(
        smk.params.job,
        *jobspec.read_channels(smk.input.channels),
        smk.input.training_code,
        tuned=best["hyperparameters"],
    )
    backend = rule_backend(smk)
    backend.prepare_jobs()  # the local backend's job launcher, started if need be, imports torch meanwhile
    # A local job needs nothing of MLflow to start (this rule reads its lines and logs them): MLflow's set-up, its
    # import and store (seconds), runs beside the job's first seconds. A container's or SageMaker's job may log into
    # its run itself, and costs money; a job that resumes from a checkpoint must not be stopped for the store: they
    # start once the store has answered.
    tracking_ready = set_up_aside(smk, best, job)
    resuming = any((Path(smk.params.jobs_dir) / job.name / "checkpoints").glob("*"))
    if not tracking.live_logging(smk.params.backend) or resuming:
        tracking_ready.result()  # TrackingError: the rule's error, before any job runs
    try:
        result = run_job(smk, backend, job, tracking_ready)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt) and tracking_ready.done() and tracking_ready.exception():
            raise tracking_ready.exception() from None  # the job was stopped for the store: its error is the rule's
        if isinstance(error, Exception):
            tracker, run_id, _ = _set_up(tracking_ready)
            if run_id is not None:
                with tracking.best_effort("the failed training's status"):
                    tracker.end(run_id, "Failed", tags={tracking.TAG + "failure": str(error)[:5000]})
        raise
    # a job shorter than a set-up that then failed is not kept either: the store's error is the rule's, and the
    # rerun trains and tracks it
    tracker, run_id, job_logs = tracking_ready.result()
    # a local copy of the artifact, wherever the job ran
    shutil.copyfile(store.local_path(result["model_uri"]), smk.output.model)
    shutil.copytree(Path(result["output_dir"]) / "data", smk.output.output)  # debug tensors, profiler files
    epochs = result.pop("metrics")
    kept = Path(smk.output.output) / contract.KEPT_EPOCH_FILE  # the epoch whose weights the model holds
    result["kept_epoch"] = json.loads(kept.read_text()) if kept.is_file() else None
    pd.DataFrame(epochs).to_csv(smk.output.metrics, index=False)
    result["tuned_from"] = {"trial": best["trial"], "job_name": best["job_name"], "study": best.get("study")}
    if run_id is not None:
        result["tracking"] = {"run_id": run_id, **tracker.where()}
        with tracking.best_effort("the final training's epochs, model and status"):
            if (filled := tracker.fill_in(run_id, epochs)) and job_logs:
                print(
                    f"mlflow: the job did not log {filled} epoch(s) itself (see its log): logged from the workflow after it"
                )
            tracker.end(run_id, "Completed", files=[smk.output.model, smk.output.metrics])
    Path(smk.output.model_json).write_text(json.dumps(result, indent=2))
    return f"trained {job.name} in {result['seconds']} s (its log: {result['log']})"


def start_tracking(smk, best, job) -> tuple:
    """(tracker, the final training's MLflow run, whether the job logs into it itself); (None, None, False) with
    tracking off. The run goes under the workflow run its tuning made, when that is in this store."""
    tracker = tracking.tracker(smk.config)
    if tracker is None:
        return None, None, False
    tuned = best.get("tracking") or {}
    workflow_run = (
        tuned["workflow_run_id"]
        if tuned.get("uri") == tracker.where()["uri"]
        else tracker.workflow_run(Path(smk.output.model).parents[1], best.get("study") or job.name, smk.params.backend)
    )
    run_id = tracker.job_run(
        job.name, workflow_run, "final training", job.hyperparameters, tags={"tuned_from": best["job_name"]}
    )
    job_logs = tracking.job_logs_itself(tracker.uri, smk.params.backend)
    print(
        f"mlflow: the final training is {tracker.run_link(run_id)}"
        + (
            ""
            if job_logs or tracking.live_logging(smk.params.backend)
            else f"; {smk.params.backend} jobs cannot reach it, so its metrics are logged from the workflow after the job"
        )
    )
    return tracker, run_id, job_logs


def set_up_aside(smk, best, job) -> Future:
    """start_tracking in a thread of its own (a daemon: a rule that is stopped does not wait for MLflow): its Future.
    A store that cannot be used stops the rule's job as Ctrl-C would (run_guard.stopping), its checkpoint kept."""
    ready = Future()

    def set_up():
        try:
            ready.set_result(start_tracking(smk, best, job))
        except BaseException as error:
            ready.set_exception(error)
            run_guard.stopping.set()

    threading.Thread(target=set_up, name="mlflow-set-up", daemon=True).start()
    return ready


def _job_environment(tracking_ready):
    """The variables that let a job log into its run itself (a container's or SageMaker's, whose set-up is done)."""
    if not tracking_ready.done():  # a local job: never logs itself
        return None
    tracker, run_id, job_logs = tracking_ready.result()
    return tracker.job_environment(run_id) if job_logs else None


def _set_up(tracking_ready) -> tuple:
    """start_tracking's (tracker, run id, job logs), or (None, None, False) where it failed."""
    try:
        return tracking_ready.result()
    except Exception:
        return None, None, False


def run_job(smk, backend, job, tracking_ready) -> dict:
    """The training job on the configured backend, an epoch bar on the terminal, a local job's each epoch into its
    MLflow run as its line is read (tracking.live_logging), those read before MLflow was set up with the next
    line after (the rest, after the job: fill_in). Local: the job's own few lines above the
    bar (tqdm.write keeps them apart), the rest only in its log; the SDK's backends stream the job's output
    themselves."""
    echoed = smk.params.backend != "local"
    epochs = int(job.hyperparameters.get("epochs", 0)) or None
    live = tracking.live_logging(smk.params.backend)
    unlogged = []  # a local job's epochs read before MLflow was set up: logged as soon as it is
    with tqdm(total=epochs, desc=f"train {job.name}", unit="epoch") as progress:

        def show(line):
            if not echoed and metrics.worth_showing(line):
                progress.write(line.rstrip())
            if (epoch := metrics.parse_epoch_line(line)) is not None:
                progress.update(1)
                if live:
                    unlogged.append(epoch)
            if unlogged and tracking_ready.done() and (run := _set_up(tracking_ready))[0] is not None:
                tracker, run_id, _ = run
                while unlogged:
                    tracker.live_epoch(run_id, unlogged.pop(0))
            return False  # never stop the job

        return backend.train(
            job.name,
            job.hyperparameters,
            job.channels,
            smk.params.jobs_dir,
            smk.params.source_dir,
            on_line=show,
            echo=False,
            processes=job.processes,
            instances=job.instances,
            environment=_job_environment(tracking_ready),
        )


run_rule(main, snakemake)
