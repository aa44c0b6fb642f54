"""The data store: where channels live for training jobs. A local folder (`file://`) or any S3 API
(`s3://bucket/prefix`, with `endpoint_url` for S3-compatible servers).

sync() makes the store copy equal to a local folder: it copies only files whose content is not there
yet and removes files that are no longer in the local folder. On S3 every object carries the sha256
of its content as metadata, so an interrupted sync resumes where it stopped, and big files go up in
parallel multipart uploads. Credentials come from the standard AWS chain only (environment, shared
config and credentials files, SSO, instance roles), never from the workflow's config.
"""

import contextlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import job_contract as contract
from tqdm import tqdm

MULTIPART_THRESHOLD = 64 * 2**20


class StoreError(RuntimeError):
    pass


class StoreAccessDenied(StoreError):
    """The credentials may not do that there: asking again will not help."""


def local_path(uri: str) -> Path:
    """file:///abs/path, file://relative/path or a plain path → Path."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :]).expanduser()
    if "://" in uri:
        raise StoreError(f"store URI {uri!r} is not a local folder (file://)")
    return Path(uri).expanduser()


def file_uri(path: Path) -> str:
    return Path(path).resolve().as_uri()


def canonical(uri: str) -> str:
    """The one spelling of a store location that sync() returns: file URIs absolute, s3:// as given."""
    return uri if uri.startswith("s3://") else file_uri(local_path(uri))


def join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def _local_files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def sync(local_dir, uri: str, workers=8, multipart_threshold=MULTIPART_THRESHOLD) -> dict:
    """Mirror local_dir to the store at uri; returns {"uri", "uploaded", "unchanged", "removed"}."""
    if uri.startswith("s3://"):
        return S3Store().sync(local_dir, uri, workers, multipart_threshold)
    return _sync_folder(Path(local_dir), local_path(uri))


def download(uri: str, local_dir, workers=8) -> dict:
    """Mirror the store at uri into local_dir (what SageMaker's File mode does for a channel)."""
    if uri.startswith("s3://"):
        return S3Store().download(uri, local_dir, workers)
    return _sync_folder(local_path(uri), Path(local_dir))


def digest(uri: str) -> str:
    """The job contract's channel_digest of what is stored under uri: for S3 from the sha256 every object
    carries (sync() records it), without downloading anything."""
    if not uri.startswith("s3://"):
        return contract.channel_digest(local_path(uri))
    s3 = S3Store()
    bucket, prefix = split_s3_uri(uri)
    try:
        names = sorted(n for n in s3.list_objects(bucket, prefix) if contract.is_data_file(n))
        hashes = {name: s3._stored_sha256(bucket, _key(prefix, name)) for name in names}
    except Exception as error:
        raise s3._error(error, uri) from error
    if missing := [name for name, sha in hashes.items() if not sha]:
        raise StoreError(
            f"{uri}/{missing[0]} carries no sha256 (it was not stored by this workflow's sync): "
            f"upload that folder again"
        )
    return contract.digest_of(hashes)


def list_files(uri: str) -> set:
    """The names (relative paths) of the files stored under uri; empty when there is nothing there."""
    if uri.startswith("s3://"):
        s3 = S3Store()
        bucket, prefix = split_s3_uri(uri)
        try:
            return set(s3.list_objects(bucket, prefix))
        except Exception as error:
            raise s3._error(error, uri) from error
    folder = local_path(uri)
    return set(_local_files(folder)) if folder.is_dir() else set()


def _sync_folder(source: Path, target: Path) -> dict:
    if not source.is_dir():
        raise StoreError(f"{source} is not a folder")
    target.mkdir(parents=True, exist_ok=True)
    wanted = _local_files(source)
    uploaded = skipped = 0
    for name, src in tqdm(wanted.items(), desc=f"sync {source.name}", unit="file"):
        dst = target / name
        if (
            dst.is_file()
            and dst.stat().st_size == src.stat().st_size
            and contract.sha256_file(dst) == contract.sha256_file(src)
        ):
            skipped += 1
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        with contract.written_whole(dst) as partial:  # an interrupted sync never leaves a half file under its name
            shutil.copyfile(src, partial)
        uploaded += 1
    removed = 0
    for path in sorted(target.rglob("*"), reverse=True):
        if path.name.endswith(contract.PARTIAL):  # another sync's file in flight: never this one's to delete
            continue
        if path.is_file() and path.relative_to(target).as_posix() not in wanted:
            path.unlink()
            removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            with contextlib.suppress(OSError):  # another sync just wrote into it
                path.rmdir()
    return {"uri": file_uri(target), "uploaded": uploaded, "unchanged": skipped, "removed": removed}


def split_s3_uri(uri: str):
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StoreError(f"{uri!r} names no bucket: use s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _key(prefix, name):
    return f"{prefix}/{name}" if prefix else name


class S3Store:
    """S3 through boto3. The endpoint comes from boto3's own settings (AWS_ENDPOINT_URL_S3, which the
    workflow sets from store.endpoint_url), like the credentials."""

    def __init__(self):
        import boto3
        from botocore.config import Config

        # More pooled connections than threads, so parallel transfers do not queue for a socket.
        # A session of its own: credentials are resolved now, from the standard chain, not reused
        # from whatever an earlier client of this process resolved.
        self.client = boto3.session.Session().client(
            "s3", config=Config(max_pool_connections=32, retries={"mode": "standard"})
        )

    def _error(self, error, uri):
        from botocore.exceptions import ClientError, NoCredentialsError

        if isinstance(error, NoCredentialsError):
            return StoreError(
                f"no AWS credentials for {uri}: configure them the standard way (aws configure, "
                f"AWS_PROFILE, environment variables or an instance role); the workflow never reads keys from config"
            )
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                return StoreError(f"bucket of {uri} does not exist: create it or fix store.uri")
            if code in ("404", "NoSuchKey"):
                return StoreError(f"nothing at {uri}")
            if code in ("AccessDenied", "403"):
                return StoreAccessDenied(
                    f"access to {uri} denied: the credentials need s3:ListBucket, s3:GetObject, "
                    f"s3:PutObject and s3:DeleteObject on it"
                )
        return StoreError(f"S3 request for {uri} failed: {error}")

    def list_objects(self, bucket, prefix) -> dict:
        """{key relative to prefix: size} of every object under prefix."""
        objects = {}
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for item in page.get("Contents", []):
                if item["Key"].endswith("/"):  # a console-made "folder" marker, not data
                    continue
                objects[item["Key"][len(prefix) + 1 if prefix else 0 :]] = item["Size"]
        return objects

    def _stored_sha256(self, bucket, key):
        return self.client.head_object(Bucket=bucket, Key=key).get("Metadata", {}).get("sha256")

    def sync(self, local_dir, uri, workers=8, multipart_threshold=MULTIPART_THRESHOLD) -> dict:
        from boto3.s3.transfer import TransferConfig

        bucket, prefix = split_s3_uri(uri)
        wanted = _local_files(Path(local_dir))
        try:
            stored = self.list_objects(bucket, prefix)
        except Exception as error:
            raise self._error(error, uri) from error
        transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, 5 * 2**20),
            max_concurrency=4,
        )

        def put(item):
            name, path = item
            digest = contract.sha256_file(path)
            # same size and the same sha256 recorded on the object: already there (also after an interruption)
            if stored.get(name) == path.stat().st_size and self._stored_sha256(bucket, _key(prefix, name)) == digest:
                return "unchanged"
            self.client.upload_file(
                str(path), bucket, _key(prefix, name), ExtraArgs={"Metadata": {"sha256": digest}}, Config=transfer
            )
            return "uploaded"

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(
                    tqdm(
                        pool.map(put, wanted.items()),
                        total=len(wanted),
                        desc=f"upload {Path(local_dir).name}",
                        unit="file",
                    )
                )
            stale = [_key(prefix, name) for name in stored if name not in wanted]
            self._delete(bucket, stale)
        except StoreError:
            raise
        except Exception as error:
            raise self._error(error, uri) from error
        return {
            "uri": f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}",
            "uploaded": outcomes.count("uploaded"),
            "unchanged": outcomes.count("unchanged"),
            "removed": len(stale),
        }

    def _delete(self, bucket, keys):
        from botocore.exceptions import ClientError

        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at a time
            answer = self.client.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]], "Quiet": True}
            )
            # S3 answers 200 with a list of the keys it did not delete (AccessDenied, for one): an error like any other
            if errors := answer.get("Errors"):
                first = errors[0]
                message = f"{first.get('Message', '')} ({first.get('Key')}, {len(errors)} key(s) not deleted)"
                raise ClientError({"Error": {"Code": first.get("Code", ""), "Message": message}}, "DeleteObjects")

    def remove(self, uri) -> int:
        """Delete every object under the folder uri; how many there were."""
        bucket, prefix = split_s3_uri(uri.rstrip("/"))
        if not prefix:
            raise StoreError(f"refusing to remove {uri}: it is a whole bucket, not a folder")
        try:
            keys = [_key(prefix, name) for name in self.list_objects(bucket, prefix)]
            self._delete(bucket, keys)
        except Exception as error:
            raise self._error(error, uri) from error
        return len(keys)

    def download_object(self, uri, path, missing_ok=False):
        """One object (an archive, a model) to path, with a progress bar; None if missing and missing_ok."""
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            size = self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
            with (
                contract.written_whole(path) as partial,
                tqdm(total=size, unit="B", unit_scale=True, desc=f"download {Path(key).name}") as progress,
            ):
                self.client.download_file(bucket, key, str(partial), Callback=progress.update)
        except Exception as error:
            if (
                missing_ok
                and isinstance(error, ClientError)
                and error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey")
            ):
                return None
            raise self._error(error, uri) from error
        return Path(path)

    def upload_object(self, path, uri):
        bucket, key = split_s3_uri(uri)
        try:
            self.client.upload_file(str(path), bucket, key)
        except Exception as error:
            raise self._error(error, uri) from error
        return uri

    def download(self, uri, local_dir, workers=8) -> dict:
        bucket, prefix = split_s3_uri(uri)
        target = Path(local_dir)
        target.mkdir(parents=True, exist_ok=True)
        try:
            stored = self.list_objects(bucket, prefix)
        except Exception as error:
            raise self._error(error, uri) from error
        if not stored:
            raise StoreError(f"nothing under {uri}")

        def get(item):
            name, size = item
            path = target / name
            if (
                path.is_file()
                and path.stat().st_size == size
                and self._stored_sha256(bucket, _key(prefix, name)) in (None, contract.sha256_file(path))
            ):
                return "unchanged"
            path.parent.mkdir(parents=True, exist_ok=True)
            with contract.written_whole(path) as partial:
                self.client.download_file(bucket, _key(prefix, name), str(partial))
            return "downloaded"

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                outcomes = list(
                    tqdm(pool.map(get, stored.items()), total=len(stored), desc=f"download {uri}", unit="file")
                )
        except Exception as error:
            raise self._error(error, uri) from error
        removed = 0
        for name, path in _local_files(target).items():
            if name not in stored and not name.endswith(contract.PARTIAL):
                path.unlink()
                removed += 1
        return {
            "uri": uri,
            "downloaded": outcomes.count("downloaded"),
            "unchanged": outcomes.count("unchanged"),
            "removed": removed,
        }
