"""The local backend's job launcher (dogbreed/backends/job_launcher.py): a job forked from a Python that imported torch
runs, ends and is stopped as the same job in a fresh Python would be, and makes the same model."""

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time

import psutil
import pytest
from conftest import REPO
from dogbreed.backends import job_launcher, local
from dogbreed.backends.local import LocalBackend

# prints what a fresh Python gives a script, then ends as its first flag says
PROBE = textwrap.dedent(
    """
    import atexit, os, signal, sys, threading, time
    import torch
    print("argv", sys.argv, "cwd", os.getcwd(), "path0", sys.path[0], "name", __name__, "file", __file__)
    print("threads", torch.get_num_threads(), "X", os.environ.get("X"), "Y", os.environ.get("Y"))
    print("own session", os.getpgid(0) == os.getpid() == os.getsid(0), "stdin", repr(sys.stdin.read()))
    print("to stderr", file=sys.stderr)
    atexit.register(lambda: print("atexit ran", flush=True))
    how = sys.argv[1]
    if how == "thread":  # a non-daemon thread: the script's end waits for it
        threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
    if how == "exit3":
        sys.exit(3)
    if how == "message":
        sys.exit("error: a message")
    if how == "raise":
        raise ValueError("boom")
    if how == "interrupt":
        raise KeyboardInterrupt
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    if how == "exit-1":
        sys.exit(-1)
    if how == "sleep":
        print("sleeping", flush=True)
        child = __import__("subprocess").Popen(["sleep", "60"])  # in the job's process group
        print("child", child.pid, flush=True)
        time.sleep(60)
    """
)
ENDINGS = ["ok", "thread", "exit3", "exit-1", "message", "raise", "interrupt", "sigterm"]


@pytest.fixture(scope="module")
def launcher():
    started = job_launcher.JobLauncher()
    yield started
    started.close()
    assert started._process.poll() is not None  # nothing left running


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


def job_env(**extra):
    return dict(os.environ, PYTHONUNBUFFERED="1", X="x", **extra)


def run(process) -> tuple:
    with process:
        output = process.stdout.read()
    return process.returncode, output


def fresh(command, cwd, env):
    return local.start_job_process(command, cwd, env, launcher=None)


@pytest.mark.parametrize("how", ENDINGS)
def test_a_forked_job_starts_and_ends_as_a_fresh_python(launcher, probe, how):
    # 2 threads where the launcher has 1 (conftest.py): the child sets the job's own
    command, env = [sys.executable, "probe.py", how], job_env(OMP_NUM_THREADS="2")
    assert launcher.environment["OMP_NUM_THREADS"] == "1" and job_launcher.forkable(launcher.environment, env)
    forked = launcher.start(command, probe, env)
    assert isinstance(forked, job_launcher.ForkedJob)
    assert run(forked) == run(fresh(command, probe, env))


@pytest.mark.parametrize("script", ["missing.py", "broken.py"])
def test_a_script_that_cannot_run_fails_as_in_a_fresh_python(launcher, probe, script):
    (probe / "broken.py").write_text("print('never')\nif True print('a syntax error')\n")
    command, env = [sys.executable, script], job_env()
    assert run(launcher.start(command, probe, env)) == run(fresh(command, probe, env))


def test_a_variable_the_launcher_has_and_the_job_not_is_unset_in_it(probe, monkeypatch):
    monkeypatch.setenv("Y", "the rule's")
    launcher = job_launcher.JobLauncher()
    try:
        env = job_env()
        env.pop("Y")
        _, output = run(launcher.start([sys.executable, "probe.py", "ok"], probe, env))
    finally:
        launcher.close()
    assert "X x Y None" in output


def test_jobs_started_at_once_from_threads_each_get_their_own(launcher, probe):
    results = {}

    def one(n):
        command = [sys.executable, "probe.py", "exit3" if n % 2 else "ok", str(n)]
        results[n] = run(launcher.start(command, probe, job_env()))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for n, (code, output) in results.items():
        assert code == (3 if n % 2 else 0) and f"'{n}']" in output and output.count("argv") == 1


def test_the_backend_stops_a_forked_job_with_its_process_group(launcher, probe):
    job = launcher.start([sys.executable, "probe.py", "sleep"], probe, job_env())
    lines = iter(job.stdout)
    while not (line := next(lines)).startswith("child"):
        pass
    grandchild = int(line.split()[1])
    job_launcher.signal_job(job.pid, signal.SIGTERM)
    assert job.wait(timeout=30) == -signal.SIGTERM
    for _ in range(100):  # the job's own child went with it (its group), as with a fresh Python's
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the job's child outlived it")
    job.stdout.close()


def test_a_variable_read_while_torch_imports_means_a_fresh_python(probe, capsys):
    launched = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "2"}
    assert job_launcher.forkable(launched, {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "1", "SM_HPS": "{}"})
    assert not job_launcher.forkable(launched, {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"})
    assert not job_launcher.forkable(launched, {"OMP_NUM_THREADS": "2"})  # unset for the job
    assert not job_launcher.forkable({}, {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "1"})
    assert not job_launcher.forkable({"OMP_NUM_THREADS": "1"}, {})  # a fresh Python would take every core
    assert not job_launcher.forkable({"LANG": "C.UTF-8"}, {"LANG": "C"})
    assert job_launcher.unforkable({"LANG": "C.UTF-8"}, {"LANG": "C"}).startswith("LANG, read while torch")
    backend_launcher = type("Launcher", (), {"environment": launched, "start": lambda *a: pytest.fail("forked")})()
    process = local.start_job_process(
        [sys.executable, "probe.py", "ok"], probe, job_env(OMP_WAIT_POLICY="PASSIVE"), backend_launcher
    )
    assert isinstance(process, subprocess.Popen) and run(process)[0] == 0
    assert "starts as a fresh Python, seconds slower: " in capsys.readouterr().out  # and why, by name


def test_a_launcher_that_died_kills_its_jobs_and_the_next_starts_fresh(probe):
    launcher = job_launcher.JobLauncher()
    job = launcher.start([sys.executable, "probe.py", "sleep"], probe, job_env())
    assert next(iter(job.stdout)).startswith("argv")
    launcher._process.kill()
    assert job.wait(timeout=30) == -signal.SIGKILL  # its exit code could not be known: it is killed, not left
    assert "job launcher exited" in job.ended_by
    job.stdout.close()
    with pytest.raises(job_launcher.LauncherUnavailable):
        launcher.start([sys.executable, "probe.py", "ok"], probe, job_env())
    process = local.start_job_process([sys.executable, "probe.py", "ok"], probe, job_env(), launcher)
    assert isinstance(process, subprocess.Popen) and run(process)[0] == 0
    launcher.close()


def launcher_pid(client: job_launcher.JobLauncher) -> int:
    return job_launcher.peer(client._channel)[0]


@pytest.fixture
def snakemake_run():
    """A process standing for a Snakemake run, and the address of its launcher."""
    run = subprocess.Popen(["sleep", "600"])
    yield run, job_launcher.run_address(run.pid, psutil.Process(run.pid).create_time())
    run.kill()
    run.wait()


def test_the_runs_rules_share_one_launcher_which_ends_after_the_run_and_its_last_rule(probe, snakemake_run):
    run, address = snakemake_run
    tune, train = job_launcher.JobLauncher(run=address), job_launcher.JobLauncher(run=address)  # two rules' processes
    jobs = [rule.start([sys.executable, "probe.py", "sleep"], probe, job_env()) for rule in (tune, train)]
    assert launcher_pid(tune) == launcher_pid(train) == psutil.Process(jobs[0].pid).ppid()  # one launcher, torch once
    for job in jobs:  # each has started its sleep
        assert "sleeping\n" in iter(job.stdout.readline, "")
    # a client that is not this file's (a request it cannot read) loses its channel, and no rule's job goes
    for unreadable in (b"not a request", b"[]", b'{"argv": []}'):
        stranger = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        stranger.connect("\0" + address[0])
        stranger.send(unreadable)
        assert stranger.recv(1 << 20).startswith(b'{"environment"') and stranger.recv(16) == b""  # hello, closed
        stranger.close()
    # a rule's process that ends takes its own jobs with it, not another rule's
    tune.close()
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(jobs[0].pid).wait(30)  # TimeoutExpired: it outlived its rule
    assert psutil.Process(jobs[1].pid).status() != psutil.STATUS_ZOMBIE
    # the run ends: no new rule gets this launcher, and it serves the rule still connected until that one ends
    run.kill()
    run.wait()
    launcher = psutil.Process(launcher_pid(train))
    job_launcher.kill_job(jobs[1].pid)
    assert jobs[1].wait(30) == -signal.SIGKILL  # the launcher still reaps it and says so
    train.close()
    launcher.wait(30)


def test_the_runs_end_ends_its_launcher(probe, snakemake_run):
    _, address = snakemake_run
    rule = job_launcher.JobLauncher(run=address)
    assert run(rule.start([sys.executable, "probe.py", "ok"], probe, job_env()))[0] == 0
    launcher = psutil.Process(launcher_pid(rule))
    rule.close()
    job_launcher.end_run_launcher(address)  # the run's onsuccess: the launcher has exited when it returns
    assert launcher.wait(0) == 0
    job_launcher.end_run_launcher(address)  # none any more: nothing to do


def test_a_killed_rule_process_takes_its_forked_jobs_with_it(probe):
    """kill -9 of the process that started the launcher (a rule script the OOM killer picked): its jobs end too."""
    rule_script = textwrap.dedent(
        """
        import os, signal, sys
        from dogbreed.backends import job_launcher
        job = job_launcher.JobLauncher().start([sys.executable, "probe.py", "sleep"], ".", dict(os.environ))
        print(job.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    rule = subprocess.Popen(
        [sys.executable, "-c", rule_script],
        cwd=probe,
        env=dict(os.environ, PYTHONPATH=str(REPO / "workflow")),
        stdout=subprocess.PIPE,
        text=True,
    )
    job = int(rule.stdout.readline())
    assert rule.wait(60) == -signal.SIGKILL
    for _ in range(300):
        try:
            os.kill(job, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    pytest.fail("the forked job outlived the process that started it")


def model_digest(result) -> str:
    with tarfile.open(result["model_uri"][len("file://") :]) as archive:
        return hashlib.sha256(archive.extractfile("model.pth").read()).hexdigest()


def test_a_training_job_forked_or_fresh_makes_the_same_model(tiny_channels, tmp_path, monkeypatch):
    channels, _ = tiny_channels
    job = (
        {
            "weights": "none",
            "image_size": 32,
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.05,
            "num_workers": 0,
            "debug": True,
        },
        {"train": f"file://{channels}/train", "valid": f"file://{channels}/valid"},
    )
    forked_jobs = []
    start = job_launcher.JobLauncher.start
    monkeypatch.setattr(
        job_launcher.JobLauncher, "start", lambda self, *a: forked_jobs.append(start(self, *a)) or forked_jobs[-1]
    )
    results = {}
    for preload in (False, True):
        results[preload] = LocalBackend({"preload": preload}).train(
            "same",
            *job,
            tmp_path / str(preload),
            REPO / "scripts",
            echo=False,
            environment={"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},  # not the launcher's 1
        )
    fresh_run, forked = results[False], results[True]

    def losses(result):
        return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in result["metrics"]]

    assert losses(forked) == losses(fresh_run) and model_digest(forked) == model_digest(fresh_run)
    record = "output/data/debug/tensors.jsonl"
    assert (tmp_path / "True/same" / record).read_bytes() == (tmp_path / "False/same" / record).read_bytes()
    assert len(forked_jobs) == 1 and forked_jobs[0].returncode == 0  # the second one was forked
