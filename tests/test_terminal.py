"""The workflow's logger plugin (profiles/default): Snakemake's errors through, its chatter and its restatement of a
failed rule out, the failed rule's log and how its process died last."""

import io
import logging
import sys
from types import SimpleNamespace

from conftest import REPO
from snakemake_interface_logger_plugins.common import LogEvent

sys.path.insert(0, str(REPO / "workflow/plugins"))
from snakemake_logger_plugin_dogbreed import LogHandler


def record(message, level=logging.INFO, **extra):
    made = logging.LogRecord("snakemake", level, __file__, 1, message, None, None)
    made.__dict__.update(extra)
    return made


def test_the_terminal_keeps_errors_and_ends_a_failure_with_the_rules_log():
    settings = SimpleNamespace(
        stdout=False, quiet=set(), show_failed_logs=False, debug_dag=False, verbose=False, dryrun=False,
        printshellcmds=False,
    )  # fmt: skip
    handler = LogHandler(settings, None)
    handler.stream = io.StringIO()
    for each in (
        record("Building DAG of jobs..."),
        record("Select jobs to execute..."),
        record("rule x:", event=LogEvent.JOB_INFO, rule_name="x"),
        record("Command 'python x.py' died with <Signals.SIGKILL: 9>.", logging.ERROR),  # CalledProcessError
        record("Error in rule x", logging.ERROR, event=LogEvent.JOB_ERROR, rule_name="train", log=["logs/train.log"]),
        record("Removing output files of failed job train since they might be corrupted:", logging.WARNING),
        record("Exiting because a job execution failed. Look above for error messages", logging.ERROR),
    ):
        each.msg = ("CalledProcessError in file rules.smk: " if "died with" in each.msg else "") + each.msg
        handler.emit(each)
    assert handler.stream.getvalue() == "rule train failed (killed by SIGKILL); its log: logs/train.log\n"
    handler.emit(record("MissingInputException in rule all: Missing input files", logging.ERROR))
    assert "MissingInputException" in handler.stream.getvalue()  # Snakemake's own errors come through
