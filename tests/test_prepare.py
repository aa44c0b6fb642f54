import csv
import json
from pathlib import Path

import pytest
from conftest import write_image
from dogbreed.data import verify_split
from PIL import Image


def read_csv(path):
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_odd_files_are_used_or_rejected_never_dropped(tmp_path):
    src = tmp_path / "src" / "dogImages"
    write_image(src / "train/001.Affenpinscher/rgb.jpg", size=(64, 64))
    write_image(src / "train/001.Affenpinscher/grey.jpg", colour=120, mode="L")
    write_image(src / "train/001.Affenpinscher/cmyk.jpg", colour=(0, 100, 200, 10), mode="CMYK")
    write_image(src / "train/002.Chien_été/alpha.png", colour=(10, 200, 10, 128), mode="RGBA", fmt="PNG")
    (src / "train/002.Chien_été").mkdir(parents=True, exist_ok=True)
    palette = Image.new("P", (40, 40), 3)
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(src / "train/002.Chien_été/palette.png", transparency=3)
    write_image(src / "train/003.Saint Bernard/a.jpg", colour=(9, 9, 200))
    write_image(src / "train/003.Saint Bernard/nested/b.jpg", colour=(9, 9, 190))
    (src / "train/003.Saint Bernard/notes.txt").write_text("not an image")
    good = write_image(src / "train/003.Saint Bernard/c.jpg", colour=(9, 9, 180)).read_bytes()
    (src / "train/003.Saint Bernard/truncated.jpg").write_bytes(good[: len(good) // 2])
    write_image(src / "train/003.Saint Bernard/tiny.jpg", size=(10, 10))
    write_image(src / "train/loose.jpg")  # not in a class folder
    (src / "train/001.Affenpinscher/.DS_Store").write_text("hidden")  # hidden: not data
    write_image(src / "train/.cache/001.Affenpinscher/x.jpg")  # hidden folder: not data
    write_image(src / "README.jpg")  # at the root of a split source
    for split in ("valid", "test"):
        for i, name in enumerate(["001.Affenpinscher", "002.Chien_été", "003.Saint Bernard"]):
            write_image(src / f"{split}/{name}/{split}{i}.jpg", colour=(i * 60, 100 if split == "valid" else 50, 0))
    (src / "test/001.Affenpinscher/copy_of_rgb.jpg").write_bytes((src / "train/001.Affenpinscher/rgb.jpg").read_bytes())

    out = tmp_path / "out"
    summary = verify_split.prepare(tmp_path / "src", out)  # the wrapper folder dogImages/ is found
    manifest, rejected = read_csv(out / "manifest.csv"), read_csv(out / "rejected.csv")

    visible = [
        p for p in src.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(src).parts)
    ]
    assert len(manifest) + len(rejected) == len(visible) == summary["usable"] + summary["rejected"]
    reasons = {row["source"]: row["reason"] for row in rejected}
    assert "not an image" in reasons["train/003.Saint Bernard/notes.txt"]
    assert "corrupt" in reasons["train/003.Saint Bernard/truncated.jpg"]
    assert "too small" in reasons["train/003.Saint Bernard/tiny.jpg"]
    assert "class folder" in reasons["train/loose.jpg"]
    assert "split folder" in reasons["README.jpg"]
    assert reasons["test/001.Affenpinscher/copy_of_rgb.jpg"].startswith("duplicate of train/001.Affenpinscher/rgb.jpg")

    by_source = {row["source"]: row for row in manifest}
    assert by_source["train/001.Affenpinscher/grey.jpg"]["converted_from"] == "L"
    assert by_source["train/001.Affenpinscher/cmyk.jpg"]["converted_from"] == "CMYK"
    assert by_source["train/002.Chien_été/palette.png"]["converted_from"] == "P"
    assert by_source["train/003.Saint Bernard/nested/b.jpg"]["breed"] == "Saint Bernard"
    for row in manifest:
        with Image.open(out / "channels" / row["path"]) as image:
            assert image.mode == "RGB", row
    assert json.loads((out / "classes.json").read_text(encoding="utf-8")) == {
        "0": "Affenpinscher",
        "1": "Chien_été",
        "2": "Saint Bernard",
    }
    assert (out / "channels/train/002.Chien_été").is_dir()
    # transparent pixels become white, not black
    alpha = by_source["train/002.Chien_été/palette.png"]["path"]
    assert Image.open(out / "channels" / alpha).getpixel((0, 0)) == (255, 255, 255)


def make_unsplit(root, per_class):
    for c, name in enumerate(["beagle", "corgi", "pug"]):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", colour=(c * 80, i * 7 % 255, 40))


def test_unsplit_source_is_split_stratified_and_deterministically(tmp_path):
    make_unsplit(tmp_path / "src", 20)
    first = verify_split.prepare(tmp_path / "src", tmp_path / "a", valid_fraction=0.1, test_fraction=0.2, seed=3)
    verify_split.prepare(tmp_path / "src", tmp_path / "b", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert first["per_split"] == {"train": 42, "valid": 6, "test": 12}
    a, b = read_csv(tmp_path / "a/manifest.csv"), read_csv(tmp_path / "b/manifest.csv")
    assert [(r["source"], r["split"]) for r in a] == [(r["source"], r["split"]) for r in b]
    for breed in ("beagle", "corgi", "pug"):
        splits = [r["split"] for r in a if r["breed"] == breed]
        assert (splits.count("train"), splits.count("valid"), splits.count("test")) == (14, 2, 4)
    assert json.loads((tmp_path / "a/classes.json").read_text()) == {"0": "beagle", "1": "corgi", "2": "pug"}
    other_seed = verify_split.prepare(tmp_path / "src", tmp_path / "c", valid_fraction=0.1, test_fraction=0.2, seed=4)
    c = read_csv(tmp_path / "c/manifest.csv")
    assert other_seed["per_split"] == first["per_split"]
    assert {r["source"] for r in a if r["split"] == "test"} != {r["source"] for r in c if r["split"] == "test"}


def test_small_classes_still_reach_every_split(tmp_path):
    make_unsplit(tmp_path / "src", 3)
    summary = verify_split.prepare(tmp_path / "src", tmp_path / "out", valid_fraction=0.1, test_fraction=0.1)
    assert summary["per_split"] == {"train": 3, "valid": 3, "test": 3}


def test_missing_test_split_is_carved_from_train(tmp_path):
    for i in range(10):
        write_image(tmp_path / f"src/train/001.A/{i}.jpg", colour=(i * 20 + 10, 0, 0))
        write_image(tmp_path / f"src/train/002.B/{i}.jpg", colour=(0, i * 20 + 10, 0))
    write_image(tmp_path / "src/valid/001.A/v.jpg", colour=(1, 2, 3))
    write_image(tmp_path / "src/valid/002.B/v.jpg", colour=(3, 2, 1))
    summary = verify_split.prepare(tmp_path / "src", tmp_path / "out", test_fraction=0.2)
    assert summary["per_split"] == {"train": 16, "valid": 2, "test": 4}


def test_conflicting_class_numbers_are_a_clear_error(tmp_path):
    write_image(tmp_path / "src/train/001.A/x.jpg")
    write_image(tmp_path / "src/test/001.B/y.jpg", colour=(0, 0, 0))
    with pytest.raises(verify_split.PrepareError, match="001 names two breeds"):
        verify_split.prepare(tmp_path / "src", tmp_path / "out")


def test_a_source_without_class_folders_is_a_clear_error(tmp_path):
    write_image(tmp_path / "src/a.jpg")
    with pytest.raises(verify_split.PrepareError, match="no class folders"):
        verify_split.prepare(tmp_path / "src", tmp_path / "out")


def test_one_class_is_refused_naming_a_file_that_exists(tmp_path):
    for i in range(6):
        write_image(tmp_path / f"src/beagle/{i}.jpg", colour=(i * 30, 0, 0))
    write_image(tmp_path / "src/pug/tiny.jpg", size=(8, 8))  # its only image is rejected
    with pytest.raises(
        verify_split.PrepareError, match=r"1 class with usable images .*\(beagle\): a classifier needs at least two"
    ) as caught:
        verify_split.prepare(tmp_path / "src", tmp_path / "out")
    named = Path(str(caught.value).rsplit("rejected files: ", 1)[1].rstrip(")"))
    assert named.is_file() and "tiny.jpg" in named.read_text()


def test_a_class_too_small_for_every_split_is_kept_and_said(tmp_path, capsys):
    make_unsplit(tmp_path / "src", 10)
    write_image(tmp_path / "src/zz_rare/only.jpg", colour=(1, 99, 7))
    summary = verify_split.prepare(tmp_path / "src", tmp_path / "out")
    assert summary["warnings"] == [
        "class zz_rare has no valid and no test images (1 usable): it is not scored on what it lacks"
    ]
    assert "warning: class zz_rare has no valid and no test images" in capsys.readouterr().out


def test_control_characters_large_files_and_huge_images_are_rejected_before_reading(tmp_path):
    make_unsplit(tmp_path / "src", 6)
    write_image(tmp_path / "src/bad\nname/a.jpg", colour=(5, 5, 5))
    write_image(tmp_path / "src/beagle/tab\there.jpg", colour=(6, 6, 6))
    big = tmp_path / "src/beagle/big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(12000))  # over max_bytes: never opened
    Image.new("L", (3000, 3000)).save(tmp_path / "src/beagle/huge.png")  # 9 MP, a small file
    verify_split.prepare(tmp_path / "src", tmp_path / "out", max_bytes=10_000, max_pixels=1_000_000)
    reasons = {row["source"]: row["reason"] for row in read_csv(tmp_path / "out/rejected.csv")}
    assert "control character" in reasons["bad\nname/a.jpg"] and "control character" in reasons["beagle/tab\there.jpg"]
    assert reasons["beagle/big.jpg"].startswith("too large a file (12,002 bytes; data.max_image_bytes is 10,000)")
    assert reasons["beagle/huge.png"].startswith("too many pixels (3000x3000")
    manifest = read_csv(tmp_path / "out/manifest.csv")
    assert not any("\n" in row["path"] or "\t" in row["path"] for row in manifest)
