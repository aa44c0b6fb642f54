"""The feature cache in the workflow (docs/architecture.md §2): when the backbone is frozen, a job of the
configured backend (scripts/feature_cache.py) computes its features once, the store keeps them as two
channels under features/<key>/, and every tuning trial and the final training train the head on them.

The key is the extraction job's identity (jobspec.py): the settings the features depend on, the content of the
train and valid images (the job's expect_data), the code the features come from (not train.py) and where the
job runs. The same key finds the cache in the store again, also from another results folder.
"""

import tarfile
import tempfile
from pathlib import Path

import job_contract as contract

from dogbreed.data import store
from dogbreed.runtime import naming

CHANNELS = ("train", "valid")
# what a complete cache holds, per channel (scripts/feature_cache.py writes them)
EXPECTED_FILES = contract.FEATURE_CHANNEL_FILES


def cached_channels(store_uri, key) -> dict:
    """{channel: uri} of the cache with this key in the store, or {} when it is not (all) there."""
    uris = {
        channel: store.canonical(store.join(store_uri, naming.feature_cache_prefix(key), channel))
        for channel in CHANNELS
    }
    for channel, uri in uris.items():
        if not EXPECTED_FILES[channel] <= store.list_files(uri):
            return {}
    return uris


def extract(backend, job, store_uri, jobs_dir, source_dir) -> dict:
    """The feature channels for this extraction job (jobspec.JobSpec): found in the store, or made by a job of
    the backend and published there. Returns {"channels", "digests", "key", "job_name", "reused", "seconds"}
    (and the job's "log" when it ran); digests: what the training jobs check the feature channels against."""
    key = job.key
    found = cached_channels(store_uri, key)
    if found:
        print(f"feature cache {key} is in the store already: {found['train']}")
        return {
            "channels": found,
            "digests": {c: store.digest(found[c]) for c in CHANNELS},
            "key": key,
            "job_name": job.name,
            "reused": True,
            "seconds": 0.0,
        }
    result = backend.train(
        job.name, job.hyperparameters, job.channels, jobs_dir, source_dir, entry_point="feature_cache.py"
    )
    uris, digests = {}, {}
    with tempfile.TemporaryDirectory() as unpacked:
        # every backend hands the job's SM_MODEL_DIR back as a local model.tar.gz
        with tarfile.open(store.local_path(result["model_uri"])) as archive:
            archive.extractall(unpacked, filter="data")
        for channel in CHANNELS:
            digests[channel] = contract.channel_digest(Path(unpacked) / channel)
            uris[channel] = backend.upload(
                Path(unpacked) / channel, store.join(store_uri, naming.feature_cache_prefix(key), channel)
            )["uri"]
    store.local_path(result["model_uri"]).unlink(missing_ok=True)  # published: the local copy is not needed
    print(f"feature cache {key}: {uris['train']} and {uris['valid']} ({result['seconds']} s)")
    return {
        "channels": uris,
        "digests": digests,
        "key": key,
        "job_name": job.name,
        "reused": False,
        "seconds": result["seconds"],
        "log": result.get("log"),
    }
