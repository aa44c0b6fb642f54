import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
os.environ.setdefault("PYTHONPATH", os.pathsep.join([str(REPO / "workflow"), str(REPO / "scripts")]))
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # no AWS client here may ask the metadata address
# One compute thread per process (the tests' training jobs, their loader workers, this process): the
# suite runs on two workers (make test), and OpenMP threads of two jobs spinning on two cores made each
# job 4× slower. Tiny 32-px jobs lose nothing by it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# make test runs the files on two workers (pytest-xdist, --dist loadfile: a file's tests on one worker,
# in order, sharing its module fixtures). The longest files go first, so both workers end together.
LONGEST_FIRST = (
    "test_workflow_e2e.py",
    "test_training_rule_faults.py",
    "test_training_rules.py",
    "test_entry_points.py",
    "test_interruptions_e2e.py",
    "test_sagemaker_backend.py",
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order


def jpeg_bytes(colour=(200, 30, 30), size=(48, 40), mode="RGB", fmt="JPEG"):
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_image(path, colour=(200, 30, 30), size=(48, 40), mode="RGB", fmt="JPEG"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(colour, size, mode, fmt))
    return path


@pytest.fixture(scope="session", autouse=True)
def sagemaker_sdk_quiet(tmp_path_factory):
    """The SageMaker SDK's telemetry off (through its own config file), wherever a test reaches the SDK itself."""
    config = tmp_path_factory.mktemp("sagemaker") / "config.yaml"
    config.write_text("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n")
    os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = str(config)


@pytest.fixture(autouse=True)
def no_stop_left_over():
    """A rule script stops once and ends (run_guard.stopping); a test that stops jobs in this process must
    not leave the next test's jobs stopped before they start."""
    yield
    from dogbreed.runtime import run_guard

    run_guard.stopping.clear()


TINY_CLASSES = [
    ("001.Red_Circle", "circle", (200, 40, 40)),
    ("002.Green_Square", "square", (40, 170, 60)),
    ("003.Blue_Triangle", "triangle", (40, 70, 200)),
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small dogImages-like tree: 3 classes, {train: 12, valid: 4, test: 4} per class, plus one corrupt file."""
    from dogbreed.data import demo_data

    root = tmp_path_factory.mktemp("tiny")
    return demo_data.generate(root, seed=1, classes=TINY_CLASSES, per_split={"train": 12, "valid": 4, "test": 4})


@pytest.fixture(scope="session")
def tiny_channels(tiny_dataset, tmp_path_factory):
    """The tiny dataset through the prepare stage: (channels folder, prepare output folder)."""
    from dogbreed.data import verify_split

    out = tmp_path_factory.mktemp("prepared")
    verify_split.prepare(tiny_dataset, out)
    return out / "channels", out


def merged(base: dict, overlay: dict) -> dict:
    """overlay over base, key by key as Snakemake merges config files."""
    result = dict(base)
    for key, value in overlay.items():
        result[key] = (
            merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
        )
    return result


def full_config(*overlays) -> dict:
    """config.yaml with overlays, validated and with the schema's defaults, as the Snakefile has it."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for overlay in overlays:
        config = merged(config, overlay)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


def copy_workflow(target: Path) -> Path:
    """The workflow's own files in a scratch folder, so a test can edit them and run Snakemake there."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, target / name)
    for name in ("workflow", "scripts", "config", "profiles", "envs"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


# Two cores for the run, one thread for each training job: two xdist workers already share this
# machine's cores (the job rules otherwise take all of workflow.cores: Snakemake sets OMP_NUM_THREADS).
SNAKEMAKE_CORES = ("--set-threads", "tune=1", "train=1", "extract_features=1", "--cores", "2")


def snakemake(workdir, *args, check=True, timeout=900, env=None, quiet=False):
    """A Snakemake run in workdir. Tests read what the rules print, so the terminal is the verbose one
    (profiles/verbose) unless quiet: the default profile's one line per job, what a user sees."""
    verbose = () if quiet else ("--workflow-profile", "profiles/verbose")
    result = subprocess.run(
        [str(VENV_BIN / "snakemake"), *verbose, *SNAKEMAKE_CORES, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def moto_server():
    """A real S3 API (moto in server mode) on 127.0.0.1, with throwaway credentials in the environment,
    as the standard AWS chain reads them. Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL_S3",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
        )
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=url,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
    )
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def bucket(moto_server, request):
    import boto3

    name = "dogs-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50].strip("-")  # parametrised ids too
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def endpoint_state_dir(work: Path) -> Path:
    """Where a workflow copy records its endpoint (outside results/, so teardown survives their loss)."""
    name = json.loads((work / "results/endpoint.json").read_text())["endpoint_name"]
    return work / ".dogbreed/endpoints" / name


def recorded_endpoints(work: Path) -> list:
    return sorted((work / ".dogbreed/endpoints").glob("*/"))


def workflow_with_test_config(tiny_dataset, target: Path, backend="local") -> Path:
    """A scratch copy of the workflow with config/test.yaml: the tiny dataset as a zip archive, no
    downloaded weights, 32 px, 2 one-epoch trials and a 3-epoch final training on `backend`."""
    work = copy_workflow(target)
    archive = work.parent / "dogImages.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(tiny_dataset.rglob("*")):
            bundle.write(path, Path("dogImages") / path.relative_to(tiny_dataset))
    overlay = {
        "backend": backend,
        "data_source": str(archive),
        "model": {"weights": "none", "image_size": 32},
        "hyperparameters": {"epochs": 3, "num_workers": 0},
        "backends": {"local": {"channel_timeout": 3}},  # a client that stops sending is let go quickly
        "tuning": {
            "max_jobs": 2,
            "trial_hyperparameters": {"epochs": 1},
            "parameters": {
                "lr": {"type": "continuous", "min": 0.02, "max": 0.1, "scaling": "Logarithmic"},
                "batch_size": {"type": "categorical", "values": [8, 16]},
            },
        },
    }
    (work / "config/test.yaml").write_text(yaml.safe_dump(overlay))
    return work


def assert_deployed_outputs(results: Path, backend: str, epochs=3, trials=2):
    """What a complete deploy + report run leaves, on every backend: counts follow the prepared data."""
    images = {
        split: sorted(p for p in (results / "data/channels" / split).rglob("*") if p.is_file())
        for split in ("train", "valid", "test")
    }
    classes = set(json.loads((results / "data/classes.json").read_text()).values())
    manifest = (results / "data/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + sum(len(files) for files in images.values())
    assert "truncated_download.jpg" in (results / "data/rejected.csv").read_text()
    upload = json.loads((results / "upload.json").read_text())
    assert set(upload["channels"]) == {"train", "valid", "test"}
    assert upload["sync"]["train"]["uploaded"] + upload["sync"]["train"]["unchanged"] == len(images["train"])
    rows = (results / "tuning/trials.csv").read_text().splitlines()
    assert len(rows) == 1 + trials
    assert {"trial", "job_name", "status", "valid_accuracy", "lr", "batch_size"} <= set(rows[0].split(","))
    best = json.loads((results / "best_hyperparameters.json").read_text())
    assert set(best["hyperparameters"]) == {"lr", "batch_size"} and best["objective"]["metric"] == "valid_accuracy"
    model = json.loads((results / "training/model.json").read_text())
    assert (
        model["hyperparameters"]["lr"] == best["hyperparameters"]["lr"] and model["hyperparameters"]["epochs"] == epochs
    )
    assert (results / "training/metrics.csv").read_text().count("\n") == 1 + epochs
    with tarfile.open(results / "training/model.tar.gz") as archive:
        assert sorted(archive.getnames()) == ["model.pth", "model_info.json"]
    with tarfile.open(results / "deploy/model.tar.gz") as archive:
        assert {
            "model.pth",
            "model_info.json",
            "code/inference.py",
            "code/classifier.py",
            "code/job_contract.py",
        } <= set(archive.getnames())
    endpoint = json.loads((results / "endpoint.json").read_text())
    assert endpoint["backend"] == backend and endpoint["url"].startswith("http://127.0.0.1:")
    metrics = json.loads((results / "evaluation/metrics.json").read_text())
    n = len(images["test"])
    assert metrics["n"] == n and 0 <= metrics["accuracy"] <= metrics["top5_accuracy"]
    assert set(metrics["per_class_accuracy"]) == classes
    assert np.array(metrics["confusion_matrix"]["matrix"]).sum() == n
    assert metrics["latency_ms"]["p50"] <= metrics["latency_ms"]["p99"] and metrics["cold_start_ms"] > 0
    predictions = (results / "evaluation/predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + n
    rules = json.loads((results / "debugger/rules.json").read_text())
    assert len(rules["rules"]) == 17 and all(r["verdict"] != "error" for r in rules["rules"])
    assert (results / "training/output/debug/tensors.jsonl").is_file() and (
        results / "training/output/profiler/system.jsonl"
    ).is_file()
    report = (results / "profiler/profiler-report.html").read_text()
    assert "Rules summary" in report and "Dataloader" in report
    page = (results / "report.html").read_text()
    for section in (
        "Configuration",
        "Data",
        "Hyperparameter tuning",
        "Training",
        "Debugger and profiler rules",
        "Endpoint",
        "Evaluation",
    ):
        assert f"<h2>{section}</h2>" in page
    assert 'href="profiler/profiler-report.html"' in page and "truncated_download.jpg" in page
    assert f"<th>first request (ms)</th><td>{metrics['cold_start_ms']}</td>" in page  # the cold start, apart
    assert page.count("data:image/png;base64,") == 6 and "http://" not in page.replace(endpoint["url"], "")
    kept = json.loads((results / "training/model.json").read_text())["kept_epoch"]  # as train.py recorded it
    curves = pd.read_csv(results / "training/metrics.csv")
    assert kept["epoch"] == curves.epoch[curves.valid_loss.idxmin()]  # keep_best: the lowest validation loss
    assert f"the model keeps epoch {kept['epoch']} ({kept['why']})" in page
    assert 'class="dataframe sortable"' in page and "<script>" in page  # the per-class table sorts
    assert_tracked(results, epochs, trials, live=backend == "local")
    return metrics


def job_runs(work: Path, job_name: str) -> list:
    """The MLflow runs of a training job in a workflow copy's store (tracking.uri's default)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("dog-breed").experiment_id
    return [
        (
            run,
            {
                name: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
                for name in run.data.metrics
            },
        )
        for run in client.search_runs([experiment], f"tags.`dogbreed.job_name` = '{job_name}'")
    ]


def assert_tracked(results: Path, epochs: int, trials: int, live: bool):
    """The run as MLflow has it (read back through its client): the trials and the final training as runs
    under one workflow run, params under the hyperparameters' names, each epoch's metrics, the final run's
    artifacts and evaluation; its id in model.json, endpoint.json and the run report."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results.parent / 'mlflow.db'}")
    model = json.loads((results / "training/model.json").read_text())
    final = client.get_run(model["tracking"]["run_id"])
    parent = final.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent).data.tags["dogbreed.role"] == "workflow"
    children = client.search_runs([final.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    trial_runs = [r for r in children if r.data.tags["dogbreed.role"] == "trial"]
    rows = pd.read_csv(results / "tuning/trials.csv")
    assert len(trial_runs) == trials == len(rows)
    for run in trial_runs:
        row = rows[rows.job_name == run.data.tags["dogbreed.job_name"]].iloc[0]
        assert run.data.tags["dogbreed.status"] == row.status
        assert {"FINISHED": "Completed", "KILLED": "Stopped", "FAILED": "Failed"}[run.info.status] == row.status
        assert (
            float(run.data.params["lr"]) == pytest.approx(row.lr)
            and int(run.data.params["batch_size"]) == row.batch_size
        )
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "valid_accuracy"))
        assert steps == list(range(1, row.epochs_reported + 1))
    assert final.info.status == "FINISHED" and final.data.params["epochs"] == str(epochs)
    history = client.get_metric_history(final.info.run_id, "valid_accuracy")
    csv = pd.read_csv(results / "training/metrics.csv")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
        zip(csv.epoch, csv.valid_accuracy)
    )
    evaluation = json.loads((results / "evaluation/metrics.json").read_text())
    assert final.data.metrics["test_accuracy"] == evaluation["accuracy"]
    rules = json.loads((results / "debugger/rules.json").read_text())
    assert final.data.metrics["rules_triggered"] == sum(r["verdict"] == "triggered" for r in rules["rules"])
    assert final.data.tags["rule.Overfit"] == next(r["verdict"] for r in rules["rules"] if r["rule"] == "Overfit")
    artifacts = {a.path for a in client.list_artifacts(final.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(final.info.run_id, "reports")}
    assert {
        "model.tar.gz",
        "metrics.csv",
        "rules.json",
        "metrics.json",
        "reports/profiler-report.html",
        "reports/report.html",
    } <= artifacts
    record = json.loads((results / "tracking/final_run.json").read_text())  # track_results: what it logged, where
    assert record["run_id"] == final.info.run_id
    assert record["logged"] == ["rules.json", "metrics.json", "reports/profiler-report.html"]
    assert json.loads((results / "endpoint.json").read_text())["mlflow_run_id"] == final.info.run_id
    assert final.info.run_id in (results / "report.html").read_text()
    # a local job's epochs are logged by its rule as it reads them (the final training's first ones may wait for
    # MLflow's set-up, which runs beside the job's first seconds); a container's after the job, at once, and the
    # rule says so
    after = "logged from the workflow after"
    assert (after in (results / "logs/train.log").read_text()) is not live
    assert (after in (results / "logs/tune.log").read_text()) is not live
    if not live:
        assert len({m.timestamp for m in history}) == 1


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The training-rule tests' jobs folder, data and pretrained weights (tests/training_lab.py)."""
    from training_lab import make_lab

    return make_lab(tmp_path_factory)
