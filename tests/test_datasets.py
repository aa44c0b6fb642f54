"""Datasets named by their content: other data settings never share a store prefix, a job refuses channels that
are not what the workflow uploaded, and two uploads at once never delete each other's files."""

import json
import multiprocessing
import shutil

import job_contract as contract
import pytest
from conftest import REPO, copy_workflow, snakemake
from dogbreed.data import store


def test_two_results_folders_with_other_data_settings_keep_their_own_channels(tmp_path):
    """The demo source twice, the second with a larger min_image_size: two prefixes; the first folder's channels
    are whole after the second's upload, and both folders are up to date."""
    work = copy_workflow(tmp_path)
    (work / "config/larger.yaml").write_text("data: {min_image_size: 94}\n")
    first = ("--configfile", "config/demo.yaml", "--config", "results_dir=results-a")
    second = ("--configfile", "config/demo.yaml", "config/larger.yaml", "--config", "results_dir=results-b")
    for args in (first, second):
        snakemake(work, "upload", *args)
    uploads = [json.loads((work / f"results-{name}/upload.json").read_text()) for name in ("a", "b")]
    assert uploads[0]["channels"]["train"] != uploads[1]["channels"]["train"]
    for results, upload in zip(("results-a", "results-b"), uploads):
        manifest = (work / results / "data/manifest.csv").read_text().splitlines()[1:]
        for split in ("train", "valid", "test"):
            stored = contract.channel_digest(store.local_path(upload["channels"][split]))
            assert stored == upload["digests"][split]  # what it uploaded is still there, whole
            assert int(stored.split(":")[0]) == sum(f",{split}," in line for line in manifest)
    assert int(uploads[1]["digests"]["train"].split(":")[0]) < int(uploads[0]["digests"]["train"].split(":")[0])
    for args in (first, second):
        assert "Nothing to be done" in snakemake(work, "-n", "upload", *args).stdout


def test_a_job_refuses_channels_that_are_not_what_was_uploaded(tiny_channels, tmp_path, capsys):
    """train.py (and feature_cache.py) compare their channels with --expect_data before anything else: one line."""
    import train

    channels, _ = tiny_channels
    copied = tmp_path / "channels"
    shutil.copytree(channels, copied)
    expected = contract.expect_data({split: contract.channel_digest(copied / split) for split in ("train", "valid")})
    removed = next(p for p in (copied / "train").rglob("*") if p.is_file())
    removed.unlink()
    args = [
        "--train",
        str(copied / "train"),
        "--valid",
        str(copied / "valid"),
        "--model_dir",
        str(tmp_path / "model"),
        "--output_data_dir",
        str(tmp_path / "out"),
        "--checkpoint_dir",
        str(tmp_path / "ckpt"),
        "--weights",
        "none",
        "--epochs",
        "1",
        "--image_size",
        "32",
        "--expect_data",
        expected,
    ]
    with pytest.raises(SystemExit):
        train.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(contract.SETUP_FAILED)
    assert (
        f"the train channel ({copied / 'train'}) holds 35 files" in err[0]
        and "not the 36 the workflow uploaded" in err[0]
    )
    assert "snakemake --forcerun upload" in err[0]


def test_an_upload_never_touches_another_uploads_partial_files(tmp_path):
    """Each sync writes its own partial files (`<file>.<pid>.partial`) and never deletes another's: two uploads
    of one dataset at once both finish whole (before, they shared `<file>.partial` and removed each other's)."""
    source = tmp_path / "channel"
    for i in range(6):
        (source / "001.A").mkdir(parents=True, exist_ok=True)
        (source / "001.A" / f"{i}.jpg").write_bytes(bytes([i]) * 1000)
    target = tmp_path / "store/datasets/x/train"
    in_flight = target / "001.A" / "3.jpg.99999.partial"  # another process's copy, half written
    in_flight.parent.mkdir(parents=True)
    in_flight.write_bytes(b"half")
    result = store.sync(source, f"file://{target}")
    assert result["uploaded"] == 6 and result["removed"] == 0
    assert in_flight.read_bytes() == b"half"  # neither renamed over a file nor deleted
    assert contract.channel_digest(target) == contract.channel_digest(source)  # and not part of the data
    # two at once, in two processes, into an empty store: both finish, the store holds the data whole
    target = tmp_path / "store-2"
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.starmap(store.sync, [(source, f"file://{target}")] * 2)
    assert sum(r["uploaded"] + r["unchanged"] for r in results) == 12
    assert contract.channel_digest(target) == contract.channel_digest(source) and not list(target.rglob("*.partial"))


def test_the_store_digest_of_an_s3_channel_is_the_local_ones(moto_server, bucket, tiny_channels):
    channels, _ = tiny_channels
    uri = f"s3://{bucket}/datasets/x/train"
    store.sync(channels / "train", uri)
    assert store.digest(uri) == contract.channel_digest(channels / "train")


def test_the_job_contract_reads_without_torch():
    # (the architectures are torchvision's: tests/test_backbones.py checks the workflow's table against it)
    assert REPO.joinpath("scripts/job_contract.py").read_text().count("import torch") == 0  # the workflow reads it
