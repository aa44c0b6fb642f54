"""A small labelled image set made offline, laid out like dogImages: {train,valid,test}/NNN.Name/*.jpg.

Each class is a shape in a colour family drawn at a random place, size and rotation over a noisy
background, on images of varied sizes: easy enough that a few CPU epochs learn it, hard enough that
accuracy is not trivially 100%. Deterministic for a given seed.
"""

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = [  # (folder name, shape, base colour)
    ("001.Red_Circle", "circle", (200, 40, 40)),
    ("002.Green_Square", "square", (40, 170, 60)),
    ("003.Blue_Triangle", "triangle", (40, 70, 200)),
    ("004.Yellow_Stripes", "stripes", (220, 200, 40)),
    ("005.Purple_Cross", "cross", (140, 50, 160)),
    ("006.Cyan_Ring", "ring", (40, 190, 200)),
]
SPLITS = {"train": 40, "valid": 8, "test": 10}  # images per class


def _jitter(colour, rng, amount=40):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in colour)


def draw_example(shape, colour, rng) -> Image.Image:
    width, height = rng.randint(64, 180), rng.randint(64, 180)
    background = tuple(rng.randint(90, 200) for _ in range(3))
    image = Image.effect_noise((width, height), rng.randint(20, 60)).convert("RGB")
    image = Image.blend(image, Image.new("RGB", (width, height), background), 0.6)
    draw = ImageDraw.Draw(image)
    size = rng.randint(min(width, height) // 3, int(min(width, height) * 0.8))
    x0, y0 = rng.randint(0, width - size), rng.randint(0, height - size)
    box = (x0, y0, x0 + size, y0 + size)
    fill = _jitter(colour, rng)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(x0 + size / 2, y0), (x0, y0 + size), (x0 + size, y0 + size)], fill=fill)
    elif shape == "stripes":
        for i in range(0, size, max(size // 5, 2) * 2):
            draw.rectangle((x0, y0 + i, x0 + size, y0 + i + max(size // 5, 2)), fill=fill)
    elif shape == "cross":
        third = size // 3
        draw.rectangle((x0 + third, y0, x0 + 2 * third, y0 + size), fill=fill)
        draw.rectangle((x0, y0 + third, x0 + size, y0 + 2 * third), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(size // 8, 2))
    return image.rotate(rng.uniform(-30, 30), fillcolor=background).filter(ImageFilter.GaussianBlur(rng.uniform(0, 1)))


def generate(root, seed=0, classes=None, per_split=None, corrupt_file=True) -> Path:
    """Write the demo set under root/dogImages and return that folder.

    classes / per_split shrink it for tests. With corrupt_file, one truncated JPEG is planted so the
    demo shows rejected.csv at work.
    """
    rng = random.Random(seed)
    dataset = Path(root) / "dogImages"
    for split, count in (per_split or SPLITS).items():
        for folder, shape, colour in classes or CLASSES:
            breed = folder.split(".", 1)[1]
            target = dataset / split / folder
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw_example(shape, colour, rng).save(target / f"{breed}_{split}_{i:04d}.jpg", quality=90)
    if corrupt_file:
        first = min((dataset / "train").iterdir())
        good = next(first.iterdir()).read_bytes()
        (first / "truncated_download.jpg").write_bytes(good[: len(good) // 3])
    return dataset
