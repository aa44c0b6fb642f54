"""Reading metrics from training logs, the way SageMaker does: regexes over the job's output lines."""
import re

EPOCH_LINE = re.compile(r"^epoch=(\d+)\s")
# scripts/train.py's SETUP_FAILED line, and Python's own word for a broken environment: a job that
# fails this way would fail the same with any hyperparameters
# (anywhere in a line: container logs prefix each line with the host's name)
SETUP_FAILURE = re.compile(r"(?:job setup failed: (.+)|(?:^|\s)((?:ModuleNotFoundError|ImportError): .+))$", re.MULTILINE)
# the lines of scripts/train.py a person wants on the terminal besides the epoch lines
SUMMARY_LINE = re.compile(r"^(?:training \S+ on |resumed from |ignoring .*checkpoint|keeping epoch |job setup failed: )")
KEY_VALUE = re.compile(r"(\w+)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)")


def parse_epoch_line(line: str):
    """`epoch=3 train_loss=0.91 ...` → {"epoch": 3, "train_loss": 0.91, ...}; None for other lines."""
    if not EPOCH_LINE.match(line):
        return None
    values = {key: float(value) for key, value in KEY_VALUE.findall(line)}
    values["epoch"] = int(values["epoch"])
    return values


def read_metric(regex: str, line: str):
    """The first group of `regex` in `line` as a float (SageMaker metric_definitions semantics), or None."""
    match = re.search(regex, line)
    if not match:
        return None
    try:
        return float(match.group(1))
    except (IndexError, ValueError):
        return None


def setup_failure(log_text: str):
    """Why a job failed before its first step (its SETUP_FAILED line, or an import error), or None."""
    match = SETUP_FAILURE.search(log_text)
    return (match.group(1) or match.group(2)).strip() if match else None


def worth_showing(line: str) -> bool:
    """An epoch line, or one of train.py's few summary lines (what it trains on, a resume, the epoch kept)."""
    return bool(EPOCH_LINE.match(line) or SUMMARY_LINE.match(line))
