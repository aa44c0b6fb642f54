"""Fetch stage: bring `data_source` into data/raw/<hash of the source>/ and say where the images are.

Sources: `demo` (generated offline), an http(s) URL (streamed, resumable, size and checksum checked),
an s3:// archive or prefix (boto3, standard AWS credentials), a local .zip / .tar(.gz) archive
(extracted safely), or a local folder (used in place, not copied).
"""

import hashlib
import json
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import job_contract as contract
import requests
from tqdm import tqdm

from dogbreed.data import demo_data, store

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class FetchError(RuntimeError):
    pass


def source_kind(source: str) -> str:
    if source == "demo":
        return "demo"
    if source.startswith(("http://", "https://")):
        return "url"
    if source.startswith("s3://"):
        return "s3"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file() and source.lower().endswith(ARCHIVE_SUFFIXES):
        return "archive"
    if path.exists():
        raise FetchError(f"data_source {source} is a file but not a .zip/.tar/.tar.gz archive")
    raise FetchError(
        f"data_source {source!r} is neither 'demo', a URL, an s3:// URI nor an existing "
        f"file or folder: check the path (relative paths are taken from the workflow folder)"
    )


def normalised_source(source: str) -> str:
    """The source as a stable string: local paths made absolute, so `./x` and `x` are one source."""
    if source_kind(source) in ("folder", "archive"):
        return str(Path(source).expanduser().resolve())
    return source


def source_hash(source: str) -> str:
    return hashlib.sha256(normalised_source(source).encode()).hexdigest()[:16]


def source_fingerprint(source: str) -> str:
    """Changes when a local source's content changes (names, sizes, mtimes), so Snakemake refetches.

    Remote sources are pinned by URL and optional data_sha256 instead.
    """
    kind = source_kind(source)
    if kind not in ("folder", "archive"):
        return ""
    path = Path(source).expanduser().resolve()
    digest = hashlib.sha256()
    files = [path] if kind == "archive" else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        info = file.stat()
        digest.update(f"{file.relative_to(path.parent)}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def download(url: str, target: Path, timeout=30) -> Path:
    """Stream `url` to `target` with a progress bar; resume a partial download; check its size."""
    partial = target.with_name(target.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = requests.get(url, stream=True, timeout=timeout, headers=headers)
    except requests.RequestException as error:
        raise FetchError(
            f"could not download {url}: {error}. This machine may be offline or the host unreachable: "
            f"download the file elsewhere and run with --config data_source=/path/to/the/file.zip"
        ) from error
    with response:
        if response.status_code == 416 and have:  # the partial file is already complete
            partial.rename(target)
            return target
        if response.status_code not in (200, 206):
            raise FetchError(f"downloading {url} failed: HTTP {response.status_code} {response.reason}")
        if response.status_code == 200:
            have = 0  # the server ignored the Range header: start over
        remaining = response.headers.get("Content-Length")
        expected = have + int(remaining) if remaining is not None else None
        with (
            open(partial, "ab" if have else "wb") as handle,
            tqdm(
                total=expected, initial=have, unit="B", unit_scale=True, desc=f"download {Path(url).name}"
            ) as progress,
        ):
            try:
                for block in response.iter_content(chunk_size=1 << 20):
                    handle.write(block)
                    progress.update(len(block))
            except requests.RequestException as error:
                raise FetchError(f"download of {url} broke off ({error}); rerun to resume it") from error
    size = partial.stat().st_size
    if expected is not None and size != expected:
        raise FetchError(f"download of {url} is incomplete: {size} of {expected} bytes; rerun to resume it")
    partial.rename(target)
    return target


def _safe_member_path(name: str, target: Path) -> Path:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts or name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise FetchError(f"archive member {name!r} would land outside the extraction folder; refusing the archive")
    return target.joinpath(*parts)


# What an archive may unpack to (data.extraction): dogImages' 1.1 GB zip unpacks to ~1.1 GB of JPEGs in
# files of a few MB at most, compressed hardly at all; a "zip bomb" unpacks a few MB to GBs of zeros.
EXTRACTION_LIMITS = {"max_total_bytes": 20 * 10**9, "max_member_bytes": 10**9, "max_ratio": 100}
RATIO_MIN_BYTES = 10**6  # a small file may compress well (a text file); the ratio is checked above this


def check_extraction(archive: Path, members, limits: dict):
    """members: [(name, unpacked bytes, packed bytes or None)] from the archive's own headers (zipfile
    never writes more than a member's header size). Refuses a bomb before anything is written."""
    limits = {**EXTRACTION_LIMITS, **(limits or {})}
    hint = "if the archive is genuine, raise data.extraction.{} in the config"
    for name, size, packed in members:
        if size > limits["max_member_bytes"]:
            raise FetchError(
                f"{archive}: member {name!r} would unpack to {size:,} bytes, over "
                f"{limits['max_member_bytes']:,}; refusing the archive ({hint.format('max_member_bytes')})"
            )
        if packed is not None and size > RATIO_MIN_BYTES and size > limits["max_ratio"] * max(packed, 1):
            raise FetchError(
                f"{archive}: member {name!r} unpacks {packed:,} bytes to {size:,} (over "
                f"{limits['max_ratio']}x): a decompression bomb? Refusing the archive ({hint.format('max_ratio')})"
            )
    total = sum(size for _, size, _ in members)
    if total > limits["max_total_bytes"]:
        raise FetchError(
            f"{archive} would unpack to {total:,} bytes, over {limits['max_total_bytes']:,}; refusing "
            f"the archive ({hint.format('max_total_bytes')})"
        )
    archive_bytes = archive.stat().st_size
    if total > RATIO_MIN_BYTES and total > limits["max_ratio"] * archive_bytes:
        raise FetchError(
            f"{archive} ({archive_bytes:,} bytes) would unpack to {total:,} (over {limits['max_ratio']}x): "
            f"a decompression bomb? Refusing the archive ({hint.format('max_ratio')})"
        )


def extract(archive: Path, target: Path, limits: dict | None = None) -> Path:
    """Extract into `target` (all or nothing): members escaping the folder, links, or sizes over the
    extraction limits refuse the archive before anything is written."""
    temporary = target.with_name(target.name + ".tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    name = archive.name.lower()
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                members = bundle.infolist()
                for member in members:
                    _safe_member_path(member.filename, temporary)
                    if stat.S_ISLNK(member.external_attr >> 16):
                        raise FetchError(f"archive member {member.filename!r} is a symbolic link; refusing the archive")
                check_extraction(archive, [(m.filename, m.file_size, m.compress_size) for m in members], limits)
                for member in tqdm(members, desc=f"extract {archive.name}", unit="file"):
                    bundle.extract(member, temporary)
        else:
            with tarfile.open(archive) as bundle:
                members = bundle.getmembers()  # reads the headers through the stream: nothing written yet
                for member in members:
                    _safe_member_path(member.name, temporary)
                    if member.issym() or member.islnk():
                        raise FetchError(f"archive member {member.name!r} is a link; refusing the archive")
                check_extraction(archive, [(m.name, m.size, None) for m in members], limits)
                bundle.extractall(temporary, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise FetchError(
            f"{archive} is not a readable archive ({error}); delete it and rerun to fetch it again"
        ) from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    shutil.rmtree(target, ignore_errors=True)
    temporary.rename(target)
    return target


def verify_checksum(path: Path, expected: str):
    if expected:
        actual = contract.sha256_file(path)
        if actual.lower() != expected.lower():
            raise FetchError(
                f"{path} has sha256 {actual}, but data_sha256 in config says {expected}. "
                f"Delete it and rerun if the download was damaged, or correct data_sha256."
            )


def fetch(source: str, raw_dir, data_sha256: str = "", demo_seed: int = 0, limits: dict | None = None) -> dict:
    """Fetch `source` into raw_dir and return {"source", "kind", "root"}; root holds the images.
    limits: data.extraction, what an archive may unpack to."""
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    kind = source_kind(source)
    if kind == "demo":
        shutil.rmtree(raw_dir / "demo", ignore_errors=True)
        root = demo_data.generate(raw_dir / "demo", seed=demo_seed)
    elif kind == "folder":
        root = Path(source).expanduser().resolve()
    elif kind == "archive":
        archive = Path(source).expanduser().resolve()
        verify_checksum(archive, data_sha256)
        root = extract(archive, raw_dir / "extracted", limits)
    elif kind == "url":
        filename = Path(source.split("?")[0]).name or "download"
        archive = raw_dir / filename
        if not archive.exists():
            download(source, archive)
        verify_checksum(archive, data_sha256)
        if not filename.lower().endswith(ARCHIVE_SUFFIXES):
            raise FetchError(f"{source} did not name a .zip/.tar(.gz) archive; point data_source at one")
        root = extract(archive, raw_dir / "extracted", limits)
    else:  # s3://bucket/key.zip (an archive) or s3://bucket/prefix (a folder of images)
        if source.lower().endswith(ARCHIVE_SUFFIXES):
            archive = raw_dir / Path(source).name
            if not archive.exists():
                store.S3Store().download_object(source, archive)
            verify_checksum(archive, data_sha256)
            root = extract(archive, raw_dir / "extracted", limits)
        else:
            root = raw_dir / "s3"
            store.S3Store().download(source, root)
    return {"source": source, "kind": kind, "root": str(root)}


def write_fetched(info: dict, path):
    Path(path).write_text(json.dumps(info, indent=2))
