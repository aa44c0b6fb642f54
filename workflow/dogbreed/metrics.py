"""Reading metrics from training logs, the way SageMaker does: regexes over the job's output lines."""
import re

EPOCH_LINE = re.compile(r"^epoch=(\d+)\s")
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
