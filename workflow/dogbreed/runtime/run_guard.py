"""How a stopped Snakemake stops its work, and how the plain rerun resumes it.

A signal to Snakemake alone (SIGTERM from `kill`, `timeout`, systemd or `docker stop`; SIGHUP from a closed
terminal; SIGINT) is handled like Ctrl-C: Snakemake's own SIGTERM handling would wait for the running jobs to
finish (a tuning study's next trials included), so stop_jobs_on_signals passes the signal to the rule scripts
now. A rule script stops what it runs (a training job, a study's parallel trials, a container) through
`stopping`, keeps the checkpoints, and says in one line what it stopped and how to resume.

`kill -9` of Snakemake (or a closed terminal, the OOM killer) kills only Snakemake: each job runs in a
shell of its own and goes on without it, writing outputs no one records, and Snakemake's locks stay,
so the next run refuses to start ("Directory cannot be locked ... --unlock"). Here:
  - every rule script watches the Snakemake that started it, and when it is gone stops as Snakemake's
    own SIGTERM would stop it: a training job or tuning trial it launched is stopped with it (its
    checkpoint kept, so the rerun resumes);
  - each run records itself (pid and start time) when it starts and forgets itself when it ends; the
    next run removes the locks when every recorded run is provably dead, never while one still runs.
"""

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

RUNS_DIR = Path(".snakemake/dogbreed-runs")  # relative to the working directory, as Snakemake's own
LOCKS_DIR = Path(".snakemake/locks")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
SHELLS = {"sh", "bash", "dash", "zsh"}  # what Snakemake runs a rule script in

# In a rule script: set when it is told to stop (a signal, or its study stopped). Every job it runs watches
# it, also those in threads other than the main one (a study's parallel trials), which no signal reaches.
stopping = threading.Event()
_jobs = threading.Condition()
_running, _stopped = set(), []  # the jobs this rule script runs now, and those it stopped


@contextlib.contextmanager
def job_running(what: str):
    """Around a job this rule script runs: one a stop interrupts (KeyboardInterrupt) is named in the rule's
    last line, and that line waits for it to end."""
    with _jobs:
        _running.add(what)
    try:
        yield
    except KeyboardInterrupt:
        _stopped.append(what)
        raise
    finally:
        with _jobs:
            _running.discard(what)
            _jobs.notify_all()


def stopped_jobs(timeout=30.0) -> list:
    """The jobs stopped, once every job still running has ended (a parallel trial stops in its own thread, after
    the main thread's interruption), or timeout seconds have passed."""
    with _jobs:
        _jobs.wait_for(lambda: not _running, timeout)
    return list(_stopped)


def stop_jobs_on_signals():
    """In Snakemake (onstart: after its scheduler made SIGTERM wait for the running jobs): SIGTERM, SIGHUP and
    SIGINT pass SIGTERM to the rule scripts, then stop Snakemake as Ctrl-C does (it waits for them to stop, and
    starts nothing new). A second signal kills what still runs."""
    try:
        for signum in handled_signals():
            signal.signal(signum, _stop_snakemake)
    except ValueError:  # not the main thread (Snakemake run through its API in a thread): its own handling
        pass


def handled_signals() -> list:
    """STOP_SIGNALS less those this process was started ignoring: under `nohup`, a closed terminal's SIGHUP
    stops nothing."""
    return [signum for signum in STOP_SIGNALS if signal.getsignal(signum) is not signal.SIG_IGN]


def _rule_scripts() -> list:
    """The rule scripts this Snakemake runs: its children, or the children of the shell it runs one in."""
    import psutil

    scripts = []
    for child in psutil.Process().children():
        try:
            scripts += child.children() if child.name() in SHELLS else [child]
        except psutil.Error:  # ended meanwhile
            continue
    return scripts


def _stop_snakemake(signum, frame):
    import psutil

    name = signal.Signals(signum).name
    if not stopping.is_set():
        stopping.set()
        for script in _rule_scripts():
            try:
                script.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _say(
            f"{name}: stopping the running jobs (their checkpoints are kept) and starting no new one; run the same "
            f"command again to resume"
        )
        raise KeyboardInterrupt(name)  # Snakemake's Ctrl-C path: it waits for its jobs and exits
    for process in psutil.Process().children(recursive=True):
        try:
            process.kill()
        except psutil.Error:
            pass
    _say(f"{name} again: killed the rule scripts and the processes they started")


def _say(line):
    try:  # the terminal that sent SIGHUP is gone: nothing to tell, and nothing to fail on
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def is_recorded_process(pid: int, started: float, command_has: str) -> bool:
    """Whether the process recorded as (pid, psutil start time) still runs: not a zombie its parent has yet to
    reap, and the same process, not another one given its pid since. Same: started then (within 1 s), or
    running a command line with `command_has` in it, since psutil reckons start times from the wall clock,
    which a clock step since the record moves."""
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(process.create_time() - started) < 1 or command_has in " ".join(process.cmdline())
    except psutil.Error:
        return False


def _alive(pid: int, started: float) -> bool:
    return is_recorded_process(pid, started, "snakemake")


def record_run():
    """At onstart: this Snakemake run holds the locks."""
    import psutil

    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    (RUNS_DIR / f"{me.pid}.json").write_text(json.dumps({"pid": me.pid, "started": me.create_time()}))


def forget_run():
    """At onsuccess / onerror: the run ended and Snakemake released its locks."""
    (RUNS_DIR / f"{os.getpid()}.json").unlink(missing_ok=True)


def remove_stale_locks():
    """Before Snakemake locks the working directory: the locks of runs that were killed go. Returns
    the message said, or None."""
    runs = []
    for path in RUNS_DIR.glob("*.json"):
        try:
            runs.append((path, json.loads(path.read_text())))
        except ValueError:  # cut short by the kill
            runs.append((path, {"pid": -1, "started": 0}))
    if not runs or any(_alive(run["pid"], run["started"]) for _, run in runs):
        return None
    locks = sorted(LOCKS_DIR.glob("*.lock"))
    for path in locks:
        path.unlink(missing_ok=True)
    for path, _ in runs:
        path.unlink(missing_ok=True)
    if not locks:
        return None
    pids = ", ".join(str(run["pid"]) for _, run in runs)
    return f"removed the locks left by a Snakemake run that was killed (pid {pids}): no Snakemake runs here now"


def snakemake_process():
    """The Snakemake process that started this rule script (its parent, or above it through a shell)."""
    import psutil

    for process in psutil.Process().parents():
        try:
            if any(Path(word).name == "snakemake" for word in process.cmdline()[:3]):
                return process
        except psutil.Error:
            continue
    return None


def stop_when_snakemake_dies(poll_seconds=1.0, grace_seconds=20.0):
    """Watch, in a daemon thread, the Snakemake that runs this rule script. When it is gone: SIGTERM to
    this process (run_rule turns it into KeyboardInterrupt, and the backends stop what they launched),
    then, if it still runs after grace_seconds, kill what it started and exit."""
    import psutil

    snakemake = snakemake_process()
    if snakemake is None:  # run by hand, or by a test
        return None

    pid, started = snakemake.pid, snakemake.create_time()

    def watch():
        while _alive(pid, started):
            time.sleep(poll_seconds)
        print(f"Snakemake (pid {pid}) is gone: stopping this job", flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_seconds)
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        os._exit(1)

    thread = threading.Thread(target=watch, name="snakemake-watch", daemon=True)
    thread.start()
    return thread
