"""How rule scripts end: a full disk in one line (whatever chain of errors it causes), a signal in one line
naming the jobs it stopped, and the stale locks of a killed Snakemake removed only when that run is provably
gone."""

import errno
import itertools
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import psutil
import pytest
from dogbreed.runtime import rule_runner, run_guard


def rule(tmp_path):
    return SimpleNamespace(
        rule="tune", output=[str(tmp_path / "results/tuning/trials.csv")], log=[str(tmp_path / "tune.log")]
    )


def chained(*errors):
    """errors[0] raised while handling errors[1], ... as Optuna's assertions bury SQLite's."""
    for outer, inner in itertools.pairwise(errors):
        outer.__context__ = inner
    return errors[0]


def test_a_full_disk_is_one_line_naming_the_path(tmp_path, capfd):
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results/data/channels/x.jpg"))
    message = rule_runner.disk_full(chained(AssertionError("Should not reach."), RuntimeError("writer"), full))
    assert message.startswith(f"no space left on the device holding {tmp_path}/results/data/channels/x.jpg (")

    sqlite = Exception("(sqlite3.OperationalError) database or disk is full")
    assert f"holding {tmp_path}/results/tuning (" in rule_runner.disk_full(
        chained(AssertionError("Should not reach."), sqlite), rule(tmp_path)
    )
    copy = OSError(errno.ENOSPC, "No space left on device", "/data/raw/x.jpg", None, str(tmp_path / "results/x.jpg"))
    assert f"holding {tmp_path}/results/x.jpg (" in rule_runner.disk_full(copy)  # the file it could not write
    assert rule_runner.disk_full(ValueError("something else")) is None

    def main(smk):
        raise chained(AssertionError("Should not reach."), sqlite)

    handlers = {s: signal.getsignal(s) for s in run_guard.STOP_SIGNALS}  # run_rule sets its own, for a rule script
    try:
        with pytest.raises(SystemExit):
            rule_runner.run_rule(main, rule(tmp_path))
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    err = capfd.readouterr().err
    assert (
        err.count("\n") == 1
        and err.startswith("error in rule tune: no space left on the device holding")
        and "Traceback" not in err
    )


def test_a_full_disk_names_the_setting_that_moves_the_folder_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import job_contract

    monkeypatch.chdir(tmp_path)
    smk = SimpleNamespace(**vars(rule(tmp_path)), config={"results_dir": "results", "store": {"uri": "file://store"}})
    for path, setting in [
        ("store/datasets/x/train/a.jpg", "store.uri"),
        ("results/jobs/t/checkpoint.pth", "results_dir"),
    ]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / path))
        assert f"or set {setting} to a bigger disk, and run again" in rule_runner.disk_full(full, smk)
    elsewhere = OSError(errno.ENOSPC, "No space left on device", "/tmp/x")
    assert "or set" not in rule_runner.disk_full(elsewhere, smk)

    # a write that fails (here: the disk filled mid-write) leaves neither half a file nor its partial copy
    target = tmp_path / "results/jobs/t/checkpoint.pth"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(OSError), job_contract.written_whole(target) as partial:
        partial.write_bytes(b"half of")
        raise OSError(errno.ENOSPC, "No space left on device", str(partial))
    assert target.read_bytes() == b"the previous checkpoint" and list(target.parent.iterdir()) == [target]
    with job_contract.written_whole(target) as partial:
        partial.write_bytes(b"the new checkpoint")
    assert target.read_bytes() == b"the new checkpoint" and list(target.parent.iterdir()) == [target]


def test_stale_locks_go_only_when_their_run_is_dead(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    lock = tmp_path / ".snakemake/locks/0.output.lock"
    lock.write_text("results/x")
    assert run_guard.remove_stale_locks() is None and lock.exists()  # no run recorded: not ours to judge

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_guard.RUNS_DIR.mkdir(parents=True)
        record = {"pid": alive.pid, "started": psutil.Process(alive.pid).create_time()}
        (run_guard.RUNS_DIR / f"{alive.pid}.json").write_text(json.dumps(record))
        assert run_guard.remove_stale_locks() is None and lock.exists()  # that run still holds them
    finally:
        alive.kill()
        alive.wait()
    message = run_guard.remove_stale_locks()
    assert f"killed (pid {alive.pid})" in message and not lock.exists() and not list(run_guard.RUNS_DIR.iterdir())


def test_a_training_job_that_fills_the_disk_fails_in_one_line(tmp_path):
    from dogbreed.backends.errors import JobFailed
    from dogbreed.backends.local import LocalBackend

    source = tmp_path / "source"
    source.mkdir()
    (source / "train.py").write_text(
        "import errno, os\nraise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/ckpt/job/checkpoint.tmp')\n"
    )
    (tmp_path / "train").mkdir()
    channels = {"train": f"file://{tmp_path}/train", "valid": f"file://{tmp_path}/train"}
    with pytest.raises(JobFailed) as failed:
        LocalBackend({}).train("full", {}, channels, tmp_path / "jobs", source, echo=False)
    assert "\n" not in str(failed.value) and "training job full ran out of disk space (log: " in str(failed.value)
    # the rule's one line: the job, its log, then the path, the space left there and the setting that moves it
    smk = SimpleNamespace(**vars(rule(tmp_path)), config={"results_dir": "results", "store": {"uri": "file://store"}})
    assert "no space left on the device holding /ckpt/job/checkpoint.tmp (" in rule_runner.disk_full(failed.value, smk)


# A rule script whose process ends as run_rule ends it (without the modules' teardown): what Python's own end does
# must still happen.
ENDING_RULE = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    from types import SimpleNamespace
    from dogbreed.runtime.rule_runner import run_rule

    here = Path(sys.argv[1])
    left_open = open(here / "left-open.txt", "w")  # never closed by the script

    def main(smk):
        left_open.write("kept")
        threading.Thread(target=lambda: (time.sleep(0.5), (here / "thread.txt").write_text("joined"))).start()
        atexit.register(lambda: (here / "atexit.txt").write_text("ran"))
        if sys.argv[2] == "fail":
            raise ValueError("a bad value")
        return "done"

    run_rule(main, SimpleNamespace(rule="check", output=[], log=[str(here / "check.log")]))
""")


@pytest.mark.parametrize("outcome, status", [("succeed", 0), ("fail", 1)])
def test_a_rule_scripts_process_ends_with_its_status_and_loses_nothing(tmp_path, outcome, status):
    (tmp_path / "rule.py").write_text(ENDING_RULE)
    ended = subprocess.run(
        [sys.executable, str(tmp_path / "rule.py"), str(tmp_path), outcome], capture_output=True, text=True, timeout=120
    )
    assert ended.returncode == status, ended.stderr
    assert (tmp_path / "left-open.txt").read_text() == "kept"  # flushed and closed at the script's end
    assert (tmp_path / "thread.txt").read_text() == "joined" and (tmp_path / "atexit.txt").read_text() == "ran"
    said = r"✓ check \(\d+ s\): done" if status == 0 else "ValueError: a bad value"
    assert re.search(said, ended.stderr) and re.search(said, (tmp_path / "check.log").read_text())


# A rule script (run_rule) whose rule runs a slow training job of the local backend (a real subprocess).
SLOW_RULE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from types import SimpleNamespace
    from dogbreed.backends.local import LocalBackend
    from dogbreed.runtime.rule_runner import run_rule

    here = Path(sys.argv[1])
    def main(smk):
        channels = {"train": f"file://{here}/train", "valid": f"file://{here}/train"}
        LocalBackend({}).train("slow", {}, channels, here / "jobs", here / "source", echo=False)

    run_rule(main, SimpleNamespace(rule="train", output=[str(here / "out")], log=[str(here / "train.log")]))
""")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_rule_and_its_job_in_one_line(tmp_path, signum):
    (tmp_path / "source").mkdir()
    (tmp_path / "source/train.py").write_text(
        "import time\nprint('epoch=1 valid_accuracy=0.5', flush=True)\ntime.sleep(600)\n"
    )
    (tmp_path / "train").mkdir()
    (tmp_path / "rule.py").write_text(SLOW_RULE)
    script = subprocess.Popen(
        [sys.executable, str(tmp_path / "rule.py"), str(tmp_path)], stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "jobs/slow/log.txt"
    while not (log.is_file() and "epoch=1" in log.read_text()):
        assert script.poll() is None, script.stderr.read()
        time.sleep(0.1)
    job = psutil.Process(script.pid).children()
    script.send_signal(signum)
    err = script.communicate(timeout=60)[1]
    assert script.returncode == 130 and "Traceback" not in err, err
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (
        f"rule train stopped by {name}: stopped training job slow, checkpoints kept; run the same command again to resume"
    )
    _gone, alive = psutil.wait_procs(job, timeout=10)
    assert not alive and (tmp_path / "jobs/slow/checkpoints").is_dir()


def test_a_signal_the_run_was_started_ignoring_stops_nothing(tmp_path):
    """Under nohup (SIGHUP ignored from the start), a closed terminal's SIGHUP leaves the rule running."""
    (tmp_path / "source").mkdir()
    (tmp_path / "source/train.py").write_text("import time\nprint('epoch=1', flush=True)\ntime.sleep(600)\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "rule.py").write_text(SLOW_RULE)
    script = subprocess.Popen(
        ["nohup", sys.executable, str(tmp_path / "rule.py"), str(tmp_path)], stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "jobs/slow/log.txt"
    while not (log.is_file() and "epoch=1" in log.read_text()):
        assert script.poll() is None, script.stderr.read()
        time.sleep(0.1)
    script.send_signal(signal.SIGHUP)
    with pytest.raises(subprocess.TimeoutExpired):
        script.wait(timeout=2)  # still running: nothing stopped it
    script.send_signal(signal.SIGTERM)
    assert "stopped by SIGTERM" in script.communicate(timeout=60)[1]


def test_a_recorded_process_is_found_again_after_a_clock_step_and_a_reused_pid_is_not(tmp_path):
    """The local endpoint's server and Snakemake's runs are recorded as (pid, start time); psutil reckons start
    times from the wall clock, so a clock step since (a VM resumed, NTP) moves them. Teardown must still stop
    its server, and never a process that was given the pid since."""
    from dogbreed.backends.local import LocalBackend

    server = subprocess.Popen(  # stands in for the server: what teardown checks is its pid and command line
        [sys.executable, "-c", "import time; time.sleep(600)", "--listen=127.0.0.1:59999"], start_new_session=True
    )
    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        started = psutil.Process(server.pid).create_time()
        state = {"endpoint_name": "e", "url": "http://127.0.0.1:59999", "pid_started": started - 3600}
        assert run_guard.is_recorded_process(server.pid, started - 3600, "--listen=127.0.0.1:59999")
        assert not run_guard.is_recorded_process(other.pid, started - 3600, "--listen=127.0.0.1:59999")
        assert LocalBackend({}).stop_server({**state, "pid": other.pid}, tmp_path) == []  # not ours: untouched
        assert other.poll() is None
        assert LocalBackend({}).stop_server({**state, "pid": server.pid}, tmp_path) == [
            f"e (http://127.0.0.1:59999, pid {server.pid})"
        ]
        assert server.wait(10) is not None
    finally:
        for process in (server, other):
            process.kill()
            process.wait()
