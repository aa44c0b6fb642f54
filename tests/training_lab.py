"""The training-rule tests' lab: tiny real training jobs, one of them pretrained weights the others
start from, and an entry point that plants one fault before running the real train.py."""

import os
import shutil
import textwrap
from pathlib import Path

from conftest import REPO, TINY_CLASSES
from dogbreed.backends.local import LocalBackend
from dogbreed.checks import run_checks
from dogbreed.data import demo_data
from filelock import FileLock

# An entry point that plants one fault, then runs the real train.py (which stays free of test hooks).
FAULTY_TRAIN = textwrap.dedent("""
    import sys, time
    import torch
    import classifier, train

    fault = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--planted_fault="))
    sys.argv = [a for a in sys.argv if not a.startswith("--planted_fault=")]
    if fault == "near_zero_init":
        build = classifier.build_model
        def near_zero(*args, **kwargs):
            model = build(*args, **kwargs)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.mul_(1e-6)
            return model
        classifier.build_model = near_zero
    if fault == "slow_steps":  # six images stall every time they load: a dozen slow steps in 2 epochs
        load = train.ImageFolderByNumber.__getitem__
        def stalling(self, i):
            if i in (3, 25, 50, 70, 90, 110):
                time.sleep(0.5)
            return load(self, i)
        train.ImageFolderByNumber.__getitem__ = stalling
    train.main()
""")

BASE = {
    "image_size": 32,
    "batch_size": 8,
    "epochs": 4,
    "lr": 0.001,
    "debug": True,
    "profile": True,
    "save_interval": 4,
    "profiler_interval_ms": 200,
    "num_workers": os.cpu_count(),
    "seed": 0,
}


def make_lab(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("rules")
    source = root / "source"
    shutil.copytree(REPO / "scripts", source)
    (source / "faulty_train.py").write_text(FAULTY_TRAIN)
    data = demo_data.generate(
        root / "data", seed=1, classes=TINY_CLASSES, per_split={"train": 40, "valid": 8}, corrupt_file=False
    )
    lab = {
        "root": root,
        "source": source,
        "backend": LocalBackend({}),
        "channels": {"train": f"file://{data}/train", "valid": f"file://{data}/valid"},
    }
    # "ImageNet" for the tests: weights that have seen this kind of image, so batch-norm statistics
    # are settled and a healthy fine-tuning run looks like one. Trained once for both test workers
    # (the same seed and data give the same weights; the other worker waits for them).
    session_dir = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker's folder: the session's is the one above it
        session_dir = session_dir.parent
    shared = session_dir / "rules-pretrained.pth"
    with FileLock(str(shared) + ".lock"):
        if not shared.exists():
            # the last epoch, not the best: the healthy job below should still have something to learn
            result = run_job(
                lab,
                "pretrain",
                {
                    **BASE,
                    "epochs": 8,
                    "lr": 0.01,
                    "debug": False,
                    "profile": False,
                    "weights": "none",
                    "keep_best": False,
                },
            )
            import tarfile

            with tarfile.open(result["model_uri"][len("file://") :]) as archive:
                (root / "pretrained.pth").write_bytes(archive.extractfile("model.pth").read())
            shutil.copyfile(root / "pretrained.pth", str(shared) + ".tmp")
            os.replace(str(shared) + ".tmp", shared)
    lab["pretrained"] = str(shared)
    return lab


def run_job(lab, name, hyperparameters, fault=None, channels=None):
    entry = "train.py"
    if fault:
        entry, hyperparameters = "faulty_train.py", {**hyperparameters, "planted_fault": fault}
    return lab["backend"].train(
        name,
        hyperparameters,
        channels or lab["channels"],
        lab["root"] / "jobs",
        lab["source"],
        entry_point=entry,
        echo=False,
    )


def verdicts(result) -> dict:
    rules = run_checks.evaluate(Path(result["output_dir"]) / "data")
    return {r["rule"]: r["verdict"] for r in rules["rules"]}


def make_channel(root, counts):
    """A train channel with `counts[i]` images of TINY_CLASSES[i]."""
    for (folder, shape, colour), count in zip(TINY_CLASSES, counts):
        demo_data.generate(
            root / folder, seed=count, classes=[(folder, shape, colour)], per_split={"train": count}, corrupt_file=False
        )
        target = root / "train" / folder
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root / folder / "dogImages/train" / folder, target)
    return f"file://{root}/train"
