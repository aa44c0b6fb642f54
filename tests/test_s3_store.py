"""The S3 store through boto3 against a real S3 API server (moto, 127.0.0.1)."""

import io
import json
import zipfile

import boto3
import job_contract as contract
import pytest
from conftest import REPO, copy_workflow, jpeg_bytes, snakemake
from dogbreed.backends.local import LocalBackend
from dogbreed.data import download, store


def make_channel(root, files):
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def objects(bucket, prefix):
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/").get("Contents", [])
    return {o["Key"][len(prefix) + 1 :]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_sync_uploads_only_what_changed(tmp_path, bucket):
    local = make_channel(
        tmp_path / "train", {"001.A/a.jpg": b"a" * 100, "001.A/b.jpg": b"b" * 100, "002.B/c.jpg": b"c" * 10}
    )
    uri = f"s3://{bucket}/datasets/x/train"
    first = store.sync(local, uri)
    assert (first["uri"], first["uploaded"], first["unchanged"], first["removed"]) == (uri, 3, 0, 0)
    assert objects(bucket, "datasets/x/train") == {
        "001.A/a.jpg": b"a" * 100,
        "001.A/b.jpg": b"b" * 100,
        "002.B/c.jpg": b"c" * 10,
    }
    head = boto3.client("s3").head_object(Bucket=bucket, Key="datasets/x/train/001.A/a.jpg")
    assert head["Metadata"]["sha256"] == contract.sha256_file(local / "001.A/a.jpg")

    again = store.sync(local, uri)
    assert (again["uploaded"], again["unchanged"], again["removed"]) == (0, 3, 0)

    (local / "001.A/b.jpg").write_bytes(b"B" * 100)  # same size, other content: the hash decides
    (local / "002.B/c.jpg").unlink()
    changed = store.sync(local, uri)
    assert (changed["uploaded"], changed["unchanged"], changed["removed"]) == (1, 1, 1)
    assert objects(bucket, "datasets/x/train") == {"001.A/a.jpg": b"a" * 100, "001.A/b.jpg": b"B" * 100}


def test_an_interrupted_sync_resumes(tmp_path, bucket):
    local = make_channel(tmp_path / "train", {f"001.A/{i}.jpg": bytes([i]) * 50 for i in range(6)})
    uri = f"s3://{bucket}/train"
    s3 = boto3.client("s3")
    # what a killed sync leaves: three objects done (with their hash), one written by someone else
    for i in range(3):
        s3.upload_file(
            str(local / f"001.A/{i}.jpg"),
            bucket,
            f"train/001.A/{i}.jpg",
            ExtraArgs={"Metadata": {"sha256": contract.sha256_file(local / f"001.A/{i}.jpg")}},
        )
    s3.put_object(Bucket=bucket, Key="train/001.A/3.jpg", Body=bytes([3]) * 50)  # no hash recorded: re-sent
    resumed = store.sync(local, uri)
    assert (resumed["uploaded"], resumed["unchanged"]) == (3, 3)


def test_big_files_go_up_in_parts_and_come_back_whole(tmp_path, bucket):
    big = bytes(range(256)) * 30_000  # 7.7 MB
    local = make_channel(tmp_path / "train", {"001.A/big.bin": big})
    store.sync(local, f"s3://{bucket}/train", multipart_threshold=5 * 2**20)
    etag = boto3.client("s3").head_object(Bucket=bucket, Key="train/001.A/big.bin")["ETag"]
    assert "-" in etag  # a multipart upload's ETag is "<md5 of md5s>-<parts>"
    back = store.download(f"s3://{bucket}/train", tmp_path / "back")
    assert back["downloaded"] == 1 and (tmp_path / "back/001.A/big.bin").read_bytes() == big
    assert store.download(f"s3://{bucket}/train", tmp_path / "back")["unchanged"] == 1


def test_clear_errors(tmp_path, moto_server, monkeypatch):
    local = make_channel(tmp_path / "train", {"001.A/a.jpg": b"a"})
    with pytest.raises(store.StoreError, match="does not exist"):
        store.sync(local, "s3://no-such-bucket/train")
    with pytest.raises(store.StoreError, match="names no bucket"):
        store.sync(local, "s3:///train")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(store.StoreError, match="no AWS credentials"):
        store.sync(local, "s3://some-bucket/train")


def test_s3_data_sources_archive_and_prefix(tmp_path, bucket):
    s3 = boto3.client("s3")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("dogImages/train/001.A/a.jpg", jpeg_bytes())
    s3.put_object(Bucket=bucket, Key="raw/dogImages.zip", Body=buffer.getvalue())
    info = download.fetch(f"s3://{bucket}/raw/dogImages.zip", tmp_path / "raw1")
    assert (info["kind"], (tmp_path / "raw1/extracted/dogImages/train/001.A/a.jpg").is_file()) == ("s3", True)
    s3.put_object(Bucket=bucket, Key="folder/beagle/1.jpg", Body=jpeg_bytes())
    s3.put_object(Bucket=bucket, Key="folder/pug/2.jpg", Body=jpeg_bytes((1, 2, 3)))
    info = download.fetch(f"s3://{bucket}/folder", tmp_path / "raw2")
    assert sorted(p.name for p in (tmp_path / "raw2/s3").iterdir()) == ["beagle", "pug"]


def test_local_training_jobs_read_s3_channels(tmp_path, bucket, tiny_channels):
    channels, _ = tiny_channels
    uris = {split: store.sync(channels / split, f"s3://{bucket}/tiny/{split}")["uri"] for split in ("train", "valid")}
    result = LocalBackend({}).train(
        "from-s3",
        {"weights": "none", "image_size": 32, "epochs": 1, "batch_size": 8, "num_workers": 0},
        uris,
        tmp_path / "jobs",
        REPO / "scripts",
        echo=False,
    )
    assert result["status"] == "Completed" and "36 train / 12 valid images" in open(result["log"]).read()
    assert len(list((tmp_path / "jobs/from-s3/input/data/train").rglob("*.jpg"))) == 36


def test_the_workflow_uploads_to_s3(tmp_path, bucket, tiny_dataset, moto_server):
    work = copy_workflow(tmp_path)
    result = snakemake(
        work,
        "upload",
        "--configfile",
        "config/demo.yaml",
        "--config",
        f"data_source={tiny_dataset}",
        f"store={{uri: 's3://{bucket}/store', endpoint_url: '{moto_server}'}}",
    )
    upload = json.loads((work / "results-demo/upload.json").read_text())
    assert upload["channels"]["train"].startswith(f"s3://{bucket}/store/datasets/")
    assert upload["sync"]["train"]["uploaded"] == 36 and "AWS_SECRET" not in result.stdout + result.stderr


def test_the_cloud_run_is_priced_and_confirmed_before_its_first_upload(tmp_path, bucket, tiny_dataset, moto_server):
    """backend: sagemaker without confirm_cloud: the whole run's estimate, then a refusal, and nothing in S3."""
    work = copy_workflow(tmp_path)
    store_config = f"store={{uri: 's3://{bucket}/store', endpoint_url: '{moto_server}'}}"
    result = snakemake(
        work,
        "upload",
        "--configfile",
        "config/demo.yaml",
        "--config",
        f"data_source={tiny_dataset}",
        "backend=sagemaker",
        store_config,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "without confirmation: rerun with --config confirm_cloud=true" in out
    assert (
        "a tuning job of 3 trials" in out
        and "tuning job (3 trials): 3 × ml.g4dn.xlarge" in out
        and "endpoint: serverless, 3072 MB" in out
    )
    assert boto3.client("s3").list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    # the shipped overlay's placeholders: refused, naming the key, before anything is sent
    result = snakemake(
        work,
        "upload",
        "--configfile",
        "config/demo.yaml",
        "config/sagemaker.yaml",
        "--config",
        f"data_source={tiny_dataset}",
        "confirm_cloud=true",
        check=False,
    )
    assert result.returncode != 0
    assert "store.uri is still the placeholder 's3://YOUR-BUCKET/dog-breed'" in result.stdout + result.stderr
