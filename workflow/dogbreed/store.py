"""The data store: where channels live for training jobs. `file://` folders now; S3 joins later.

sync() makes the store copy equal to a local folder, copying only files whose content is not there
yet and removing files that are no longer in the local folder.
"""
import hashlib
import os
import shutil
from pathlib import Path

from tqdm import tqdm


class StoreError(RuntimeError):
    pass


def local_path(uri: str) -> Path:
    """file:///abs/path, file://relative/path or a plain path → Path."""
    if uri.startswith("file://"):
        return Path(uri[len("file://"):]).expanduser()
    if "://" in uri:
        raise StoreError(f"store URI {uri!r}: only file:// stores are supported so far")
    return Path(uri).expanduser()


def file_uri(path: Path) -> str:
    return Path(path).resolve().as_uri()


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def sync(local_dir, uri: str) -> dict:
    """Mirror local_dir into the store folder named by uri; returns counts and the canonical URI."""
    source, target = Path(local_dir), local_path(uri)
    target.mkdir(parents=True, exist_ok=True)
    wanted = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    uploaded = skipped = 0
    for name in tqdm(sorted(wanted), desc=f"upload {source.name}", unit="file"):
        src, dst = source / name, target / name
        if dst.is_file() and dst.stat().st_size == src.stat().st_size and _sha256(dst) == _sha256(src):
            skipped += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        partial = dst.with_name(dst.name + ".partial")
        shutil.copyfile(src, partial)
        os.replace(partial, dst)  # atomic: an interrupted sync never leaves a half file under its name
        uploaded += 1
    removed = 0
    for path in sorted(target.rglob("*"), reverse=True):
        relative = path.relative_to(target).as_posix()
        if path.is_file() and relative not in wanted:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return {"uri": file_uri(target), "uploaded": uploaded, "unchanged": skipped, "removed": removed}
