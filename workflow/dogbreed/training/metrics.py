"""Reading a job's output lines, the way SageMaker does: the job contract's epoch line (regexes from the
config's objective, or the contract's per metric), its NOTE lines for a person, its SETUP_FAILED marker."""

import re

import job_contract as contract

# the contract's SETUP_FAILED line, and Python's own word for a broken environment: a job that fails this
# way would fail the same with any hyperparameters (anywhere in a line: container logs prefix each line
# with the host's name)
SETUP_FAILURE = re.compile(
    rf"(?:{re.escape(contract.SETUP_FAILED)}(.+)|(?:^|\s)((?:ModuleNotFoundError|ImportError): .+))$", re.MULTILINE
)
parse_epoch_line = contract.parse_epoch_line


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
    """An epoch line, a line the job meant for a person (NOTE), or its setup failure."""
    return bool(contract.EPOCH_LINE.match(line) or line.startswith((contract.NOTE, contract.SETUP_FAILED)))


def metric_definitions(objective: dict) -> list:
    """SageMaker's metric_definitions: the objective with the config's regex (the one the local tuner uses),
    the other epoch metrics with the contract's."""
    found = [{"Name": objective["metric"], "Regex": objective["regex"]}]
    return found + [
        {"Name": name, "Regex": contract.metric_regex(name)}
        for name in ("train_loss", "train_accuracy", "valid_loss", "valid_accuracy")
        if name != objective["metric"]
    ]
