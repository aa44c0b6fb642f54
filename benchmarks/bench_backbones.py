"""Backbones on the CPU (issue 28): each backbone's feature extraction in images/s, and the laptop rehearsal's time.

    .venv/bin/python benchmarks/bench_backbones.py [--archs resnet18,resnet50,...] [--images 128]

Extraction: scripts/feature_cache.py's own loop (extract_views) over --images generated JPEGs of dogImages' size
spread (benchmarks/dogimages_like.py's drawing), the loader's workers decoding and resizing them (the job's default:
the CPUs), the backbone in eval mode at 224 px, channels_last, batch 64, random weights (the same network, the same
time as ImageNet's). Each arch after a warm-up batch; the rate counts the loader's start, as a job's does.

The laptop rehearsal (config/laptop.yaml on dogimages_like.py's set) was measured whole with resnet18 (BENCHMARKS.md:
621 s); for another backbone only the backbone's work changes — extracting 7,515 train and valid images, and the
endpoint classifying 836 test images — so its time is estimated as 621 s + 8,351 images × (1/its rate − 1/resnet18's
rate), both rates from this run. The rest (prepare, upload, the head's tuning and training on the features, the
reports) does not depend on the backbone, but for the head's width (512 to 2048 features: milliseconds an epoch).
Nothing here is asserted.
"""

import argparse
import colorsys
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "benchmarks"), str(REPO / "workflow")]
import classifier
import dogimages_like
import feature_cache
import image_folders

ARCHS = ("resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny")
REHEARSAL_S = 621  # config/laptop.yaml with resnet18, measured whole (BENCHMARKS.md)
REHEARSAL_IMAGES = 6680 + 835 + 836  # extracted (train, valid) and classified by the endpoint (test)


def images(folder: Path, count: int, seed=0) -> Path:
    """count JPEGs of dogImages' size spread in two class folders."""
    rng = random.Random(seed)
    tasks = []
    for index in range(2):
        name = f"{index + 1:03d}.Breed_{index + 1:03d}"
        (folder / name).mkdir(parents=True, exist_ok=True)
        colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(index / 2, 0.75, 0.85))
        shape = dogimages_like.SHAPES[index]
        tasks += [(folder / name / f"{i:04d}.jpg", shape, colour, rng.getrandbits(32)) for i in range(count // 2)]
    for task in tasks:
        dogimages_like.draw(task)
    return folder


def extraction_rate(arch: str, folder: Path, batch_size=64, image_size=224) -> tuple:
    """(images/s, feature width, parameters in millions) of feature_cache.extract_views over the folder."""
    device = torch.device("cpu")
    spec = classifier.preprocessing_spec(image_size, 0, arch)
    torch.manual_seed(0)
    model = classifier.build_model(arch, 2, "none").eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():  # warm-up: the first batch's allocations and kernel choices
        classifier.backbone_features(model, torch.randn(8, 3, image_size, image_size))
    dataset = image_folders.ImageFolderByNumber(folder, classifier.eval_transform(spec, on_device=True))
    options = image_folders.loader_options(-1, device, persistent=False)
    started = time.perf_counter()
    features = feature_cache.extract_views(
        model,
        dataset,
        1,
        0,
        device,
        spec,
        batch_size,
        options,
        True,
        lambda view: feature_cache.ViewCheckpoint(None, "train", view, ""),
    )
    seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    return len(dataset) / seconds, features.shape[-1], parameters


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    archs = args.archs.split(",")
    print(f"{platform.machine()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        folder = images(Path(tmp) / "images", args.images)
        print(f"{args.images} images drawn in {time.perf_counter() - started:.0f} s\n")
        rows = {}
        for arch in archs:
            rows[arch] = extraction_rate(arch, folder)
            print(f"  {arch}: {rows[arch][0]:.1f} img/s", flush=True)
    base = rows.get("resnet18", (None,))[0]
    print(
        "\n| backbone | parameters (M) | features | extraction img/s | laptop rehearsal s (estimated) | vs resnet18 |"
    )
    print("|---|---|---|---|---|---|")
    for arch, (rate, width, parameters) in rows.items():
        estimate = REHEARSAL_S + REHEARSAL_IMAGES * (1 / rate - 1 / base) if base else None
        cells = f"{estimate:.0f} ({estimate / 60:.1f} min) | {estimate / REHEARSAL_S:.2f}×" if base else "– | –"
        print(f"| {arch} | {parameters:.1f} | {width} | {rate:.1f} | {cells} |")


if __name__ == "__main__":
    main()
