"""The feature cache (issue 12): a frozen backbone's features computed once, by a job of the backend,
kept in the store, and the head trained on them; the same model as training on the images."""

import json
import re
import subprocess
import sys
import tarfile

import pytest
import torch
import yaml
from conftest import REPO, snakemake, workflow_with_test_config

sys.path.insert(0, str(REPO / "scripts"))
import classifier
import feature_cache
import image_folders

PYTHON = sys.executable


def train(tmp_path, name, train_dir, valid_dir, *flags):
    out = tmp_path / name
    result = subprocess.run(
        [
            PYTHON,
            str(REPO / "scripts/train.py"),
            "--train",
            str(train_dir),
            "--valid",
            str(valid_dir),
            "--model_dir",
            str(out / "model"),
            "--output_data_dir",
            str(out / "output"),
            "--checkpoint_dir",
            str(out / "ckpt"),
            "--weights",
            "none",
            "--image_size",
            "32",
            "--num_workers",
            "0",
            "--epochs",
            "3",
            "--batch_size",
            "8",
            "--lr",
            "0.05",
            *map(str, flags),
        ],
        capture_output=True,
        text=True,
    )
    return result, out


def extract(tmp_path, name, channels, *flags):
    out = tmp_path / name
    subprocess.run(
        [
            PYTHON,
            str(REPO / "scripts/feature_cache.py"),
            "--train",
            str(channels / "train"),
            "--valid",
            str(channels / "valid"),
            "--model_dir",
            str(out),
            "--weights",
            "none",
            "--image_size",
            "32",
            "--num_workers",
            "0",
            *map(str, flags),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out


def epochs(out):
    return [json.loads(line) for line in (out / "output/metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_both_ways(tiny_channels, tmp_path_factory):
    """A frozen-backbone job without augmentation, on the images and on their cached features."""
    channels, _ = tiny_channels
    tmp = tmp_path_factory.mktemp("both-ways")
    on_images, images_out = train(
        tmp, "images", channels / "train", channels / "valid", "--freeze_backbone", "true", "--augment", "false"
    )
    cache = extract(tmp, "cache", channels, "--augment", "false")
    on_features, features_out = train(
        tmp, "features", cache / "train", cache / "valid", "--freeze_backbone", "true", "--augment", "false"
    )
    assert on_images.returncode == on_features.returncode == 0, on_images.stdout[-2000:] + on_features.stdout[-2000:]
    return images_out, features_out, cache, on_features.stdout


def test_the_head_trained_on_cached_features_is_the_model_trained_on_the_images(trained_both_ways):
    images_out, features_out, _, log = trained_both_ways
    assert "the head on cached backbone features (1 view(s))" in log
    for a, b in zip(epochs(images_out), epochs(features_out), strict=True):
        for key in ("train_loss", "valid_loss", "valid_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=2e-3), (key, a, b)
    on_images = torch.load(images_out / "model/model.pth", weights_only=True)
    on_features = torch.load(features_out / "model/model.pth", weights_only=True)
    assert on_images.keys() == on_features.keys()  # the artifact is the whole network either way
    for name in on_images:
        assert torch.allclose(on_images[name].float(), on_features[name].float(), atol=1e-4), name


def test_a_frozen_backbone_keeps_its_batchnorm_statistics(trained_both_ways):
    images_out, _, _, _ = trained_both_ways
    state = torch.load(images_out / "model/model.pth", weights_only=True)
    # randomly initialised BatchNorm: mean 0, variance 1; training in train mode would have moved them
    assert torch.equal(state["bn1.running_mean"], torch.zeros_like(state["bn1.running_mean"]))
    assert torch.equal(state["layer4.1.bn2.running_var"], torch.ones_like(state["layer4.1.bn2.running_var"]))


def test_the_served_model_is_the_backbone_the_features_came_from_plus_the_trained_head(
    trained_both_ways, tiny_channels
):
    _, features_out, cache, _ = trained_both_ways
    channels, _ = tiny_channels
    model, info = classifier.load_model(features_out / "model")
    dataset = image_folders.ImageFolderByNumber(channels / "valid", classifier.eval_transform(info["preprocessing"]))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    cached = feature_cache.CachedFeatures(cache / "valid")
    with torch.no_grad():
        assert torch.allclose(model(images), model.fc(cached.features[0]), atol=1e-4)


def test_augmented_views_are_seeded_and_differ_from_each_other(tiny_channels, tmp_path):
    channels, _ = tiny_channels
    first = torch.load(
        extract(tmp_path, "a", channels, "--feature_views", "2") / "train/features.pt", weights_only=True
    )
    again = torch.load(
        extract(tmp_path, "b", channels, "--feature_views", "2") / "train/features.pt", weights_only=True
    )
    assert first["features"].shape[:2] == (2, len(first["labels"]))
    assert torch.equal(first["features"], again["features"])  # the same cache on every run
    assert not torch.allclose(first["features"][0], first["features"][1])  # two different augmentations
    info = json.loads((tmp_path / "a/train/features.json").read_text())
    assert info["views"] == 2 and info["augmented"] and len(info["files"]) == len(first["labels"])
    assert json.loads((tmp_path / "a/valid/features.json").read_text())["views"] == 1  # eval transform only


def test_a_stopped_extraction_resumes_at_its_next_image_and_makes_the_same_cache(tiny_channels, tmp_path, monkeypatch):
    """Stopped mid-view (a Ctrl-C while the loader reads image 7), the job's rerun keeps the features it had and
    computes only the rest; with the augmentation seeded per image, the result is the uninterrupted one's."""
    channels, _ = tiny_channels
    monkeypatch.setattr(feature_cache, "CHECKPOINT_EVERY_S", 0)  # a checkpoint after every batch
    spec = classifier.preprocessing_spec(32, 36)
    model = classifier.build_model("resnet18", 3, "none").eval()
    read = []

    def transform(image):
        read.append(1)
        if stop_at is not None and len(read) == stop_at:
            raise KeyboardInterrupt("SIGTERM")
        return classifier.train_transform(spec, on_device=True)(image)

    def extract_views(checkpoint_dir):
        read.clear()
        dataset = image_folders.ImageFolderByNumber(channels / "train", transform)
        return feature_cache.extract_views(
            model,
            dataset,
            2,
            0,
            torch.device("cpu"),
            spec,
            2,
            {"num_workers": 0},
            False,
            lambda view: feature_cache.ViewCheckpoint(checkpoint_dir, "train", view, "the same images"),
        )

    stop_at = None
    whole = extract_views(tmp_path / "uninterrupted")
    images = whole.shape[1]
    stop_at = images + 7  # in the second view, after three batches of two
    with pytest.raises(KeyboardInterrupt):
        extract_views(tmp_path / "stopped")
    stop_at = None
    resumed = extract_views(tmp_path / "stopped")
    assert len(read) == images - 6  # the second view's first 6 images came from its checkpoint
    assert torch.equal(resumed, whole)
    other = feature_cache.ViewCheckpoint(tmp_path / "stopped", "train", 1, "other images")
    assert other.load() == []  # another job's checkpoint is never taken


def test_features_need_a_frozen_backbone_and_their_own_preprocessing(trained_both_ways, tmp_path):
    _, _, cache, _ = trained_both_ways
    result, _ = train(tmp_path, "unfrozen", cache / "train", cache / "valid")
    assert result.returncode != 0 and "set freeze_backbone true, or model.feature_cache false" in result.stderr
    result, _ = train(
        tmp_path, "other-size", cache / "train", cache / "valid", "--freeze_backbone", "true", "--image_size", "48"
    )
    assert result.returncode != 0 and "the cached features were made with preprocessing=" in result.stderr


def test_amp_runs_on_the_cpu_in_bf16(tiny_channels, tmp_path):
    channels, _ = tiny_channels
    result, out = train(tmp_path, "amp", channels / "train", channels / "valid", "--amp", "true", "--epochs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "bf16 autocast, channels_last" in result.stdout and len(epochs(out)) == 1
    assert json.loads((out / "output/hyperparameters.json").read_text())["amp"] is True


# --- in the workflow -------------------------------------------------------------------------------


def dry_run_jobs(work, *args) -> set:
    """The rules a dry run of `train` would run (the rows of its job stats table)."""
    result = snakemake(work, "-n", "train", *args)
    return set(re.findall(r"^(\w+)\s+\d+$", result.stdout + result.stderr, re.MULTILINE)) - {"total"}


@pytest.mark.long  # a real workflow run and five dry runs: make test-long (make test was at 7 min 55 s)
def test_the_workflow_extracts_once_reuses_the_store_and_reruns_only_on_its_inputs(tiny_dataset, tmp_path):
    (tmp_path / "work").mkdir()
    work = workflow_with_test_config(tiny_dataset, tmp_path / "work")
    # (and MLflow off: nothing is tracked, nothing fails for it)
    frozen = {
        "hyperparameters": {"freeze_backbone": True},
        "model": {"feature_views": 2},
        "tracking": {"enabled": False},
    }
    (work / "config/frozen.yaml").write_text(yaml.safe_dump(frozen))
    args = ("--configfile", "config/test.yaml", "config/frozen.yaml")
    snakemake(work, "train", *args)
    results = work / "results"
    channels = json.loads((results / "features/channels.json").read_text())
    assert not channels["reused"] and set(channels["channels"]) == {"train", "valid"}
    assert sorted(p.name for p in (results / "jobs").iterdir() if p.name.startswith("features-")) == [
        channels["job_name"]
    ]
    for trial in (results / "jobs").glob("tune-*"):
        assert "the head on cached backbone features (2 view(s))" in (trial / "log.txt").read_text()
    model = json.loads((results / "training/model.json").read_text())
    assert model["hyperparameters"]["freeze_backbone"] is True
    assert "tracking" not in model and not (work / "mlflow.db").exists() and not (work / "mlartifacts").exists()
    assert "cached backbone features" in (results / "training/output/profiler/job.json").read_text()
    with tarfile.open(results / "training/model.tar.gz") as archive:  # the whole network, as served
        archive.extractall(tmp_path / "model", filter="data")
    assert "layer4.1.conv2.weight" in torch.load(tmp_path / "model/model.pth", weights_only=True)

    # Reruns redo only what changed: the search, not the features; the views, the features too.
    assert dry_run_jobs(work, *args) == set()
    (work / "config/more.yaml").write_text(yaml.safe_dump({"tuning": {"max_jobs": 3}}))
    plan = dry_run_jobs(work, *args, "config/more.yaml")
    assert "tune" in plan and "extract_features" not in plan
    with open(work / "scripts/train.py", "a") as edit:
        edit.write("# an edit of the training script\n")
    plan = dry_run_jobs(work, *args)
    assert "tune" in plan and "extract_features" not in plan
    (work / "config/views.yaml").write_text(yaml.safe_dump({"model": {"feature_views": 3}}))
    assert "extract_features" in dry_run_jobs(work, *args, "config/views.yaml")
    # Another results folder on the same store and settings finds the cache there: no second job.
    snakemake(work, str(R := "results2/features/channels.json"), *args, "--config", "results_dir=results2")
    again = json.loads((work / R).read_text())
    assert again["reused"] and again["channels"] == channels["channels"] and not (work / "results2/jobs").exists()
    # The cache off: the trials read the images again.
    (work / "config/off.yaml").write_text(yaml.safe_dump({"model": {"feature_cache": False}}))
    assert "extract_features" not in dry_run_jobs(work, *args, "config/off.yaml", "--forceall")
