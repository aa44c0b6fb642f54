"""MLflow tracking (runtime/tracking.py, scripts/instrumentation.py's EpochLogger) against a real SQLite
store, read back through MLflow's own client. The workflow's runs end to end: conftest.assert_tracked."""

import json
import time
from datetime import UTC, datetime

import pytest
import yaml
from conftest import REPO, snakemake, workflow_with_test_config
from dogbreed.runtime import tracking
from dogbreed.runtime.config import ConfigError, check_config
from instrumentation import EpochLogger
from mlflow.tracking import MlflowClient

EPOCHS = [
    {
        "epoch": e,
        "train_loss": 1.0 / e,
        "train_accuracy": 0.2 * e,
        "valid_loss": 1.5 / e,
        "valid_accuracy": 0.1 * e,
        "epoch_seconds": 2.0,
    }
    for e in (1, 2, 3)
]


@pytest.fixture
def tracker(tmp_path):
    return tracking.Tracker(f"sqlite:///{tmp_path}/mlflow.db", "dog-breed")


def history(tracker, run_id, name="valid_accuracy"):
    return sorted((m.step, m.value) for m in tracker.client.get_metric_history(run_id, name))


def test_a_relative_sqlite_store_is_made_absolute_and_credentials_are_never_shown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.resolve_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert (
        tracking.shown("postgresql://me:secret@db.example.com:5432/mlflow") == "postgresql://db.example.com:5432/mlflow"
    )
    assert tracking.shown("https://me:secret@[::1]:8443/x") == "https://[::1]:8443/x"
    assert tracking.shown("sqlite:////abs/m.db") == "sqlite:////abs/m.db"


def test_who_logs_a_jobs_epochs():
    # a local job never: its rule reads its lines as they come and logs each epoch (no MLflow in the job)
    assert not tracking.job_logs_itself("sqlite:////abs/m.db", "local")
    assert not tracking.job_logs_itself("https://mlflow.example.com", "local")
    assert not tracking.job_logs_itself("sqlite:////abs/m.db", "local_container")  # not this machine's file
    assert tracking.job_logs_itself("https://mlflow.example.com", "local_container")
    assert not tracking.job_logs_itself("sqlite:////abs/m.db", "sagemaker")
    assert not tracking.job_logs_itself("http://127.0.0.1:5000", "sagemaker")  # this machine, not the cloud's
    assert tracking.job_logs_itself("https://mlflow.example.com", "sagemaker")


def test_tracking_can_be_switched_off_and_the_file_store_is_refused_by_name():
    assert tracking.tracker({"tracking": {"enabled": False}}) is None
    import yaml

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["tracking"]["uri"] = "./mlruns"
    with pytest.raises(ConfigError, match=r"tracking.uri: './mlruns' .*sqlite:///mlflow.db"):
        check_config(config, REPO / "workflow/schemas/config.schema.yaml")
    config["tracking"]["uri"] = "https://me:secret@mlflow.example.com"
    with pytest.raises(ConfigError, match=r"tracking.uri: a server's user name or password .*MLFLOW_TRACKING_TOKEN"):
        check_config(config, REPO / "workflow/schemas/config.schema.yaml")


def test_a_store_that_cannot_be_used_is_one_line_naming_the_key(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    broken = tracking.Tracker(f"sqlite:///{blocked}/mlflow.db", "dog-breed")
    with pytest.raises(
        tracking.TrackingError,
        match=r"tracking.uri=sqlite:///.*a-file/mlflow.db cannot be used: .*tracking.enabled: false",
    ):
        broken.workflow_run(tmp_path / "results", "tune-x", "local")


def test_a_store_that_fails_as_the_final_training_starts_is_the_rules_error_and_keeps_nothing(tiny_dataset, tmp_path):
    """A local job starts beside MLflow's set-up (its import and store, seconds): a store that cannot be used then
    is still the train rule's one-line error, and no model is kept untracked."""
    (tmp_path / "work").mkdir()
    work = workflow_with_test_config(tiny_dataset, tmp_path / "work")
    (work / "config/off.yaml").write_text(yaml.safe_dump({"tracking": {"enabled": False}}))
    snakemake(work, "tune", "--configfile", "config/test.yaml", "config/off.yaml")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    (work / "config/blocked.yaml").write_text(yaml.safe_dump({"tracking": {"uri": f"sqlite:///{blocked}/mlflow.db"}}))
    failed = snakemake(work, "train", "--configfile", "config/test.yaml", "config/blocked.yaml", check=False)
    said = failed.stdout + failed.stderr
    log = (work / "results/logs/train.log").read_text()
    assert failed.returncode != 0 and "error in rule train: the MLflow store tracking.uri=sqlite:///" in said, log[
        -3000:
    ]
    assert "cannot be used" in said and not (work / "results/training/model.tar.gz").exists()
    assert [job.name for job in (work / "results/jobs").iterdir() if job.name.startswith("train-")]  # it had started


def test_runs_group_under_one_workflow_run_and_a_resumed_job_goes_on_in_its_run(tracker, tmp_path):
    parent = tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    assert tracker.workflow_run(tmp_path / "results", "tune-abc", "local") == parent  # a rerun finds it again
    assert tracker.workflow_run(tmp_path / "results-2", "tune-abc", "local") != parent  # another results folder
    run = tracker.job_run("tune-abc-trial-000", parent, "trial", {"lr": 0.01, "batch_size": 16}, tags={"trial": 0})
    assert (
        tracker.job_run("tune-abc-trial-000", parent, "trial", {"lr": 0.01, "batch_size": 16}) == run
    )  # unfinished: resumed
    tracker.end(run, "Stopped")
    again = tracker.job_run("tune-abc-trial-000", parent, "trial", {"lr": 0.01, "batch_size": 16})
    assert again != run  # a finished run is never reopened: the job ran anew
    stored = tracker.client.get_run(run)
    assert stored.info.status == "KILLED" and stored.data.tags["dogbreed.status"] == "Stopped"
    assert stored.data.params == {"lr": "0.01", "batch_size": "16"}
    assert stored.data.tags["mlflow.parentRunId"] == parent and stored.data.tags["dogbreed.trial"] == "0"
    # the artifacts of a SQLite store beside it
    assert stored.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_the_workflow_fills_in_only_the_epochs_the_job_did_not_log(tracker, tmp_path):
    parent = tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    run = tracker.job_run("train-1", parent, "final training", {"lr": 0.01})
    logger = EpochLogger({**tracker.job_environment(run)})
    logger.log(EPOCHS[0])  # the job logged epoch 1 before it lost the store
    assert tracker.fill_in(run, EPOCHS) == 2
    assert history(tracker, run) == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))]
    assert tracker.fill_in(run, EPOCHS) == 0


def test_a_job_without_the_variables_logs_nothing_and_one_that_loses_the_store_says_so_once(tracker, tmp_path, capsys):
    EpochLogger({}).log(EPOCHS[0])  # run by hand: nothing to log into, nothing said
    assert capsys.readouterr().out == ""
    logger = EpochLogger({"MLFLOW_TRACKING_URI": tracker.uri, "MLFLOW_RUN_ID": "0" * 32})  # no such run
    logger.log(EPOCHS[0])
    logger.log(EPOCHS[1])
    out = capsys.readouterr().out
    assert out.count("could not log epoch") == 1 and "the workflow logs the rest after the job" in out


def test_the_final_runs_artifacts_go_where_model_json_says(tracker, tmp_path, capsys, monkeypatch):
    parent = tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    run = tracker.job_run("train-1", parent, "final training", {"lr": 0.01})
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"tracking": {"run_id": run, "uri": tracker.uri, "experiment": "dog-breed"}}))
    verdicts = tmp_path / "rules.json"
    verdicts.write_text("{}")
    config = {"tracking": {"enabled": True, "uri": tracker.uri, "experiment": "dog-breed"}}
    page = tmp_path / "profiler-report.html"
    page.write_text("<html></html>")
    logged = tracking.log_to_final_run(
        config,
        model_json,
        files=[verdicts],
        reports=[page],
        metrics={"rules_triggered": 1},
        tags={"rule.Overfit": "ok"},
    )
    assert logged == ["rules.json", "reports/profiler-report.html"]
    stored = tracker.client.get_run(run)
    assert stored.data.metrics["rules_triggered"] == 1 and stored.data.tags["rule.Overfit"] == "ok"
    assert [a.path for a in tracker.client.list_artifacts(run)] == ["reports", "rules.json"]
    assert [a.path for a in tracker.client.list_artifacts(run, "reports")] == ["reports/profiler-report.html"]
    # the reports cannot be logged: what was logged before is said, and returned, beside the failure
    log_artifact = MlflowClient.log_artifact

    def reports_fail(self, run_id, path, artifact_path=None):
        if artifact_path == "reports":
            raise OSError("disk full")
        return log_artifact(self, run_id, path, artifact_path)

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "log_artifact", reports_fail)
        logged = tracking.log_to_final_run(config, model_json, files=[verdicts], reports=[page])
    out = capsys.readouterr().out
    assert logged == ["rules.json"] and "was not recorded (disk full)" in out and "mlflow: logged rules.json" in out
    # trained with tracking off: said, and nothing else happens
    model_json.write_text(json.dumps({}))
    assert tracking.log_to_final_run(config, model_json, files=[verdicts]) == []
    assert "ran with tracking off" in capsys.readouterr().out
    # tracking.uri changed since: said, and nothing goes into either store
    moved = {"tracking": {"enabled": True, "uri": f"sqlite:///{tmp_path}/other.db", "experiment": "dog-breed"}}
    model_json.write_text(json.dumps({"tracking": {"run_id": run, "uri": tracker.uri, "experiment": "dog-breed"}}))
    tracking.log_to_final_run(moved, model_json, metrics={"test_accuracy": 0.5})
    assert "not in tracking.uri=" in capsys.readouterr().out and not (tmp_path / "other.db").exists()
    assert "test_accuracy" not in MlflowClient(tracker.uri).get_run(run).data.metrics


def test_once_the_job_ran_a_store_that_went_away_is_said_and_loses_nothing(tracker, tmp_path, capsys):
    parent = tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    run = tracker.job_run("train-1", parent, "final training", {"lr": 0.01})
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps({"tracking": {"run_id": run, "uri": tracker.uri, "experiment": "dog-breed"}}))
    (tmp_path / "mlflow.db").write_bytes(b"not a database any more")
    config = {"tracking": {"enabled": True, "uri": tracker.uri, "experiment": "dog-breed"}}
    tracking.log_to_final_run(config, model_json, metrics={"test_accuracy": 0.5})  # does not raise
    assert "mlflow: metrics was not recorded (" in capsys.readouterr().out
    # a job that cannot open the store trains on, and says why once
    logger = EpochLogger({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "MLFLOW_RUN_ID": run})
    logger.log(EPOCHS[0])
    out = capsys.readouterr().out
    assert out.count("the workflow logs this job's metrics after it") + out.count("could not log epoch") == 1


def test_a_running_job_run_is_resumed_only_under_its_own_workflow_run(tracker, tmp_path):
    # two results folders with the same settings have the same job names
    first = tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    second = tracker.workflow_run(tmp_path / "results-b", "tune-abc", "local")
    run = tracker.job_run("tune-abc-trial-000", first, "trial", {"lr": 0.01})
    assert tracker.job_run("tune-abc-trial-000", second, "trial", {"lr": 0.01}) != run


def test_the_experiment_is_marked_as_model_training(tracker, tmp_path):
    """The experiment is marked as model training with MLflow's own tag (mlflow.experimentKind), not GenAI: a new
    experiment is made with it, and one made before without it gets it. (MLflow 3.17's UI follows its own switch,
    which make mlflow-ui's link sets; the tag is for the versions that read it.)"""
    tracker.workflow_run(tmp_path / "results", "tune-abc", "local")
    assert (
        tracker.client.get_experiment_by_name("dog-breed").tags["mlflow.experimentKind"] == "custom_model_development"
    )
    client = MlflowClient(tracker.uri)
    older = client.create_experiment("made-before")  # as an older workflow (or mlflow itself) made it
    assert "mlflow.experimentKind" not in client.get_experiment(older).tags
    tracking.Tracker(tracker.uri, "made-before").workflow_run(tmp_path / "results", "tune-abc", "local")
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"


def final_training(tracker, parent, name, data, metrics=None, status="Completed", lr=0.01):
    """A final training's run as train and evaluate leave it (params with expect_data, evaluate's metrics)."""
    time.sleep(0.01)  # each run starts in a millisecond of its own: "earlier" is by start time
    run = tracker.job_run(name, parent, "final training", {"lr": lr, "batch_size": 16, "expect_data": data})
    if metrics:
        tracker.log(run, metrics=metrics)
    if status:
        tracker.end(run, status)
    return run


def test_an_earlier_final_run_on_the_same_data_is_found_to_compare_with(tracker, tmp_path, capsys):
    same, other = "train=240:aaaa,valid=48:bbbb", "train=240:cccc,valid=48:bbbb"
    scored = {"test_accuracy": 0.8, "test_top5_accuracy": 1.0, "latency_p50_ms": 30.0}
    first = tracker.workflow_run(tmp_path / "results", "tune-a", "local")
    final_training(tracker, first, "train-oldest", same, {"test_accuracy": 0.5})  # not the most recent
    earlier = final_training(tracker, first, "train-earlier", same, scored, lr=0.003)
    trial = tracker.job_run("tune-a-trial-000", first, "trial", {"lr": 0.1, "expect_data": same})
    tracker.end(trial, "Completed", metrics={"test_accuracy": 0.99})  # a trial, not a final training
    other_data = final_training(tracker, first, "train-other-data", other, {"test_accuracy": 0.9})
    final_training(tracker, first, "train-unfinished", same, {"test_accuracy": 0.9}, status=None)
    final_training(tracker, first, "train-failed", same, {"test_accuracy": 0.9}, status="Failed")
    final_training(tracker, first, "train-unevaluated", same)
    second = tracker.workflow_run(tmp_path / "results-b", "tune-b", "local")  # another results folder, same store
    this = final_training(tracker, second, "train-this", same, status=None)
    final_training(tracker, second, "train-later", same, {"test_accuracy": 0.95})
    config = {"tracking": {"enabled": True, "uri": tracker.uri, "experiment": "dog-breed"}}

    def model(run_id):
        return {"tracking": {"run_id": run_id, **tracker.where()}}

    found = tracking.earlier_final_run(config, model(this))
    stored = tracker.client.get_run(earlier)
    this_run = found.pop("this")
    assert found == {
        "run_id": earlier,
        "run_name": "train-earlier",
        "started": datetime.fromtimestamp(stored.info.start_time / 1000, UTC).isoformat(timespec="seconds"),
        "link": tracker.run_link(earlier),
        "metrics": scored,
        "hyperparameters": {"batch_size": "16", "lr": "0.003"},
    }
    # this run as the store has it: its params beside the earlier run's, in the same form
    assert this_run["run_id"] == this and this_run["hyperparameters"] == {"batch_size": "16", "lr": "0.01"}
    # trained on other data: the earlier run on those, or none
    on_other = final_training(tracker, second, "train-on-other-data", other, status=None)
    assert tracking.earlier_final_run(config, model(on_other))["run_id"] == other_data
    new_data = final_training(tracker, second, "train-on-new-data", "train=240:dddd,valid=48:bbbb", status=None)
    assert tracking.earlier_final_run(config, model(new_data)) is None
    # tracking off, an untracked training, another store, a store that went away: None, and nothing said
    assert tracking.earlier_final_run({"tracking": {"enabled": False}}, model(this)) is None
    assert tracking.earlier_final_run(config, {}) is None
    elsewhere = {"tracking": {**config["tracking"], "uri": f"sqlite:///{tmp_path}/other.db"}}
    assert tracking.earlier_final_run(elsewhere, model(this)) is None and not (tmp_path / "other.db").exists()
    (tmp_path / "mlflow.db").write_bytes(b"not a database any more")
    assert tracking.earlier_final_run(config, model(this)) is None
    assert capsys.readouterr().out == ""


def test_the_evaluations_numbers_go_to_mlflow_under_one_set_of_names():
    evaluation = {
        "accuracy": 0.85,
        "top5_accuracy": 1.0,
        "latency_ms": {"p50": 12.5, "p99": 40.0},
        "cold_start_ms": 900.0,
        "n": 60,
    }
    assert tracking.evaluation_metrics(evaluation) == {
        "test_accuracy": 0.85,
        "test_top5_accuracy": 1.0,
        "latency_p50_ms": 12.5,
        "latency_p99_ms": 40.0,
        "cold_start_ms": 900.0,
    }
    assert tracking.evaluation_metrics({"accuracy": 0.5}) == {"test_accuracy": 0.5}
