"""The feature cache in the workflow (docs/architecture.md §2): when the backbone is frozen, a job of the
configured backend (scripts/feature_cache.py) computes its features once, the store keeps them as two
channels under features/<key>/, and every tuning trial and the final training train the head on them.

The key covers all that makes the features what they are: the architecture, weights, preprocessing,
views and seed, the contents of the train and valid images (their sha256 from the manifest) and the
code the features come from (FEATURE_CODE in workflow/rules/common.smk: not train.py). The same key finds the cache in the store again, also from another results folder.
"""
import csv
import tarfile
import tempfile
from pathlib import Path

from dogbreed import naming, store

CHANNELS = ("train", "valid")
# what a complete cache holds, per channel (scripts/feature_cache.py writes them)
EXPECTED_FILES = {"train": {"features.pt", "features.json", "backbone.pth"}, "valid": {"features.pt", "features.json"}}


def image_digest(manifest_csv) -> str:
    """The contents of the train and valid channels: every image's path and sha256."""
    with open(manifest_csv, newline="") as handle:
        rows = sorted((r["split"], r["path"], r["sha256"]) for r in csv.DictReader(handle) if r["split"] in CHANNELS)
    return naming.stable_hash(rows, 16)


def cache_key(job_hyperparameters, manifest_csv, code_files) -> str:
    return naming.stable_hash([job_hyperparameters, image_digest(manifest_csv), naming.code_digest(code_files)], 12)


def cached_channels(store_uri, key) -> dict:
    """{channel: uri} of the cache with this key in the store, or {} when it is not (all) there."""
    uris = {channel: store.canonical(store.join(store_uri, "features", key, channel)) for channel in CHANNELS}
    for channel, uri in uris.items():
        if not EXPECTED_FILES[channel] <= store.list_files(uri):
            return {}
    return uris


def extract(backend, job_hyperparameters, image_channels, manifest_csv, store_uri, jobs_dir, source_dir, code_files) -> dict:
    """The feature channels for these images and settings: found in the store, or made by a job of the
    backend and published there. Returns {"channels", "key", "job_name", "reused", "seconds"} (and the
    job's "log" when it ran)."""
    key = cache_key(job_hyperparameters, manifest_csv, code_files)
    job_name = f"features-{key}"
    found = cached_channels(store_uri, key)
    if found:
        print(f"feature cache {key} is in the store already: {found['train']}")
        return {"channels": found, "key": key, "job_name": job_name, "reused": True, "seconds": 0.0}
    result = backend.train(job_name, job_hyperparameters, {c: image_channels[c] for c in CHANNELS}, jobs_dir,
                           source_dir, entry_point="feature_cache.py")
    uris = {}
    with tempfile.TemporaryDirectory() as unpacked:
        # every backend hands the job's SM_MODEL_DIR back as a local model.tar.gz
        with tarfile.open(store.local_path(result["model_uri"])) as archive:
            archive.extractall(unpacked, filter="data")
        for channel in CHANNELS:
            uris[channel] = backend.upload(Path(unpacked) / channel, store.join(store_uri, "features", key, channel))["uri"]
    store.local_path(result["model_uri"]).unlink(missing_ok=True)  # published: the local copy is not needed
    print(f"feature cache {key}: {uris['train']} and {uris['valid']} ({result['seconds']} s)")
    return {"channels": uris, "key": key, "job_name": job_name, "reused": False, "seconds": result["seconds"],
            "log": result.get("log")}
