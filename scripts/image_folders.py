"""Channels of images in class folders `NNN.Breed_Name/`, class index = NNN - 1: what training and the
feature cache read (the prepare stage writes that layout)."""

import os
import re
import sys
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

CLASS_FOLDER = re.compile(r"^(\d+)\.(.+)$")


def list_class_folders(*channels):
    """{class index: breed name} over the given channel folders; indices come from the NNN prefix."""
    classes = {}
    for channel in channels:
        for folder in sorted(Path(channel).iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            match = CLASS_FOLDER.match(folder.name)
            if not match:
                sys.exit(
                    f"error: class folder {folder} is not named NNN.Breed_Name (the prepare stage writes that layout)"
                )
            index, name = int(match.group(1)) - 1, match.group(2)
            if classes.get(index, name) != name:
                sys.exit(f"error: class number {index + 1} names two breeds: {classes[index]!r} and {name!r}")
            classes[index] = name
    if not classes:
        sys.exit(f"error: no class folders in {channels}")
    return classes


class ImageFolderByNumber(Dataset):
    """(image, class index) pairs from `NNN.Breed/*` folders; index = NNN - 1, whatever folders exist."""

    def __init__(self, root, transform):
        self.samples = []
        for folder in sorted(Path(root).iterdir()):
            match = CLASS_FOLDER.match(folder.name)
            if not match or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    self.samples.append((path, int(match.group(1)) - 1))
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with Image.open(path) as image:
            return self.transform(image.convert("RGB")), label


def default_workers(device) -> int:
    """DataLoader workers: the CPUs this job may use per GPU it trains on (SageMaker says how many in
    SM_NUM_CPUS), at most 8, at least 1; on a CPU-only machine the CPUs, shared with the compute."""
    cpus = int(os.environ.get("SM_NUM_CPUS") or len(os.sched_getaffinity(0)))
    gpus = torch.cuda.device_count() if device.type == "cuda" else 1
    return max(1, min(8, cpus // max(gpus, 1)))


def loader_options(num_workers: int, device, persistent=True) -> dict:
    """DataLoader arguments: workers (-1: default_workers), pinned memory for a GPU, and workers that
    stay up between epochs with batches prefetched, so a GPU never waits on a worker's start."""
    workers = default_workers(device) if num_workers < 0 else num_workers
    options = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        options.update(persistent_workers=persistent, prefetch_factor=4)
    return options
