"""Every name the workflow gives a job, a study, a dataset or an endpoint: this module alone builds them.

Names derive from what a thing is: equal inputs → equal name (a rerun resumes, or attaches to the job that is
running or done), changed inputs → a new name (no collision with, or resumption of, stale work). What goes into
a job's identity is the job spec's to say (jobspec.py); this module turns an identity into a name."""

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path


def stable_hash(value, length=10) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def code_digest(files) -> str:
    """Hash of the given source files (the code a job runs), by name and content."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


# a job kind's name prefix: SageMaker tuning job names have at most 32 characters, training jobs 63
PREFIX = {"trial": "tune", "train": "train", "features": "features"}


def job_name(kind: str, identity) -> str:
    """A job's name from its identity (jobspec.JobSpec): for kind "trial", the tuning study's."""
    return f"{PREFIX[kind]}-{stable_hash(identity)}"


def key_of(name: str) -> str:
    """The identity's hash in a job's name (the feature cache's key in the store)."""
    return name.rsplit("-", 1)[1]


def trial_name(study: str, number: int) -> str:
    """A tuning trial's training job on the local backends (a retried trial keeps its name, and resumes)."""
    return f"{study}-trial-{number:03d}"


def attempt_name(job: str, attempt: int) -> str:
    """SageMaker never reuses a job name: after a failed or stopped job, the next attempt's."""
    return job if attempt == 1 else f"{job}-{attempt}"


def warm_start_name(study: str, number: int) -> str:
    """SageMaker's tuning job that adds trials to a study (warm-started from the ones before)."""
    return study if number == 0 else f"{study}-w{number}"


def dataset_prefix(digests: dict) -> str:
    """The store prefix of a dataset, from its content (each channel's files and their hashes, the split
    included): other data settings never share a prefix, the same data always does."""
    return f"datasets/{stable_hash(digests, 16)}"


def feature_cache_prefix(key: str) -> str:
    """Where the store keeps the feature cache of this key (jobspec: the extraction job's identity)."""
    return f"features/{key}"


def endpoint_name(source_id: str, results_dir) -> str:
    """data + results folder: a rehearsal and its cloud run, or two runs on one dataset, never share an endpoint."""
    return f"dogbreed-{source_id[:8]}-{stable_hash(str(Path(results_dir).resolve()), 6)}"


def _stamp(format_: str) -> str:
    return datetime.now(UTC).strftime(format_)


def model_name(endpoint: str) -> str:
    """A SageMaker model behind an endpoint: one per deploy (a redeploy makes a new one)."""
    return f"{endpoint}-{_stamp('%Y%m%d-%H%M%S')}"


def container_name(endpoint: str) -> str:
    """local_container's endpoint container (one per deploy)."""
    return f"{endpoint}-{_stamp('%H%M%S')}"
