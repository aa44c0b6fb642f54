"""Names derived from what a job depends on: equal inputs → equal name (a rerun resumes or attaches),
changed inputs → a new name (no collision with, or resumption of, stale work)."""
import hashlib
import json
from pathlib import Path


def stable_hash(value, length=10) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def code_digest(files) -> str:
    """Hash of the given source files (the code a training job runs), by name and content."""
    digest = hashlib.sha256()
    for path in sorted(Path(f) for f in files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]
