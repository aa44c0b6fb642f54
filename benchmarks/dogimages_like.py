"""A generated image set of dogImages' shape, for rehearsing the real run where it cannot be downloaded.

    .venv/bin/python benchmarks/dogimages_like.py /data/dogimages-like     # → /data/dogimages-like/dogImages

133 classes (NNN.Name folders), 6,680 / 835 / 836 train / valid / test images spread over the classes
unevenly as in dogImages (26–77 training images a class), JPEGs of dogImages' size spread (shorter side
mostly 300–600 px, a few over 1,500, aspect 0.6–1.7). Each class is one of the demo's shapes in a colour
of its own (workflow/dogbreed/data/demo_data.py), drawn at that size. Deterministic for a seed. Then:
    snakemake --cores 2 deploy --configfile config/laptop.yaml --config data_source=/data/dogimages-like/dogImages
"""

import argparse
import colorsys
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))
from dogbreed.data import demo_data

TOTALS = {"train": 6680, "valid": 835, "test": 836}
CLASSES = 133
SHAPES = ["circle", "square", "triangle", "stripes", "cross", "ring"]


def spread(total, rng, low, high):
    """CLASSES counts in [low, high] that add up to total."""
    counts = [rng.randint(low, high) for _ in range(CLASSES)]
    while sum(counts) != total:
        i = rng.randrange(CLASSES)
        step = 1 if sum(counts) < total else -1
        if low <= counts[i] + step <= high:
            counts[i] += step
    return counts


def draw(task):
    path, shape, colour, seed = task
    rng = random.Random(seed)
    small = demo_data.draw_example(shape, colour, rng)  # 64–180 px, then up to dogImages' sizes
    short = min(int(rng.lognormvariate(6.05, 0.35)), 2500)  # median ~425 px
    aspect = rng.uniform(0.6, 1.7)
    size = (max(64, int(short * aspect)), short) if aspect >= 1 else (short, max(64, int(short / aspect)))
    small.resize(size, Image.BILINEAR).save(path, quality=88)


def generate(root, seed=0, workers=2, scale=1.0) -> Path:
    """The set under root/dogImages; scale < 1 keeps every class with fewer images (at least one a split)."""
    rng = random.Random(seed)
    tasks = []
    bounds = {"train": (26, 77), "valid": (3, 9), "test": (3, 10)}
    for split, total in TOTALS.items():
        low, high = (max(1, round(bound * scale)) for bound in bounds[split])
        total = min(max(round(total * scale), CLASSES * low), CLASSES * high)
        for index, count in enumerate(spread(total, rng, low, high)):
            name = f"{index + 1:03d}.Breed_{index + 1:03d}_{SHAPES[index % 6].title()}"
            colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(index / CLASSES, 0.75, 0.85))
            folder = Path(root) / "dogImages" / split / name
            folder.mkdir(parents=True, exist_ok=True)
            tasks += [
                (folder / f"{name}_{split}_{i:04d}.jpg", SHAPES[index % 6], colour, rng.getrandbits(32))
                for i in range(count)
            ]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(draw, tasks, chunksize=64))
    print(f"{len(tasks)} images under {Path(root) / 'dogImages'}")
    return Path(root) / "dogImages"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="a fraction of the images (benchmarks/gpu_check.py)")
    args = parser.parse_args()
    generate(args.root, args.seed, args.workers, args.scale)


if __name__ == "__main__":
    main()
