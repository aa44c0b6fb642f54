"""The frozen backbone's features, computed once: an entry point (a job of whichever backend runs the
workflow) and what train.py reads back.

A frozen backbone in eval mode is a fixed function of its input, so training the head on its cached
features trains the same model as recomputing them every epoch of every trial, for a fraction of the
cost (BENCHMARKS.md). Augmentation is kept as a fixed number of augmented views of each training image.
The job reads the image channels and writes under SM_MODEL_DIR (every backend brings that back):
  train/features.pt    {"features": V×N×D float32 (V views), "labels": N class indices}
  train/backbone.pth   the backbone's weights (no head): the final model is built on exactly these
  train/features.json  what the features are: arch, weights, preprocessing, views, classes
  valid/features.pt, valid/features.json   (one view, the eval transform)
The workflow publishes the two folders in the store as the `train` and `valid` channels of the tuning
trials and the final training (workflow/dogbreed/training/features.py).

A stopped job resumes: every minute it keeps the features computed so far under SM_CHECKPOINT_DIR, and
a rerun that gets that folder back (the local backend's, as for train.py) starts from the next image. Each image's augmentation is drawn from its own seed (the run's, the view, its index), so a
resumed cache is the one an uninterrupted job makes, whatever the number of loader workers.

    python feature_cache.py --train <images> --valid <images> --model_dir <out> [--feature_views 3]
"""

import argparse
import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import classifier
import image_folders
import job_contract as contract
import torch
from torch.utils.data import DataLoader, Dataset, Subset

# the feature cache's file names are the job contract's (the workflow checks a cache in the store by them)
FEATURES_FILE, INFO_FILE, BACKBONE_FILE = contract.FEATURES_FILE, contract.FEATURES_INFO_FILE, contract.BACKBONE_FILE
CHECKPOINT_EVERY_S = 60  # how much work a stop can cost at most


def build_parser() -> argparse.ArgumentParser:
    # its flags are the job contract's (job_contract.py): the workflow derives the cache's identity from them
    return contract.build_parser(
        contract.FEATURE_FLAGS, ("train", "valid", "model_dir", "checkpoint_dir"), __doc__, defaults={"batch_size": 64}
    )


def feature_spec(arch, weights, preprocessing) -> dict:
    """What makes two caches interchangeable; train.py refuses a cache whose spec is not its own."""
    return {"arch": arch, "weights": weights, "preprocessing": preprocessing}


class SeededImages(Dataset):
    """The images, each transformed with the torch RNG seeded from (view seed, index): an image's random
    augmentation is the same whichever loader worker draws it, and whether or not the job resumed."""

    def __init__(self, dataset, view_seed: int):
        self.dataset, self.view_seed = dataset, view_seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        torch.manual_seed(self.view_seed * 1_000_003 + i)
        return self.dataset[i]


class ViewCheckpoint:
    """The features of one channel's view computed so far, kept whole (job_contract.written_whole) under the
    job's checkpoint folder; `identity` says which images in which order, so another job's are never taken."""

    def __init__(self, checkpoint_dir, channel, view, identity: str):
        self.path = Path(checkpoint_dir) / f"features-{channel}-view{view}.pt" if checkpoint_dir else None
        self.identity, self.saved = identity, time.time()

    def load(self) -> list:
        """The chunks an earlier run of this job computed ([] when none)."""
        if self.path is None or not self.path.is_file():
            return []
        kept = torch.load(self.path, weights_only=True)
        return [kept["features"]] if kept["identity"] == self.identity else []

    def save(self, chunks, force=False):
        if self.path is None or not chunks or not (force or time.time() - self.saved > CHECKPOINT_EVERY_S):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contract.written_whole(self.path) as partial:
            torch.save({"identity": self.identity, "features": torch.cat(chunks)}, partial)
        self.saved = time.time()


def extract_views(model, dataset, views, seed, device, spec, batch_size, loader_options, channels_last, checkpoints):
    """V×N×D: the backbone's features of every image of dataset, once per view (SeededImages: the same on
    every run). checkpoints(view) → that view's ViewCheckpoint: a resumed view starts after its kept images."""
    result = []
    for view in range(views):
        checkpoint = checkpoints(view)
        chunks = checkpoint.load()
        done = sum(len(chunk) for chunk in chunks)
        if done:
            print(f"{contract.NOTE}{contract.RESUMED}{checkpoint.path} at image {done}/{len(dataset)}", flush=True)
        images = Subset(SeededImages(dataset, seed * 1000 + view), range(done, len(dataset)))
        loader = DataLoader(images, batch_size=batch_size, shuffle=False, **loader_options)
        started = time.time()
        with torch.inference_mode():
            for batch, _ in loader:
                batch = classifier.normalise(batch.to(device, non_blocking=True), spec, channels_last)
                chunks.append(classifier.backbone_features(model, batch).float().cpu())
                checkpoint.save(chunks)
        checkpoint.save(chunks, force=True)
        seconds = time.time() - started
        print(
            f"view {view + 1}/{views}: {len(images)} images in {seconds:.1f} s "
            f"({len(images) / max(seconds, 1e-9):.1f} img/s)",
            flush=True,
        )
        result.append(torch.cat(chunks))
    return torch.stack(result)


def images_identity(dataset, spec, args) -> str:
    """What a view's checkpoint is valid for: the images in order and what is computed from them."""
    what = [str(path) for path, _ in dataset.samples] + [json.dumps(spec, sort_keys=True), args.arch, args.weights]
    return hashlib.sha256("\n".join(what).encode()).hexdigest()


def write_channel(folder: Path, features, labels, info):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"features": features, "labels": labels}, folder / FEATURES_FILE)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False))


def main(argv=None):
    args = build_parser().parse_args(argv)
    if (mismatch := contract.data_mismatch(args.expect_data, {"train": args.train, "valid": args.valid})) is not None:
        sys.exit(f"error: {mismatch}")
    torch.manual_seed(args.seed)
    device = classifier.pick_device()
    torch.backends.cudnn.benchmark = True  # one input shape throughout: let cuDNN pick its fastest kernels
    try:
        classifier.check_input_size(args.arch, args.image_size)
    except ValueError as error:
        sys.exit(f"error: {error}")
    spec = classifier.preprocessing_spec(args.image_size, args.resize, args.arch)
    views = args.feature_views if args.augment else 1
    found = image_folders.list_class_folders(args.train, args.valid)
    classes = {str(i): name for i, name in sorted(found.items())}
    try:
        model = classifier.build_model(args.arch, max(found) + 1, args.weights)
    except classifier.WeightsUnavailable as error:
        sys.exit(f"error: {error}")
    model.eval().to(device)  # frozen: BatchNorm keeps its statistics, as train.py's frozen backbone does
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    options = image_folders.loader_options(args.num_workers, device, persistent=False)
    print(
        f"extracting {args.arch} features on {device} ({options['num_workers']} loader workers): "
        f"{views} view(s) of the training images, 1 of the validation images",
        flush=True,
    )
    out = Path(args.model_dir)
    # run by hand off SageMaker (no /opt/ml): nowhere to keep checkpoints, none kept
    kept_in = args.checkpoint_dir if Path(args.checkpoint_dir).parent.is_dir() else None
    started = time.time()
    for channel, transform, channel_views in (
        (
            "train",
            classifier.train_transform(spec, on_device=True)
            if args.augment
            else classifier.eval_transform(spec, on_device=True),
            views,
        ),
        ("valid", classifier.eval_transform(spec, on_device=True), 1),
    ):
        dataset = image_folders.ImageFolderByNumber(getattr(args, channel), transform)
        if not len(dataset):
            sys.exit(f"error: the {channel} channel ({getattr(args, channel)}) holds no images")
        identity = images_identity(dataset, spec, args)
        features = extract_views(
            model,
            dataset,
            channel_views,
            args.seed,
            device,
            spec,
            args.batch_size,
            options,
            args.channels_last,
            functools.partial(ViewCheckpoint, kept_in, channel, identity=identity),
        )
        labels = torch.tensor([label for _, label in dataset.samples], dtype=torch.int64)
        info = {
            **feature_spec(args.arch, args.weights, spec),
            "views": channel_views,
            "augmented": channel == "train" and args.augment,
            "images": len(dataset),
            "dim": features.shape[-1],
            "classes": classes,
            "seed": args.seed,
            "files": [path.relative_to(getattr(args, channel)).as_posix() for path, _ in dataset.samples],
        }
        write_channel(out / channel, features, labels, info)
    torch.save(classifier.backbone_state(model), out / "train" / BACKBONE_FILE)
    print(f"features written to {out} in {time.time() - started:.1f} s", flush=True)


# --- what train.py reads ---------------------------------------------------------------------------


def is_feature_channel(folder) -> bool:
    return (Path(folder) / INFO_FILE).is_file()


class CachedFeatures(Dataset):
    """(features of one view, class index) per image; set_epoch draws which view each image shows."""

    def __init__(self, folder):
        folder = Path(folder)
        self.info = json.loads((folder / INFO_FILE).read_text())
        data = torch.load(folder / FEATURES_FILE, weights_only=True)
        self.features, self.labels = data["features"], data["labels"]
        self.view = torch.zeros(len(self.labels), dtype=torch.int64)
        self.classes = {int(i): name for i, name in self.info["classes"].items()}

    def __len__(self):
        return len(self.labels)

    def set_epoch(self, epoch: int, seed: int):
        # a generator of its own: the global one draws the batch order, exactly as with images
        if len(self.features) > 1:
            generator = torch.Generator().manual_seed(seed * 1000 + epoch)
            self.view = torch.randint(len(self.features), (len(self.labels),), generator=generator)

    def __getitem__(self, i):
        return self.features[self.view[i], i], self.labels[i]


def check_spec(cache: CachedFeatures, arch, preprocessing):
    """Refuse features made for another model: one line saying which setting differs."""
    theirs, ours = cache.info, {"arch": arch, "preprocessing": preprocessing}
    for key, value in ours.items():
        if theirs[key] != value:
            sys.exit(
                f"error: the cached features were made with {key}={theirs[key]}, this job has {key}={value}: "
                f"extract them again (the workflow does) or train on the images"
            )


def load_backbone(model, folder):
    """The weights the features were computed with, into the model whose head is trained on them."""
    state = torch.load(Path(folder) / BACKBONE_FILE, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = classifier.head_name(model)
    if unexpected or any(not classifier.is_head_parameter(name, head) for name in missing):
        sys.exit(
            f"error: {Path(folder) / BACKBONE_FILE} does not fit the model: missing {missing}, unexpected {unexpected}"
        )


if __name__ == "__main__":
    main()
