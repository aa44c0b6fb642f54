"""Real Snakemake runs interrupted the hard ways: Snakemake killed outright or sent SIGTERM during tuning, a
full disk, and a setup error every tuning trial would hit. Each in a scratch copy of the workflow (no deployed run needed)."""

import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import SNAKEMAKE_CORES, VENV_BIN, job_runs, snakemake, workflow_with_test_config

pytestmark = [pytest.mark.e2e, pytest.mark.long]
ARGS = ("--configfile", "config/test.yaml")


@pytest.fixture(scope="module")
def workdir(tiny_dataset, tmp_path_factory):
    return workflow_with_test_config(tiny_dataset, tmp_path_factory.mktemp("interrupted"))


def overlay(workdir, name, settings):
    (workdir / f"config/{name}.yaml").write_text(yaml.safe_dump(settings))
    return ("--configfile", "config/test.yaml", f"config/{name}.yaml")


def command_line(process) -> list:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile
        return []


def suspend_each_trial_after_its_first_epoch(run, count) -> list:
    """Suspend each training process as soon as its log shows its first epoch, and return them once `count` are.
    train.py checkpoints an epoch before printing its line, so each has a checkpoint to resume from, and with
    epochs to go none can finish on its own before the signal lands, however fast or loaded the machine."""
    suspended = {}
    deadline = time.time() + 600
    while len(suspended) < count:
        assert run.poll() is None and time.time() < deadline, "the trials never finished their first epoch"
        for process in psutil.Process(run.pid).children(recursive=True):
            if process.pid in suspended:
                continue
            try:  # a local job runs in <job>/code (forked by the job launcher, its command line is the launcher's)
                folder = Path(process.cwd())
            except psutil.Error:  # ended meanwhile
                continue
            log = folder.parent / "log.txt"
            if folder.name == "code" and log.exists() and "epoch=1 " in log.read_text():
                process.suspend()
                suspended[process.pid] = process
        time.sleep(0.05)
    return list(suspended.values())


def resumed_from_a_checkpoint(log: str) -> bool:
    """The retry's log says it went on from an epoch its interrupted try had checkpointed (the first, or a later
    one the try reached before it was suspended)."""
    return re.search(r"^\[job\] resumed from \S+ after epoch [1-9]", log, re.MULTILINE) is not None


def test_a_killed_snakemake_takes_its_jobs_with_it_and_the_plain_rerun_resumes(workdir):
    """kill -9 of Snakemake while a tuning trial runs: the tune script and its trial stop too, and the
    plain rerun (no --unlock) retries the trial as the same job, resuming from its checkpoint."""
    killed = overlay(
        workdir,
        "killed",
        {"results_dir": "results-killed", "tuning": {"max_jobs": 1, "trial_hyperparameters": {"epochs": 5}}},
    )
    target = "results-killed/best_hyperparameters.json"
    run = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), *SNAKEMAKE_CORES, target, *killed],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        suspend_each_trial_after_its_first_epoch(run, 1)
        jobs = psutil.Process(run.pid).children(recursive=True)
        run.send_signal(signal.SIGKILL)
        run.wait(10)
        _gone, alive = psutil.wait_procs(jobs, timeout=60)
        assert not alive, f"left running after Snakemake was killed: {[command_line(p) for p in alive]}"
    finally:
        for process in psutil.Process().children(recursive=True):
            if process.pid == run.pid or run.pid in [parent.pid for parent in process.parents()]:
                process.kill()
    plan = snakemake(workdir, "-n", target, *killed)  # no "Directory cannot be locked"
    assert "removed the locks left by a Snakemake run that was killed" in plan.stderr
    snakemake(workdir, target, *killed)
    rows = (workdir / "results-killed/tuning/trials.csv").read_text().splitlines()
    statuses = [row.split(",")[2] for row in rows[1:]]
    assert statuses == ["Failed", "Completed"], rows
    (job,) = (workdir / "results-killed/jobs").iterdir()
    log = (job / "log.txt").read_text()
    assert resumed_from_a_checkpoint(log), log
    # the retry went on in the trial's MLflow run: one run, its epochs from before and after the kill
    ((run, history),) = job_runs(workdir, job.name)
    assert run.info.status == "FINISHED" and [step for step, _ in history["valid_accuracy"]] == [1, 2, 3, 4, 5]


def test_sigterm_to_snakemake_alone_stops_parallel_trials_at_once_and_the_rerun_resumes(workdir):
    """SIGTERM to Snakemake only (what kill, timeout, systemd and docker stop send), while two trials run in
    parallel: Snakemake and everything it started are gone within 30 s (Snakemake's own handling would let
    both trials finish and start the next), one line says what stopped, and the rerun resumes both."""
    stopped = overlay(
        workdir,
        "sigterm",
        {
            "results_dir": "results-sigterm",
            "tuning": {"max_jobs": 2, "max_parallel_jobs": 2, "trial_hyperparameters": {"epochs": 5}},
        },
    )
    target = "results-sigterm/best_hyperparameters.json"
    run = subprocess.Popen(
        [str(VENV_BIN / "snakemake"), target, "--cores", "2", "--set-threads", "tune=2", *stopped],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        suspend_each_trial_after_its_first_epoch(run, 2)
        jobs = psutil.Process(run.pid).children(recursive=True)
        signalled = time.time()
        run.send_signal(signal.SIGTERM)
        out, _ = run.communicate(timeout=30)
        _gone, alive = psutil.wait_procs(jobs, timeout=max(1, 30 - (time.time() - signalled)))
        assert not alive, f"left running after SIGTERM: {[command_line(p) for p in alive]}"
        assert time.time() - signalled < 30
    finally:
        for process in psutil.Process().children(recursive=True):
            if process.pid == run.pid or run.pid in [parent.pid for parent in process.parents()]:
                process.kill()
    assert run.returncode != 0 and "Traceback" not in out, out
    said = [line for line in out.splitlines() if line.startswith("rule tune stopped")]
    assert len(said) == 1 and said[0].startswith("rule tune stopped by SIGTERM: stopped training job "), out
    assert said[0].count("training job ") == 2 and said[0].endswith("run the same command again to resume"), said
    assert "SIGTERM: stopping the running jobs" in out
    snakemake(workdir, target, "--set-threads", "tune=2", *stopped)  # no --unlock; both trials retried
    rows = (workdir / "results-sigterm/tuning/trials.csv").read_text().splitlines()
    assert sorted(row.split(",")[2] for row in rows[1:]) == ["Completed", "Completed", "Failed", "Failed"], rows
    for job in (workdir / "results-sigterm/jobs").iterdir():
        log = (job / "log.txt").read_text()
        assert resumed_from_a_checkpoint(log), log


def test_a_full_disk_ends_in_one_line_naming_the_path(workdir, tmp_path):
    small = tmp_path / "small-disk"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        full = snakemake(
            workdir,
            f"{small}/results/data/manifest.csv",
            *ARGS,
            "--config",
            f"results_dir={small}/results",
            check=False,
        )
        assert not list(small.rglob("*.partial"))  # nothing half-written left on the full disk
    finally:
        subprocess.run(["umount", "--lazy", str(small)], check=True)
    out = full.stdout + full.stderr
    assert full.returncode != 0 and "Traceback" not in out
    said = [line for line in out.splitlines() if "no space left" in line]
    assert len(said) == 1 and said[0].startswith(
        f"error in rule prepare: no space left on the device holding {small}/results/"
    ), said
    assert "or set results_dir to a bigger disk" in said[0]


def test_an_error_every_trial_would_hit_stops_tuning_at_once_in_one_line(workdir):
    broken = overlay(
        workdir, "broken", {"results_dir": "results-broken", "model": {"weights": "/nowhere/resnet18.pth"}}
    )
    result = snakemake(workdir, "tune", *broken, check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    errors = [line for line in out.splitlines() if line.startswith("error in rule tune:")]
    assert (
        len(errors) == 1
        and "failed before its first step" in errors[0]
        and "/nowhere/resnet18.pth does not exist" in errors[0]
    )
    assert "Traceback" not in out and out.count("/nowhere/resnet18.pth does not exist") == 1
    (job,) = (workdir / "results-broken/jobs").iterdir()  # one trial ran, not max_jobs
    ((run, _),) = job_runs(workdir, job.name)
    assert run.info.status == "FAILED" and "/nowhere/resnet18.pth does not exist" in run.data.tags["dogbreed.failure"]
