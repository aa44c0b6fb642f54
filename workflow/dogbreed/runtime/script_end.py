"""How a script's process ends here: as Python ends it, less the teardown of its modules (half a second with MLflow or
pandas imported, a second with torch: BENCHMARKS.md), which nothing needs once the script is done. A rule script's
process (rule_runner.run_rule) and a job forked by the job launcher (backends/job_launcher.py) end this way.
Standard library only: the job launcher, a process of its own, imports it and nothing else of the package."""

import atexit
import gc
import os
import sys
import threading


def script_end():
    """What Python does when a script ends, less tearing down its modules: non-daemon threads joined, atexit
    handlers run (logging's flush, a job launcher's close), the script's own objects freed (a file it left open is
    flushed and closed), the standard streams flushed."""
    threading._shutdown()  # the interpreter's own step at exit: wait for the non-daemon threads
    atexit._run_exitfuncs()
    sys.modules["__main__"].__dict__.clear()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def exit_now(code: int):
    """The script's end (script_end), then the process's, with code as its exit status."""
    script_end()
    os._exit(code)
