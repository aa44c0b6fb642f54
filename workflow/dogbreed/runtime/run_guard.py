"""What a killed Snakemake leaves behind, and how the plain rerun still works.

`kill -9` of Snakemake (or a closed terminal, the OOM killer) kills only Snakemake: each job runs in a
shell of its own and goes on without it, writing outputs no one records, and Snakemake's locks stay,
so the next run refuses to start ("Directory cannot be locked ... --unlock"). Here:
  - every rule script watches the Snakemake that started it, and when it is gone stops as Snakemake's
    own SIGTERM would stop it: a training job or tuning trial it launched is stopped with it (its
    checkpoint kept, so the rerun resumes);
  - each run records itself (pid and start time) when it starts and forgets itself when it ends; the
    next run removes the locks when every recorded run is provably dead, never while one still runs.
"""

import json
import os
import signal
import threading
import time
from pathlib import Path

RUNS_DIR = Path(".snakemake/dogbreed-runs")  # relative to the working directory, as Snakemake's own
LOCKS_DIR = Path(".snakemake/locks")


def _alive(pid: int, started: float) -> bool:
    import psutil

    try:
        process = psutil.Process(pid)
        # the same process (pids are reused), and not a zombie its parent has yet to reap
        return abs(process.create_time() - started) < 1 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


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


def _snakemake_process():
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

    snakemake = _snakemake_process()
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
