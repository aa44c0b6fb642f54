"""How every rule script runs: output shown on the terminal and kept in the rule's log file, and the
workflow's own errors (bad input, failed job, dead endpoint) reported as one clear line, not a traceback."""
import signal
import sys
import traceback


class Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()

    def isatty(self):
        return False


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_rule(main, snakemake):
    # Snakemake stops jobs with SIGTERM: turn it into an exception, so a rule that launched a training
    # job or a server stops that too instead of leaving it running.
    signal.signal(signal.SIGTERM, _interrupt)
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        sys.stdout, sys.stderr = Tee(sys.__stdout__, log), Tee(sys.__stderr__, log)
        try:
            main(snakemake)
        except Exception as error:
            if type(error).__module__.startswith(("dogbreed", "classifier")):
                print(f"error in rule {snakemake.rule}: {error}", file=sys.stderr)
            else:
                traceback.print_exc()
            sys.stderr.flush()
            sys.exit(1)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__


def rule_backend(smk):
    """The backend a rule talks to, from its params. confirm_cloud comes from the config itself: it is
    permission to spend, not an input of any result, so it is kept out of params (granting it after a
    refused run must not rerun what already ran)."""
    from dogbreed.backends import get_backend

    return get_backend(smk.params.backend, {**smk.params.backend_settings, "confirm_cloud": bool(smk.config.get("confirm_cloud"))})
