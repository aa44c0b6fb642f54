"""train.py on several processes (DDP, gloo on this CPU machine) through the local backend's torchrun, and the
SageMaker request for it (moto): the same metrics and one artifact, a killed rank that fails the job promptly
and a rerun that resumes, and instance_count > 1 refused without distribution."""

import json
import os
import signal
import tarfile
import threading
import time

import psutil
import pytest
from conftest import REPO
from dogbreed.backends.errors import JobFailed
from dogbreed.backends.local import LocalBackend
from dogbreed.checks import artifacts, profiler_checks

HYPERPARAMETERS = {
    "weights": "none",
    "image_size": 32,
    "batch_size": 8,
    "lr": 0.05,
    "num_workers": 0,
    "profile": True,
    "profiler_interval_ms": 200,
}


def channels_of(tiny_channels):
    channels, _ = tiny_channels
    return {"train": f"file://{channels}/train", "valid": f"file://{channels}/valid"}


def test_two_gloo_processes_train_one_model_and_print_each_epoch_once(tiny_channels, tmp_path):
    result = LocalBackend({}).train(
        "ddp",
        {**HYPERPARAMETERS, "epochs": 2},
        channels_of(tiny_channels),
        tmp_path,
        REPO / "scripts",
        echo=False,
        processes=2,
    )
    log = open(result["log"]).read()
    assert "on cpu × 2 processes" in log
    assert [line.split()[0] for line in log.splitlines() if line.startswith("epoch=")] == ["epoch=1", "epoch=2"]
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]
    assert set(result["metrics"][0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "valid_loss",
        "valid_accuracy",
        "epoch_seconds",
    }
    with tarfile.open(result["model_uri"][len("file://") :]) as archive:
        assert sorted(archive.getnames()) == ["model.pth", "model_info.json"]
    profiler = tmp_path / "ddp/output/data/profiler"
    assert json.loads((profiler / "job.json").read_text())["processes"] == 2
    # every rank's step timings, each its share of the steps: 36 images, batch 8 → 4 per rank, 4 steps each
    rank0 = [json.loads(line) for line in (profiler / "steps.jsonl").read_text().splitlines()]
    rank1 = [json.loads(line) for line in (profiler / "steps.rank1.jsonl").read_text().splitlines()]
    train_steps = lambda steps: [s for s in steps if s["phase"] == "train"]
    assert len(train_steps(rank0)) == len(train_steps(rank1)) > 0
    # the profiler rules see both ranks (whether one was slower on this loaded machine is the rule's to say)
    verdict = profiler_checks.load_balancing(artifacts.load_profile(profiler))
    assert verdict["verdict"] in ("ok", "triggered") and set(verdict["evidence"]["median_own_step_s"]) == {"0", "1"}
    assert all("forward_s" in step for step in rank0 + rank1)


def test_load_balancing_triggers_on_a_rank_that_holds_the_others_up():
    import pandas as pd

    def steps(own_s, compute_s=0.5):  # compute_s holds the all-reduce: about the same on every rank
        return pd.DataFrame(
            {
                "phase": "train",
                "epoch": 1,
                "step": range(20),
                "data_wait_s": own_s / 2,
                "forward_s": own_s / 2,
                "compute_s": compute_s,
            }
        )

    even = {"rank_steps": {0: steps(0.10), 1: steps(0.12)}}
    straggler = {"rank_steps": {0: steps(0.10), 1: steps(0.11), 2: steps(0.21)}}
    assert profiler_checks.load_balancing(even)["verdict"] == "ok"
    result = profiler_checks.load_balancing(straggler)
    assert result["verdict"] == "triggered" and result["evidence"]["slower_than_fastest"] == {"2": 1.1}
    assert profiler_checks.load_balancing({"rank_steps": {}})["verdict"] == "not_applicable"


def rank_processes(job_dir, rank: str) -> list:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if (
                "train.py" in " ".join(process.info["cmdline"] or [])
                and process.environ().get("RANK") == rank
                and process.cwd().startswith(str(job_dir))
            ):
                found.append(process)
        except psutil.Error:
            pass
    return found


def test_a_killed_rank_fails_the_job_promptly_and_the_rerun_resumes(tiny_channels, tmp_path):
    backend = LocalBackend({})
    job = ("ddp-kill", {**HYPERPARAMETERS, "epochs": 3}, channels_of(tiny_channels), tmp_path, REPO / "scripts")
    killed_at = []

    def kill_rank_one_after_epoch_one(line):
        if line.startswith("epoch=1 "):
            (rank1,) = rank_processes(tmp_path / "ddp-kill", "1")  # still running: it waits on rank 0 to finish epoch 3
            rank1.send_signal(signal.SIGKILL)
            killed_at.append(time.time())
        return False

    # a hang would be the failure: the job runs in a (daemon) thread, so the test says so instead of waiting
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.update(
            error=_raises(backend.train, *job, echo=False, processes=2, on_line=kill_rank_one_after_epoch_one)
        ),
        daemon=True,
    )
    runner.start()
    runner.join(600)
    assert not runner.is_alive(), "the job still runs 10 minutes after one of its ranks was killed"
    assert killed_at and isinstance(outcome["error"], JobFailed), outcome
    assert not rank_processes(tmp_path / "ddp-kill", "0")  # no worker left behind
    assert (tmp_path / "ddp-kill/checkpoints/ddp-kill/checkpoint.pth").is_file()
    result = backend.train(*job, echo=False, processes=2)
    log = open(result["log"]).read()
    # after epoch 1, or 2 where this loaded machine read the line late: rank 1 cannot finish epoch 3 without rank 0
    assert "resumed from" in log and ("after epoch 1" in log or "after epoch 2" in log)
    assert [m["epoch"] for m in result["metrics"]] == [1, 2, 3]


def _raises(function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except Exception as error:
        return error
    return None


def test_more_processes_than_gpus_are_refused_by_name(tiny_channels, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(JobFailed, match=r"training.processes is 2, but this machine gives the job 1 GPU"):
        LocalBackend({}).train(
            "ddp-gpus",
            {**HYPERPARAMETERS, "epochs": 1},
            channels_of(tiny_channels),
            tmp_path,
            REPO / "scripts",
            echo=False,
            processes=2,
        )


# --- SageMaker: torch_distributed -----------------------------------------------------------------


def test_sagemaker_gets_torch_distributed_and_refuses_instances_that_would_train_alone(
    moto_server, bucket, monkeypatch, tmp_path
):
    from dogbreed.runtime.run_plan import PlanRefused
    from test_sagemaker_backend import CHANNELS, backend_for, put_job_outputs, sent

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    captured = []
    backend = backend_for(bucket, captured, instance_count=2)
    with pytest.raises(PlanRefused, match=r"backends.sagemaker.instance_count is 2, but training.processes is 1"):
        backend.train("train-alone", {"lr": 0.1}, CHANNELS(bucket), tmp_path, REPO / "scripts", instances=2)
    assert not sent(captured, "CreateTrainingJob")
    put_job_outputs(bucket, "train-ddp")
    backend.train("train-ddp", {"lr": 0.1}, CHANNELS(bucket), tmp_path, REPO / "scripts", processes=2, instances=2)
    (request,) = sent(captured, "CreateTrainingJob")
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"]["sagemaker_instance_type"] == '"ml.g4dn.xlarge"'  # the toolkit's launcher
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("/pytorch-training:2.8-gpu-py312")
    assert os.environ.get("AWS_EC2_METADATA_DISABLED") == "true"


@pytest.mark.parametrize("version, python", [("2.7", "py312"), ("2.5", "py311")])
def test_torch_distributed_runs_on_the_configured_versions_image(
    moto_server, bucket, monkeypatch, tmp_path, version, python
):
    """The launcher takes 2.7 and 2.5 (the SDK's aliases for 2.7.1 and 2.5.1, which its launcher list names; padding
    to "2.7.0" would refuse them): the job runs the same image as without DDP, with the launcher on."""
    from test_sagemaker_backend import CHANNELS, backend_for, put_job_outputs, sent

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    captured = []
    backend = backend_for(bucket, captured, instance_count=2, framework_version=version, py_version=python)
    put_job_outputs(bucket, f"train-{version}")
    backend.train(
        f"train-{version}", {"lr": 0.1}, CHANNELS(bucket), tmp_path, REPO / "scripts", processes=2, instances=2
    )
    (request,) = sent(captured, "CreateTrainingJob")
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith(f"/pytorch-training:{version}-gpu-{python}")
    assert request["HyperParameters"]["sagemaker_torch_distributed_enabled"] == "true"


# --- Snakemake on a cluster ------------------------------------------------------------------------


def test_the_job_rules_declare_what_a_cluster_schedules_and_the_rest_stay_local():
    import subprocess

    import yaml
    from conftest import VENV_BIN

    plan = subprocess.run(
        [
            str(VENV_BIN / "snakemake"),
            "--workflow-profile",  # Snakemake's full output: each job's block with its resources
            "profiles/verbose",
            "-n",
            "--forceall",
            "deploy",
            "--configfile",
            "config/demo.yaml",
            "--config",
            "results_dir=/tmp/dogbreed-dry-run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = plan.stdout + plan.stderr
    for rule in ("tune", "train"):
        block = out.split(f"\nrule {rule}:")[1].split("\n\n")[0]
        assert "mem_mb=16000" in block and "runtime=240" in block and "gpu=0" in block, block
    # every rule but those three runs where Snakemake runs (the endpoint must outlive its rule)
    import re

    listed = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--list-rules", "--configfile", "config/demo.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.split()
    block = (REPO / "Snakefile").read_text().split("localrules:")[1].split("\n\n")[0]
    local = set(re.findall(r"^\s+(\w+),$", block, re.MULTILINE))
    assert set(listed) - local == {"extract_features", "tune", "train"}, set(listed) - local
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["rerun-incomplete"] is True


# --- the same model, near enough, on one process or two -------------------------------------------


def test_accuracy(model_tar, test_dir, tmp_path) -> float:
    """Test accuracy of a job's model.tar.gz over a channel folder, as the endpoint would preprocess."""
    import classifier
    import torch
    from image_folders import ImageFolderByNumber

    folder = tmp_path / model_tar.parent.parent.name
    with tarfile.open(model_tar) as archive:
        archive.extractall(folder, filter="data")
    model, info = classifier.load_model(folder)
    images = ImageFolderByNumber(test_dir, classifier.eval_transform(info["preprocessing"]))
    with torch.no_grad():
        right = sum(int(model(image[None]).argmax(1)) == label for image, label in images)
    return right / len(images)


test_accuracy.__test__ = False  # a helper, not a test


@pytest.mark.long  # two demo trainings (about a minute each here): make test-long
def test_two_processes_reach_the_single_process_accuracy_on_the_demo_data(tmp_path):
    from dogbreed.data import demo_data, verify_split

    # the demo's train and valid images; 60 test images a class, not 10 (360 in all: a 0.05 gap is 18 images,
    # not 3, so the comparison measures the training rather than a few borderline images)
    verify_split.prepare(
        demo_data.generate(tmp_path / "raw", seed=0, per_split={**demo_data.SPLITS, "test": 60}), tmp_path / "prepared"
    )
    data = tmp_path / "prepared/channels"
    channels = {"train": f"file://{data}/train", "valid": f"file://{data}/valid"}
    demo = {"weights": "none", "image_size": 64, "epochs": 6, "lr": 0.007, "batch_size": 32, "num_workers": 0}
    accuracy = {}
    for processes in (1, 2):
        result = LocalBackend({}).train(
            f"demo-{processes}", demo, channels, tmp_path / "jobs", REPO / "scripts", echo=False, processes=processes
        )
        accuracy[processes] = test_accuracy(
            tmp_path / f"jobs/demo-{processes}/output/model.tar.gz", data / "test", tmp_path
        )
        assert result["status"] == "Completed"
    print(f"test accuracy by processes: {accuracy}")
    assert accuracy[1] > 0.5 and abs(accuracy[2] - accuracy[1]) <= 0.05, accuracy


def test_the_head_trains_on_cached_features_across_processes_too(tiny_channels, tmp_path):
    """The feature cache keeps working with DDP: the head alone (DDP over model.fc), each rank its share."""
    from test_feature_cache import extract

    channels, _ = tiny_channels
    cache = extract(tmp_path, "cache", channels, "--augment", "false")
    backend_channels = {"train": f"file://{cache}/train", "valid": f"file://{cache}/valid"}
    result = LocalBackend({}).train(
        "ddp-cached",
        {**HYPERPARAMETERS, "epochs": 2, "freeze_backbone": True, "augment": False},
        backend_channels,
        tmp_path / "jobs",
        REPO / "scripts",
        echo=False,
        processes=2,
    )
    log = open(result["log"]).read()
    assert "× 2 processes" in log and "the head on cached backbone features" in log
    assert [m["epoch"] for m in result["metrics"]] == [1, 2]


def test_sagemaker_tuning_trials_stay_on_one_instance(moto_server, bucket, monkeypatch, tmp_path):
    from test_sagemaker_backend import CHANNELS, SPEC, answer_one_completed_trial, backend_for, sent

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    captured = []
    backend = backend_for(bucket, captured, instance_count=2)
    answer_one_completed_trial(backend)
    backend.tune(SPEC, {"epochs": 1}, CHANNELS(bucket), tmp_path, REPO / "scripts", "tune-one-instance", None)
    (request,) = sent(captured, "CreateHyperParameterTuningJob")
    definition = request["TrainingJobDefinition"]
    assert (definition.get("ResourceConfig") or definition["HyperParameterTuningResourceConfig"])["InstanceCount"] == 1
    assert "sagemaker_torch_distributed_enabled" not in definition["StaticHyperParameters"]
