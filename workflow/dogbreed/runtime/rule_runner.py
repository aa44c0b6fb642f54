"""How every rule script runs: its output kept in the rule's log file (and shown on the terminal too when Snakemake's
output is verbose), one line per job on the terminal (what it did, how long it took), and the workflow's own errors
(bad input, failed job, dead endpoint) reported as one clear line, not a traceback."""

import contextlib
import errno
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

from dogbreed.runtime import run_guard, script_end


class Tee:
    """Writes to every stream; one that fails (the log on a full disk) is dropped, the terminal kept."""

    def __init__(self, *streams):
        self.streams = list(streams)

    def write(self, text):
        for stream in list(self.streams):
            try:
                stream.write(text)
                stream.flush()
            except OSError:
                self.streams.remove(stream)
        return len(text)

    def flush(self):
        for stream in list(self.streams):
            try:
                stream.flush()
            except OSError:
                self.streams.remove(stream)

    def isatty(self):
        return False


def _interrupt(signum, frame):
    # Once: Ctrl-C reaches this script and Snakemake, which passes it on as SIGTERM; a second signal must not
    # cut short the stopping of what this script runs (a second signal to Snakemake kills a script stuck in it).
    for each in run_guard.handled_signals():
        signal.signal(each, signal.SIG_IGN)
    run_guard.stopping.set()  # the jobs in other threads (parallel trials) stop too
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stopped_line(rule, interruption: KeyboardInterrupt) -> str:
    """The one line an interrupted rule ends with: what stopped it, what it stopped, how to resume."""
    why = f" by {interruption.args[0]}" if interruption.args else ""
    stopped = run_guard.stopped_jobs()  # waits for the jobs in other threads to stop
    what = f": stopped {', '.join(stopped)}, checkpoints kept" if stopped else ""
    return f"rule {rule} stopped{why}{what}; run the same command again to resume"


def disk_full(error, snakemake=None):
    """One line for a full disk anywhere in the error's chain (an OSError, or SQLite's "database or
    disk is full" under Optuna's own assertions), naming the file, or else the rule's output folder,
    and the space left there; None when the error is something else."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            path = error.filename2 or error.filename  # a copy names its source first, its target second
            break
        if "database or disk is full" in str(error):
            path = None
            break
        error = error.__cause__ or error.__context__
    else:
        return None
    if path is None and snakemake is not None:
        path = os.path.dirname(([*snakemake.output] or [*snakemake.log])[0]) or "."
    where = Path(path or ".").resolve()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    setting = moving_setting(where, getattr(snakemake, "config", None) or {})
    return (
        f"no space left on the device holding {path} ({free / 2**20:,.0f} MiB free there): "
        f"free some space{f', or set {setting} to a bigger disk' if setting else ''}, and run again"
    )


def moving_setting(path: Path, config: dict):
    """The config key whose folder holds path (store.uri for a local store, results_dir), or None."""
    from dogbreed.data import store

    folders = [("results_dir", Path(config.get("results_dir", "results")))]
    uri = (config.get("store") or {}).get("uri")
    with contextlib.suppress(store.StoreError):  # an s3:// store fills no local disk
        folders[:0] = [("store.uri", store.local_path(uri))] if uri else []
    for key, folder in folders:
        if path == folder.resolve() or folder.resolve() in path.parents:
            return key
    return None


# Set by the Snakefile: "quiet" under the workflow's logger (profiles/default), where the terminal gets one line per
# job and the rest goes to the rule's log only; otherwise the rule's whole output is shown as it is written.
TERMINAL = "DOGBREED_TERMINAL"


_terminal = None  # while run_rule runs: the terminal and the rule's log


def say(text: str) -> None:
    """A line the user must see on the quiet terminal too: a run plan, a cost estimate, what teardown left running."""
    print(text, file=_terminal or sys.stdout)


def _seconds(elapsed: float) -> str:
    return f"{elapsed:.0f} s" if elapsed < 120 else f"{elapsed / 60:.1f} min"


def run_rule(main, snakemake):
    """Runs main(snakemake); what it returns (a short line: what the job did) goes on the job's line."""
    # Snakemake stops jobs with SIGTERM (run_guard passes its own SIGTERM, SIGHUP and SIGINT on that way), Ctrl-C
    # sends SIGINT: each turns into an exception, so a rule that launched a training job or a server stops that
    # too instead of leaving it running, and ends with one line, not a traceback.
    for signum in run_guard.handled_signals():  # not one it was started ignoring (nohup's SIGHUP)
        signal.signal(signum, _interrupt)
    # ...and when Snakemake is killed outright (kill -9), stop as if it had sent that SIGTERM
    run_guard.stop_when_snakemake_dies()
    log = open(snakemake.log[0], "w", encoding="utf-8")
    quiet, started = os.environ.get(TERMINAL) == "quiet", time.monotonic()
    if quiet:  # the rule's output to its log only; the terminal gets the lines below
        sys.stdout, sys.stderr = Tee(log), Tee(log)
    else:
        sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
    # the job's line, the reason it failed, what it stopped: on the terminal (once) and in the log
    global _terminal
    said = _terminal = Tee(sys.__stderr__, log)
    code = 0
    try:
        done = main(snakemake)
        took = _seconds(time.monotonic() - started)
        print(f"✓ {snakemake.rule} ({took})" + (f": {done}" if done else ""), file=said)
    except KeyboardInterrupt as interruption:
        print(stopped_line(snakemake.rule, interruption), file=said)
        code = 130
    except Exception as error:
        full = disk_full(error, snakemake)
        if type(error).__module__.startswith(("dogbreed", "classifier")):  # ours: its own words (a job's name, log)
            print(f"error in rule {snakemake.rule}: {error}" + (f"; {full}" if full else ""), file=said)
        elif full is not None:
            print(f"error in rule {snakemake.rule}: {full}", file=said)
        else:
            traceback.print_exc()  # to the log, and to the terminal when it is verbose
            if quiet:
                last = traceback.format_exception_only(type(error), error)[-1].strip()
                print(f"error in rule {snakemake.rule}: {last} (the traceback is in its log)", file=sys.__stderr__)
        code = 1
    finally:
        sys.stdout, sys.stderr, _terminal = sys.__stdout__, sys.__stderr__, None
        with contextlib.suppress(OSError):  # a log on a full disk: what it missed was said on the terminal (verbose)
            log.close()
    if getattr(main, "__module__", None) == "__main__":  # the rule script itself: its process ends here
        script_end.exit_now(code)
    if code:  # called from other code (a test): its exit status, as before
        sys.exit(code)
