"""MLflow tracking (docs/architecture.md §8): every tuning trial and the final training is an MLflow run, and
one workflow run (a results folder's tuning study) holds them as its children, so `mlflow ui` compares trials
within a run and runs across results folders (one store: tracking.uri).

Where each thing is logged:
- the per-epoch metrics (train.py's metric line: train_loss, valid_loss, valid_accuracy, ...) as each epoch ends:
  a local job's by the rule that runs it, which reads the job's lines as they come (live_epoch), so no job
  imports MLflow or opens its store (seconds a job); a container's or SageMaker's job by the job itself where it
  can reach a server (the store's URI and the run's id in its environment; scripts/instrumentation.py's
  EpochLogger, when its image has mlflow). What a job did not log (its image lacks mlflow, it cannot reach the
  store) is filled in from here after it ends, from the metrics it recorded, and the rule says so;
- the runs themselves, their params (the hyperparameters' own names: lr, batch_size, ...), status and tags, by
  the tune and train rules; the final run's artifacts: the model by train, the rule verdicts, the evaluation and
  the profiler report by one rule after them (track_results: MLflow's import and store once, not in each rule
  that makes one), the run report by report.

The experiment carries MLflow's `mlflow.experimentKind` = `custom_model_development` (a model-training experiment, not
a GenAI one), set when it is made or later where it lacks it. A final training is compared with the latest earlier
one on the same data (earlier_final_run).

Settings (config `tracking:`) are read from the config itself, not from rule params: where runs are recorded is
not an input of any result, so changing it reruns nothing (like confirm_cloud).

Failures: a store that cannot be used when a rule starts is a one-line error (TrackingError); once a job has
run, tracking is a record of it, never a reason to lose it: what cannot be logged then is said in one line
(best_effort) and the rule goes on.
"""

import contextlib
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from dogbreed.runtime import naming
from dogbreed.runtime.rule_runner import say

# MLflow asks a server up to 7 times with backoff (minutes for a server that is down): fewer, sooner; and no
# usage telemetry from this workflow or its jobs
QUIET_AND_PROMPT = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}
EPOCH_METRICS = ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy", "epoch_seconds")
# SageMaker's job status names (the trials table's) → MLflow's run status
RUN_STATUS = {"Completed": "FINISHED", "Stopped": "KILLED", "Failed": "FAILED"}
TAG = "dogbreed."  # the workflow's own tags: role, workflow, job_name, trial, status
# MLflow's mark of a model-training experiment (its values: custom_model_development, genai_development), which MLflow
# 3's UI reads to open an experiment on its runs rather than its GenAI view (traces, "Detect issues") where its
# GenAI / Model training switch is off; in 3.17 the switch decides (make mlflow-ui's link sets it: docs/tracking.md)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# the evaluation's numbers the final run gets (evaluate logs them; a comparison with an earlier run shows them):
# their MLflow names, and where each is in evaluation/metrics.json
EVALUATION_METRICS = {
    "test_accuracy": ("accuracy",),
    "test_top5_accuracy": ("top5_accuracy",),
    "latency_p50_ms": ("latency_ms", "p50"),
    "latency_p99_ms": ("latency_ms", "p99"),
    "cold_start_ms": ("cold_start_ms",),
}


def evaluation_metrics(evaluation: dict) -> dict:
    """evaluation/metrics.json's numbers under their MLflow names (EVALUATION_METRICS)."""
    found = {}
    for name, keys in EVALUATION_METRICS.items():
        value = evaluation
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)):
            found[name] = value
    return found


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names tracking.uri and the way out."""


def resolve_uri(uri: str) -> str:
    """A relative SQLite path made absolute (against the working directory, the checkout's, where Snakemake
    runs), so the jobs, which run in folders of their own, write into the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def shown(uri: str) -> str:
    """The URI as it may be printed or recorded: without the user name and password a database URL may carry
    (a server's credentials go in MLflow's variables; config.py refuses them in an http(s) URI)."""
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return uri


@contextlib.contextmanager
def best_effort(what: str):
    """Tracking after a job ran: a failure is said in one line, and the rule goes on with its outputs."""
    try:
        yield
    except Exception as error:
        say(f"mlflow: {what} was not recorded ({_first_line(error)}); the results are unaffected")


def live_logging(backend: str) -> bool:
    """Whether the rule logs each epoch of its job as the job prints it: a local job's lines come as they are
    printed; a container's or SageMaker job's epochs reach the rule after the job (logged then, by fill_in)."""
    return backend == "local"


def job_logs_itself(uri: str, backend: str) -> bool:
    """Whether a job of this backend logs its epochs into its run itself (it gets the URI and its run's id): a
    container's or SageMaker's job that can reach a server, not this machine's SQLite file or loopback. (It logs
    only with mlflow in its image, which the stand-ins and the DLCs lack: the workflow then logs its epochs after
    it.) Never a local job: the rule reads its lines as they come and logs each epoch (live_epoch), which spares
    the job MLflow's import and store opening, seconds that would be most of a small job."""
    if backend == "local":
        return False
    host = urlsplit(uri).hostname or ""
    return uri.startswith(("https://", "http://", "arn:")) and host not in ("127.0.0.1", "localhost", "::1")


def tracker(config: dict):
    """The config's Tracker, or None when tracking.enabled is false."""
    settings = config.get("tracking") or {}
    if not settings.get("enabled", True):
        return None
    return Tracker(settings.get("uri", "sqlite:///mlflow.db"), settings.get("experiment", "dog-breed"))


class Tracker:
    def __init__(self, uri: str, experiment: str):
        self.uri, self.experiment = resolve_uri(uri), experiment
        self._client = self._experiment_id = None
        self._not_live = set()  # runs whose live logging failed once: fill_in logs their epochs after the job

    @property
    def client(self):
        """MlflowClient on the store, the experiment there made if new (its artifacts beside a SQLite file)."""
        if self._client is None:
            for key, value in QUIET_AND_PROMPT.items():
                os.environ.setdefault(key, value)
            from mlflow.tracking import MlflowClient

            try:
                client = MlflowClient(self.uri)
                found = client.get_experiment_by_name(self.experiment)
                if found is None:
                    try:
                        self._experiment_id = client.create_experiment(
                            self.experiment, artifact_location=self._artifacts(), tags=dict([EXPERIMENT_KIND])
                        )
                    except Exception:  # another run made it first (two runs starting on a new store)
                        if (found := client.get_experiment_by_name(self.experiment)) is None:
                            raise
                if found is not None:
                    self._experiment_id = found.experiment_id
                    if EXPERIMENT_KIND[0] not in found.tags:  # made before the workflow set it, or by someone else
                        with best_effort("the experiment's model-training view (its tag mlflow.experimentKind)"):
                            client.set_experiment_tag(self._experiment_id, *EXPERIMENT_KIND)
            except Exception as error:
                raise TrackingError(
                    f"the MLflow store tracking.uri={shown(self.uri)} cannot be used: "
                    f"{_first_line(error)}; fix tracking.uri, or set tracking.enabled: false"
                ) from None
            self._client = client
        return self._client

    def _artifacts(self):
        """A SQLite store keeps its runs' artifacts in mlartifacts/ beside the file; a server decides for itself."""
        if self.uri.startswith("sqlite:///"):
            return (Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts").as_uri()
        return None

    def _find(self, tags: dict, running_only=False):
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        if running_only:
            query += " and attributes.status = 'RUNNING'"
        runs = self.client.search_runs(
            [self._experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return runs[0].info.run_id if runs else None

    def workflow_run(self, results_dir, study: str, backend: str) -> str:
        """The workflow run of a results folder's study (found again by a rerun, so its trials and final training
        gather under one run), made when there is none yet. The rule's first contact with the store: a store
        that does not answer here is the rule's error (TrackingError), before any job runs."""
        key = naming.stable_hash([str(Path(results_dir).resolve()), study])
        try:
            if (run_id := self._find({TAG + "workflow": key})) is not None:
                return run_id
            tags = {
                TAG + "role": "workflow",
                TAG + "workflow": key,
                TAG + "results_dir": str(Path(results_dir).resolve()),
                TAG + "study": study,
                TAG + "backend": backend,
            }
            return self.client.create_run(
                self._experiment_id, run_name=f"{Path(results_dir).name} {study}", tags=tags
            ).info.run_id
        except TrackingError:
            raise
        except Exception as error:
            raise TrackingError(
                f"the MLflow store tracking.uri={shown(self.uri)} did not answer: {_first_line(error)}; "
                f"fix tracking.uri, or set tracking.enabled: false"
            ) from None

    def job_run(self, job_name: str, parent: str, role: str, params: dict, tags=None) -> str:
        """The run of a training job under its workflow run. A job that runs again under the same name resumes
        from its checkpoint: it goes on in the run it had while that run is unfinished, else a new run begins."""
        from mlflow.entities import Param

        # under this parent only: another results folder with the same settings has the same job names
        run_id = self._find({TAG + "job_name": job_name, "mlflow.parentRunId": parent}, running_only=True)
        if run_id is None:
            run = self.client.create_run(
                self._experiment_id,
                run_name=job_name,
                tags={
                    "mlflow.parentRunId": parent,
                    TAG + "role": role,
                    TAG + "job_name": job_name,
                    **{TAG + k: str(v) for k, v in (tags or {}).items()},
                },
            )
            run_id = run.info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        return run_id

    def job_environment(self, run_id: str) -> dict:
        """What a job needs to log its epochs into its run itself."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_RUN_ID": run_id, **QUIET_AND_PROMPT}

    def log_epochs(self, run_id: str, epochs: list):
        """Epochs (train.py's metric lines, parsed) into the run, each at its epoch's step."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [Metric(k, float(e[k]), now, int(e["epoch"])) for e in epochs for k in EPOCH_METRICS if k in e]
        for start in range(0, len(values), 1000):  # log_batch takes 1000 metrics at most
            self.client.log_batch(run_id, metrics=values[start : start + 1000])

    def fill_in(self, run_id: str, epochs: list) -> int:
        """Log the epochs nobody logged as they ended (the job could not reach the store, or had no mlflow); how many."""
        logged = {m.step for m in self.client.get_metric_history(run_id, "train_loss")}
        missing = [e for e in epochs if int(e["epoch"]) not in logged]
        self.log_epochs(run_id, missing)
        return len(missing)

    def live_epoch(self, run_id: str | None, epoch: dict):
        """An epoch line the rule just read from a local job (live_logging), into the job's run as the epoch ends. A
        store that fails here is said once, and the run's epochs are left to fill_in, after the job."""
        if run_id is None or run_id in self._not_live:
            return
        logged = False
        with best_effort(f"epoch {epoch.get('epoch')}'s metrics (the rest are logged after the job)"):
            self.log_epochs(run_id, [epoch])
            logged = True
        if not logged:
            self._not_live.add(run_id)

    def log(self, run_id: str, metrics=None, tags=None, files=(), artifact_path=None):
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        if metrics or tags:
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
        for path in files:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def end(self, run_id: str, status: str, metrics=None, tags=None, files=()):
        """End a job's run with the job's status (SageMaker's names: Completed, Stopped, Failed)."""
        self.log(run_id, metrics=metrics, tags={TAG + "status": status, **(tags or {})}, files=files)
        self.client.set_terminated(run_id, RUN_STATUS[status])

    def where(self) -> dict:
        """What model.json and best_hyperparameters.json record of the store, beside a run's id."""
        return {"uri": shown(self.uri), "experiment": self.experiment}

    def run_link(self, run_id: str) -> str:
        return f"run {run_id} in {shown(self.uri)} (experiment {self.experiment})"


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__


class TrialTracking:
    """A tuning study's trials as runs under its workflow run (optuna_study.run_study and trial_jobs.trial_runner)."""

    def __init__(self, tracker: Tracker, parent: str, backend: str):
        self.tracker, self.parent = tracker, parent
        self.job_logs, self.live = job_logs_itself(tracker.uri, backend), live_logging(backend)
        if not (self.job_logs or self.live):
            print(
                f"mlflow: {backend} jobs cannot reach {shown(tracker.uri)}: each trial's metrics are logged from "
                f"the workflow after its job",
                flush=True,
            )

    def start(self, trial, job_name: str, hyperparameters: dict) -> dict:
        """The trial's run (its params: the job's hyperparameters, whole); the environment that lets its job log into it."""
        with best_effort(f"trial {trial.number}'s run"):
            run_id = self.tracker.job_run(job_name, self.parent, "trial", hyperparameters, tags={"trial": trial.number})
            trial.set_user_attr("mlflow_run_id", run_id)
            return self.tracker.job_environment(run_id) if self.job_logs else {}
        return {}

    def epoch(self, trial, epoch: dict):
        """One epoch of the trial's job, as its line is read."""
        if self.live:
            self.tracker.live_epoch(trial.user_attrs.get("mlflow_run_id"), epoch)

    def job_done(self, trial, epochs: list):
        if (run_id := trial.user_attrs.get("mlflow_run_id")) is None:
            return
        with best_effort(f"trial {trial.number}'s epochs"):
            filled = self.tracker.fill_in(run_id, epochs)
            if filled and self.job_logs:
                print(
                    f"mlflow: trial {trial.number}'s job did not log {filled} epoch(s) itself (see its log): "
                    f"logged from the workflow after it",
                    flush=True,
                )

    def log_finished(self, rows: list, spec: dict, hyperparameters: list):
        """Trials another tuner ran (SageMaker's), from its trials table (and each one's hyperparameters, whole): a
        run each, once, with the final objective (their per-epoch metrics are in CloudWatch)."""
        metric, new = spec["objective"]["metric"], 0
        for row, params in zip(rows, hyperparameters):
            if self.tracker._find({TAG + "job_name": row["job_name"], "mlflow.parentRunId": self.parent}) is not None:
                continue
            run_id = self.tracker.job_run(row["job_name"], self.parent, "trial", params, tags={"trial": row["trial"]})
            value = row.get(metric)
            self.tracker.end(
                run_id,
                row["status"] if row["status"] in RUN_STATUS else "Failed",
                metrics={metric: value} if value is not None else None,
            )
            new += 1
        print(
            f"mlflow: {new} trial(s) of the tuning job logged from the workflow after it "
            f"({len(rows) - new} were logged before)",
            flush=True,
        )

    def end(self, trial, status: str, failure=None):
        if (run_id := trial.user_attrs.get("mlflow_run_id")) is not None:
            with best_effort(f"trial {trial.number}'s status"):
                self.tracker.end(run_id, status, tags={TAG + "failure": failure[:5000]} if failure else None)


def final_run(config: dict, model: dict):
    """(tracker, run id) of the final training recorded in model.json, or (None, None) with the reason said."""
    recorded = model.get("tracking") or {}
    tracker_ = tracker(config)
    if tracker_ is None:
        return None, None
    if not recorded.get("run_id"):
        print(
            "mlflow: the final training ran with tracking off, so it has no run to log into; "
            "`snakemake --forcerun train` tracks it"
        )
        return None, None
    if recorded.get("uri") != tracker_.where()["uri"]:
        print(
            f"mlflow: the final training's run is in {recorded.get('uri')}, not in tracking.uri={shown(tracker_.uri)}: "
            f"nothing logged (`snakemake --forcerun train` tracks a new one here)"
        )
        return None, None
    return tracker_, recorded["run_id"]


def log_to_final_run(config: dict, model_json, files=(), reports=(), metrics=None, tags=None) -> list:
    """What the rules made, into the final training's run: files at its top (the rule verdicts, the evaluation) with
    the metrics and tags, reports under reports/ (the HTML reports). What was logged (artifact paths, "metrics" for
    metrics and tags alone); nothing when tracking is off, the training was not tracked or is tracked elsewhere
    (said), or the store fails (said, and the rule goes on, with what was logged before the failure)."""
    import json

    tracker_, run_id = final_run(config, json.loads(Path(model_json).read_text()))
    files, reports = [f for f in files if Path(f).exists()], [f for f in reports if Path(f).exists()]
    logged = []
    if tracker_ is None:
        return logged
    with best_effort(", ".join(Path(f).name for f in (*files, *reports)) or "metrics"):
        tracker_.log(run_id, metrics=metrics, tags=tags, files=files)
        logged += [Path(f).name for f in files] or (["metrics"] if metrics or tags else [])
        tracker_.log(run_id, files=reports, artifact_path="reports")
        logged += [f"reports/{Path(f).name}" for f in reports]
    if logged:
        print(f"mlflow: logged {', '.join(logged)} into {tracker_.run_link(run_id)}")
    return logged


def earlier_final_run(config: dict, model: dict) -> dict | None:
    """The final training to compare this one with (model: training/model.json): the most recent final-training
    run that started before it in the same store and experiment, on the same data (its `expect_data` param, the
    uploaded channels' digests), finished, with a `test_accuracy`; under "this", this run as the store has it (its
    params and metrics are compared with the earlier run's: the same names, the same formatting, on every backend). None when there is none, tracking is off, this
    training was not tracked (or in another store) or the store does not answer: quiet, never raising, as what uses
    it goes on without it."""
    recorded = model.get("tracking") or {}
    try:
        tracker_ = tracker(config)
        if tracker_ is None or not recorded.get("run_id") or recorded.get("uri") != tracker_.where()["uri"]:
            return None
        this = tracker_.client.get_run(recorded["run_id"])
        if (data := this.data.params.get("expect_data")) is None:
            return None
        query = (
            f"tags.`{TAG}role` = 'final training' and attributes.status = 'FINISHED'"
            f" and attributes.start_time < {this.info.start_time} and metrics.test_accuracy >= 0"
        )
        if "'" not in data:  # narrowed in the store; compared here in any case
            query += f" and params.expect_data = '{data}'"
        token = None
        for _page in range(10):
            runs = tracker_.client.search_runs(
                [this.info.experiment_id],
                query,
                max_results=100,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            for run in runs:
                if run.data.params.get("expect_data") == data and "test_accuracy" in run.data.metrics:
                    return {**_compared(tracker_, run), "this": _compared(tracker_, this)}
            if not (token := runs.token):
                return None
    except Exception:
        return None
    return None


def _compared(tracker_: Tracker, run) -> dict:
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "started": started.isoformat(timespec="seconds"),
        "link": tracker_.run_link(run.info.run_id),
        "metrics": {name: run.data.metrics[name] for name in EVALUATION_METRICS if name in run.data.metrics},
        "hyperparameters": {k: v for k, v in sorted(run.data.params.items()) if k != "expect_data"},
    }
