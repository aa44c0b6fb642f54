"""Prepare stage: verify every image, convert it to RGB where needed, split, and lay out the channels.

Every visible file under the source ends up in exactly one of two tables:
  manifest.csv  path (in the channels folder), split, class_index, breed, sha256, width, height,
                source (path in the source), converted_from (the original mode, when converted)
  rejected.csv  source, reason
Hidden files and folders (".*", "__MACOSX") are not data and are skipped.

Layouts understood: {train,valid,test}/<class>/... (a split the source has is kept; a missing valid or
test split is carved out of train) or <class>/... (split here). Class folders named `NNN.Name` keep
their number (index = NNN - 1); other names are numbered in sorted order.
"""

import csv
import hashlib
import json
import random
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from dogbreed.runtime.rule_runner import say

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
    "testing": "test",
}
NUMBERED = re.compile(r"^(\d+)\.(.+)$")
MANIFEST_COLUMNS = ["path", "split", "class_index", "breed", "sha256", "width", "height", "source", "converted_from"]


class PrepareError(RuntimeError):
    pass


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name == "__MACOSX"


def visible_children(folder: Path):
    return sorted(p for p in folder.iterdir() if not is_hidden(p))


def visible_files(folder: Path):
    """Every non-hidden file below folder (hidden folders are not entered)."""
    for child in visible_children(folder):
        if child.is_dir():
            yield from visible_files(child)
        elif child.is_file():
            yield child


def find_dataset_root(root: Path) -> Path:
    """Step down through wrapper folders (a zip's `dogImages/`): folders that hold one folder and no files."""
    root = Path(root)
    while True:
        children = visible_children(root)
        if len(children) != 1 or not children[0].is_dir() or children[0].name.lower() in SPLIT_ALIASES:
            return root
        grandchildren = visible_children(children[0])
        # a wrapper holds split folders, or only folders (class folders); a class folder holds files
        if any(g.is_dir() and g.name.lower() in SPLIT_ALIASES for g in grandchildren) or all(
            g.is_dir() for g in grandchildren
        ):
            root = children[0]
        else:
            return root


def class_key(folder_name: str):
    """(number or None, breed) from a class folder name."""
    match = NUMBERED.match(folder_name)
    return (int(match.group(1)), match.group(2)) if match else (None, folder_name)


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS = 100_000_000, 40_000_000  # data.max_image_bytes, data.max_image_pixels


def inspect_image(path: Path, max_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_IMAGE_PIXELS) -> dict:
    """Open, fully decode and hash one file; say why it is unusable, if it is. Its size is checked
    before it is read, its pixel count (from the header) before it is decoded."""
    size = path.stat().st_size
    if size > max_bytes:
        return {"sha256": None, "error": f"too large a file ({size:,} bytes; data.max_image_bytes is {max_bytes:,})"}
    data = path.read_bytes()
    result = {"sha256": hashlib.sha256(data).hexdigest(), "error": None}
    try:
        with Image.open(path) as image:
            if image.width * image.height > max_pixels:
                result["error"] = (
                    f"too many pixels ({image.width}x{image.height}; data.max_image_pixels is "
                    f"{max_pixels:,}): not decoded"
                )
                return result
            image.verify()  # structure and checksums, before paying for a decode
        with Image.open(path) as image:
            image.load()  # decodes every pixel: catches truncated files verify() lets through
            result.update(
                width=image.width,
                height=image.height,
                mode=image.mode,
                format=image.format,
                rotated=image.getexif().get(0x0112, 1) not in (1, None),
            )
    except UnidentifiedImageError:
        result["error"] = "not an image (unrecognised file format)"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        result["error"] = f"unreadable or corrupt image ({error})"
    return result


def convert_to_rgb(source: Path, target: Path):
    """Grey, CMYK, palette, alpha, 16-bit, EXIF-rotated → plain RGB PNG (lossless)."""
    with Image.open(source) as image:
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", image.size, (255, 255, 255))
            image.paste(rgba, mask=rgba.getchannel("A"))  # transparent → white, not black
        image = ImageOps.exif_transpose(image.convert("RGB"))
        image.save(target, format="PNG")


def carve(files_by_class: dict, fractions: dict, seed: int) -> dict:
    """Split each class's files into {split: [files]} by fractions of the total, deterministically.

    A class with at least three images gets at least one in each split asked for.
    """
    out = {split: [] for split in fractions}
    for index in sorted(files_by_class):
        files = sorted(files_by_class[index])
        random.Random(f"{seed}-{index}").shuffle(files)
        counts = {split: round(len(files) * fraction) for split, fraction in fractions.items() if split != "train"}
        if len(files) >= 3:
            counts = {split: max(count, 1) if fractions[split] > 0 else 0 for split, count in counts.items()}
        while sum(counts.values()) >= len(files) and any(counts.values()):  # train keeps at least one
            largest = max(counts, key=counts.get)
            counts[largest] -= 1
        start = 0
        for split, count in counts.items():
            out[split] += files[start : start + count]
            start += count
        out["train"] += files[start:]
    return out


class Rejections:
    """The files left out and why. When prepare stops, what it rejected so far is written beside the outputs (the
    message points at it: Snakemake deletes a failed rule's outputs, rejected.csv among them, but not this)."""

    def __init__(self, source_root: Path, out_dir: Path):
        self.source_root, self.items = source_root, []  # (file, reason)
        self.so_far = out_dir / "rejected.failed.csv"
        self.so_far.unlink(missing_ok=True)

    def add(self, file, reason):
        self.items.append((file, reason))

    def fail(self, message):
        write_rejected(self.so_far, self.items, self.source_root)
        raise PrepareError(message)


def prepare(
    source_root,
    out_dir,
    valid_fraction=0.1,
    test_fraction=0.1,
    seed=0,
    min_size=32,
    workers=1,
    max_bytes=MAX_IMAGE_BYTES,
    max_pixels=MAX_IMAGE_PIXELS,
):
    source_root = find_dataset_root(Path(source_root))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejected = Rejections(source_root, out_dir)
    candidates, split_folders = find_candidates(source_root, rejected)
    index_of, classes = number_classes(candidates, source_root)
    checks = verify_images([file for file, _, _ in candidates], workers, max_bytes, max_pixels)
    usable = keep_usable(candidates, checks, index_of, min_size, rejected)
    usable_classes = sorted({classes[index] for _, _, index, _ in usable})
    if len(usable_classes) < 2:
        rejected.fail(
            f"{len(usable_classes)} class{'es' if len(usable_classes) != 1 else ''} with usable images under "
            f"{source_root} ({', '.join(usable_classes) or 'none'}): a classifier needs at least two "
            f"(rejected files: {rejected.so_far})"
        )
    fractions = {
        "train": 0.0,
        "valid": valid_fraction if "valid" not in split_folders else 0.0,
        "test": test_fraction if "test" not in split_folders else 0.0,
    }
    by_split = assign_splits(usable, split_folders, fractions, seed)
    rows = write_channels(usable, by_split, classes, out_dir / "channels", source_root)
    for split in SPLITS:
        if not any(row["split"] == split for row in rows):
            rejected.fail(
                f"the {split} split is empty after preparing {source_root} ({len(rows)} usable images, "
                f"{len(rejected.items)} rejected: {rejected.so_far})"
            )
    warnings = class_warnings(rows, classes)
    for warning in warnings:
        say(f"warning: {warning}")
    write_csv(out_dir / "manifest.csv", MANIFEST_COLUMNS, rows)
    write_rejected(out_dir / "rejected.csv", rejected.items, source_root)
    (out_dir / "classes.json").write_text(
        json.dumps({str(index): classes[index] for index in sorted(classes)}, indent=2, ensure_ascii=False)
    )
    return {
        "usable": len(rows),
        "rejected": len(rejected.items),
        "classes": len(classes),
        "per_split": {split: len(by_split[split]) for split in SPLITS},
        "warnings": warnings,
    }


def find_candidates(source_root: Path, rejected: Rejections) -> tuple:
    """([(file, split or None, class folder name)], {split: its folder}) from the layout: split folders, or class
    folders only. Files outside a class folder, and paths with a control character, are rejected."""
    children = visible_children(source_root)
    split_folders = {
        SPLIT_ALIASES[c.name.lower()]: c for c in children if c.is_dir() and c.name.lower() in SPLIT_ALIASES
    }
    candidates = []
    if split_folders:
        for child in children:
            if child.is_dir() and child.name.lower() in SPLIT_ALIASES:
                continue
            for file in [child] if child.is_file() else visible_files(child):
                rejected.add(file, "not under a split folder (train/valid/test) although the source is split")
        for split, folder in split_folders.items():
            for child in visible_children(folder):
                if child.is_file():
                    rejected.add(child, f"not inside a class folder of {folder.name}/")
                    continue
                candidates += [(file, split, child.name) for file in visible_files(child)]
    else:
        for child in children:
            if child.is_file():
                rejected.add(child, "not inside a class folder")
                continue
            candidates += [(file, None, child.name) for file in visible_files(child)]
    # A name with a newline or another control character breaks the tables and the jobs downstream.
    named = []
    for file, split, folder in candidates:
        if CONTROL_CHARACTERS.search(str(file.relative_to(source_root))):
            rejected.add(
                file, f"its path holds a control character ({str(file.relative_to(source_root))!r}): rename it"
            )
        else:
            named.append((file, split, folder))
    if not named:
        rejected.fail(
            f"no class folders with usable files under {source_root}: expected train/valid/test/<class>/<image> "
            f"or <class>/<image> (rejected files: {rejected.so_far})"
        )
    return named, split_folders


def number_classes(candidates, source_root) -> tuple:
    """({class folder: index}, {index: breed}): NNN numbering when every folder has it, else sorted names."""
    folder_names = sorted({name for _, _, name in candidates})
    keys = {name: class_key(name) for name in folder_names}
    if all(number is not None for number, _ in keys.values()):
        index_of = {name: number - 1 for name, (number, _) in keys.items()}
    else:
        breeds = sorted({breed for _, breed in keys.values()})
        index_of = {name: breeds.index(keys[name][1]) for name in folder_names}
    classes = {}
    for name, index in index_of.items():
        breed = keys[name][1]
        if classes.setdefault(index, breed) != breed:
            raise PrepareError(
                f"class number {index + 1:03d} names two breeds: {classes[index]!r} and {breed!r} "
                f"(folders under {source_root}); rename one of them"
            )
    return index_of, classes


def verify_images(files, workers, max_bytes, max_pixels) -> list:
    """inspect_image of every file, in parallel: decoding thousands of JPEGs is the slow part."""
    with ProcessPoolExecutor(max_workers=max(workers, 1)) as pool:
        return list(
            tqdm(
                pool.map(inspect_image, files, [max_bytes] * len(files), [max_pixels] * len(files), chunksize=32),
                total=len(files),
                desc="verify images",
                unit="img",
            )
        )


def keep_usable(candidates, checks, index_of, min_size, rejected: Rejections) -> list:
    """[(file, split, class index, check)] of the usable images. The first copy of duplicates is kept: train before
    valid before test, so a test image that also sits in train is rejected rather than leaking into the score."""
    split_order = {"train": 0, "valid": 1, "test": 2, None: 0}
    order = sorted(range(len(candidates)), key=lambda i: (split_order[candidates[i][1]], str(candidates[i][0])))
    first_seen, usable = {}, []
    for i in order:
        file, split, folder = candidates[i]
        check = checks[i]
        if check["error"]:
            rejected.add(file, check["error"])
        elif min(check["width"], check["height"]) < min_size:
            rejected.add(file, f"too small ({check['width']}x{check['height']}; data.min_image_size is {min_size})")
        elif check["sha256"] in first_seen:
            rejected.add(file, f"duplicate of {first_seen[check['sha256']].relative_to(rejected.source_root)}")
        else:
            first_seen[check["sha256"]] = file
            usable.append((file, split, index_of[folder], check))
    return usable


def assign_splits(usable, split_folders, fractions, seed) -> dict:
    """{split: [files]}: the source's splits kept; a missing valid or test split carved out of train, stratified."""
    by_split = {split: [] for split in SPLITS}
    pool_for_carving = {}
    for file, split, index, _ in usable:
        if split is None or (split == "train" and not ({"valid", "test"} <= split_folders.keys())):
            pool_for_carving.setdefault(index, []).append(file)
        else:
            by_split[split].append(file)
    for split, carved in carve(pool_for_carving, fractions, seed).items():
        by_split[split] += carved
    return by_split


def write_channels(usable, by_split, classes, channels: Path, source_root) -> list:
    """Copy (or convert to RGB) each usable image into channels/<split>/<NNN.Breed>/; the manifest's rows."""
    split_of = {file: split for split, split_files in by_split.items() for file in split_files}
    shutil.rmtree(channels, ignore_errors=True)
    rows = []
    for file, _, index, check in tqdm(usable, desc="write channels", unit="img"):
        split = split_of[file]
        folder = channels / split / f"{index + 1:03d}.{classes[index]}"
        folder.mkdir(parents=True, exist_ok=True)
        needs_conversion = check["mode"] != "RGB" or check["rotated"]
        name = file.stem + ".png" if needs_conversion else file.name
        target = folder / name
        if target.exists():  # same name from two nested folders of one class
            target = folder / f"{check['sha256'][:12]}-{name}"
        if needs_conversion:
            convert_to_rgb(file, target)
        else:
            shutil.copyfile(file, target)
        rows.append(
            {
                "path": target.relative_to(channels).as_posix(),
                "split": split,
                "class_index": index,
                "breed": classes[index],
                "sha256": check["sha256"],
                "width": check["width"],
                "height": check["height"],
                "source": file.relative_to(source_root).as_posix(),
                "converted_from": check["mode"] if needs_conversion else "",
            }
        )
    rows.sort(key=lambda row: (SPLITS.index(row["split"]), row["path"]))
    return rows


def class_warnings(rows, classes) -> list:
    """A class too small to appear in every split is kept, and said (the run report lists it too)."""
    warnings = []
    for index in sorted({row["class_index"] for row in rows}):
        missing = [
            split for split in SPLITS if not any(r["split"] == split and r["class_index"] == index for r in rows)
        ]
        if missing:
            warnings.append(
                f"class {classes[index]} has no {' and no '.join(missing)} images "
                f"({sum(r['class_index'] == index for r in rows)} usable): it is not scored on what it lacks"
            )
    return warnings


def write_rejected(path, rejected, source_root):
    write_csv(
        path,
        ["source", "reason"],
        [
            {"source": Path(file).relative_to(source_root).as_posix(), "reason": reason}
            for file, reason in sorted(rejected, key=lambda item: str(item[0]))
        ],
    )


def write_csv(path, columns, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
