"""Snakemake's terminal for this workflow (`logger: [dogbreed]` in profiles/default): the rules' own lines and
Snakemake's warnings and errors, without its chatter.

Every rule script prints one line per job (what it did, how long it took: dogbreed.runtime.rule_runner) and keeps
its whole output in the rule's log file; so this handler drops Snakemake's per-job blocks (input lists, params
dumps, reasons), its progress counts and scheduling lines, and, after a failed job, its restatement of the failure
(the rule's exit status, the temporary script's path), so that the failing rule's one-line reason and its log's
path are the last lines on screen. Everything else (a missing input, a syntax error, a lock, a dry run's plan)
is formatted as Snakemake formats it. `--workflow-profile profiles/verbose` runs without this handler.

Found by Snakemake's plugin registry as a package named snakemake_logger_plugin_*: the Makefile puts this folder
on the venv's path (a .pth file)."""

import re
import sys
from logging import INFO, LogRecord

from snakemake.logging import DefaultFilter, DefaultFormatter, get_event
from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.common import LogEvent

# the banner, the per-job blocks and the progress counts (a dry run keeps its plan: RUN_INFO, the job table)
SILENT_EVENTS = {
    LogEvent.WORKFLOW_STARTED,
    LogEvent.JOB_INFO,
    LogEvent.JOB_STARTED,
    LogEvent.JOB_FINISHED,
    LogEvent.GROUP_INFO,
    LogEvent.SHELLCMD,
    LogEvent.PROGRESS,
    LogEvent.RESOURCES_INFO,
    LogEvent.RUN_INFO,
}
# Snakemake's informational lines that say nothing a user acts on (matched at their start)
CHATTER = (
    "Assuming unrestricted shared filesystem usage",
    "Building DAG of jobs",
    "Using shell:",
    "Provided cores:",
    "Rules claiming more threads will be scaled down",
    "Conda environments: ignored",
    "Select jobs to execute",
    "Execute ",
    "Complete log(s):",
    "Elapsed time:",
    "Config file config.yaml is extended by additional config specified via the command line",
)
# a rule's process that exited with an error: the rule has said why, and JOB_ERROR gives its log
RULE_PROCESS_FAILED = "CalledProcessError in file"
# after a failed job: Snakemake's restatement of it, which would push the rule's own line off the screen
AFTER_FAILURE = (
    "Removing output files of failed job",
    "Shutting down, this might take some time",
    "Exiting because a job execution failed",
    "At least one job did not complete successfully",
)


def _how_it_died(message: str) -> str:
    """' (killed by SIGKILL)' or ' (exit status 139)' from the CalledProcessError of a rule's process, when it did
    not end through the rule script's own error handling (exit status 1, or 130 when a signal stopped it)."""
    if signal := re.search(r"died with <Signals\.(\w+)", message):
        return f" (killed by {signal.group(1)})"
    status = re.search(r"exit status (-?\d+)", message)
    return f" (exit status {status.group(1)})" if status and status.group(1) not in ("1", "130") else ""


class LogHandler(LogHandlerBase):
    def __post_init__(self) -> None:
        settings = self.common_settings
        self.stream = sys.stdout if settings.stdout else sys.stderr
        self.formatter = DefaultFormatter(settings.quiet, settings.show_failed_logs)
        self.default_filter = DefaultFilter(
            settings.quiet, settings.debug_dag, settings.verbose, settings.dryrun, settings.printshellcmds
        )
        self.a_job_failed = False
        self.how_it_died = ""  # a rule's process killed (OOM, a signal) never said why itself

    def emit(self, record: LogRecord) -> None:
        event = get_event(record)
        if event == LogEvent.JOB_ERROR:
            # the rule script has printed its reason; the log is where the rest is
            self.a_job_failed = True
            logs = ", ".join(str(log) for log in getattr(record, "log", None) or [])
            died, self.how_it_died = self.how_it_died, ""
            self._write(f"rule {record.rule_name} failed{died}" + (f"; its log: {logs}" if logs else ""))
            return
        if event in SILENT_EVENTS and not (self.common_settings.dryrun and event == LogEvent.RUN_INFO):
            return
        if not self.default_filter.filter(record):
            return
        message = str(record.msg)
        if RULE_PROCESS_FAILED in message:
            self.how_it_died = _how_it_died(message)
            return
        if event is None and record.levelno <= INFO and message.startswith(CHATTER):
            return
        if self.a_job_failed and any(part in message for part in AFTER_FAILURE):
            return
        text = self.format(record)
        if text.strip():
            self._write(text)

    def _write(self, text):
        try:
            self.stream.write(text.rstrip("\n") + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal (SIGHUP under nohup) must not fail the run
            pass

    @property
    def writes_to_stream(self) -> bool:
        return True

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
