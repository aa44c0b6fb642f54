import functools
import hashlib
import http.server
import io
import stat
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import jpeg_bytes
from dogbreed.data import download


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


DOG_ZIP = {f"dogImages/{split}/001.Affenpinscher/a_{split}.jpg": jpeg_bytes() for split in ("train", "valid", "test")}


def test_zip_is_extracted_and_the_dataset_found(tmp_path):
    archive = make_zip(tmp_path / "dogImages.zip", DOG_ZIP)
    info = download.fetch(str(archive), tmp_path / "raw")
    assert info["kind"] == "archive"
    assert (Path(info["root"]) / "dogImages/train/001.Affenpinscher/a_train.jpg").is_file()


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "dogImages/../../escape.txt"])
def test_a_zip_member_escaping_the_folder_refuses_the_archive(tmp_path, evil):
    archive = make_zip(tmp_path / "evil.zip", {**DOG_ZIP, evil: b"x"})
    with pytest.raises(download.FetchError, match="outside the extraction folder"):
        download.fetch(str(archive), tmp_path / "raw" / "deep")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "raw/escape.txt").exists()
    assert not (tmp_path / "raw/deep/extracted").exists()


def test_a_zip_symlink_refuses_the_archive(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("dogImages/train/001.A/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(link, "/etc/passwd")
    with pytest.raises(download.FetchError, match="symbolic link"):
        download.fetch(str(archive), tmp_path / "raw")


def test_checksum_is_verified(tmp_path):
    archive = make_zip(tmp_path / "dogImages.zip", DOG_ZIP)
    good = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert download.fetch(str(archive), tmp_path / "raw", data_sha256=good)["kind"] == "archive"
    with pytest.raises(download.FetchError, match="data_sha256"):
        download.fetch(str(archive), tmp_path / "raw2", data_sha256="0" * 64)


def test_folder_source_is_used_in_place_and_fingerprinted(tmp_path):
    (tmp_path / "dogs/beagle").mkdir(parents=True)
    (tmp_path / "dogs/beagle/a.jpg").write_bytes(jpeg_bytes())
    info = download.fetch(str(tmp_path / "dogs"), tmp_path / "raw")
    assert info == {"source": str(tmp_path / "dogs"), "kind": "folder", "root": str(tmp_path / "dogs")}
    before = download.source_fingerprint(str(tmp_path / "dogs"))
    (tmp_path / "dogs/beagle/b.jpg").write_bytes(jpeg_bytes((1, 2, 3)))
    assert download.source_fingerprint(str(tmp_path / "dogs")) != before
    assert download.source_hash(str(tmp_path / "dogs")) == download.source_hash(str(tmp_path / "dogs") + "/")


def test_unknown_source_is_a_clear_error(tmp_path):
    with pytest.raises(download.FetchError, match="neither 'demo', a URL"):
        download.fetch(str(tmp_path / "nope.zip"), tmp_path / "raw")


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/www."""
    (tmp_path / "www").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "www", f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_verified_and_extracted(tmp_path, http_server, capsys):
    www, url = http_server
    archive = make_zip(www / "dogImages.zip", DOG_ZIP)
    info = download.fetch(
        f"{url}/dogImages.zip", tmp_path / "raw", data_sha256=hashlib.sha256(archive.read_bytes()).hexdigest()
    )
    assert info["kind"] == "url"
    assert (Path(info["root"]) / "dogImages/test/001.Affenpinscher/a_test.jpg").is_file()
    assert (tmp_path / "raw/dogImages.zip").read_bytes() == archive.read_bytes()
    assert "download dogImages.zip" in capsys.readouterr().err  # the progress bar


def test_missing_url_and_offline_are_clear_errors(tmp_path, http_server):
    _, url = http_server
    with pytest.raises(download.FetchError, match="HTTP 404"):
        download.fetch(f"{url}/missing.zip", tmp_path / "raw")
    with pytest.raises(download.FetchError, match="offline"):
        download.fetch("http://127.0.0.1:9/dogImages.zip", tmp_path / "raw2")


def test_demo_source_generates_a_labelled_set(tmp_path):
    info = download.fetch("demo", tmp_path / "raw")
    root = Path(info["root"])
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "valid"]
    assert len(list((root / "train").iterdir())) == 6
    assert len(list(root.rglob("*.jpg"))) == 6 * (40 + 8 + 10) + 1  # + the planted truncated file


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path):
    """A few hundred KB that would unpack to 200 MB of zeros: refused from the archive's headers."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("dogImages/train/001.A/a.jpg", jpeg_bytes())
        with bundle.open("dogImages/train/001.A/zeros.jpg", "w", force_zip64=True) as member:
            for _ in range(200):
                member.write(bytes(1 << 20))
    assert archive.stat().st_size < 1_000_000
    with pytest.raises(
        download.FetchError, match=r"zeros.jpg' unpacks [\d,]+ bytes to 209,715,200 \(over 100x\): a decompression bomb"
    ):
        download.fetch(str(archive), tmp_path / "raw")
    assert not list((tmp_path / "raw").rglob("*.jpg"))  # nothing written
    with pytest.raises(
        download.FetchError, match=r"would unpack to 209,715,200 bytes, over 100,000,000.*max_member_bytes"
    ):
        download.fetch(str(archive), tmp_path / "raw", limits={"max_member_bytes": 10**8})


def test_a_tar_over_the_total_limit_is_refused(tmp_path):
    import tarfile

    archive = tmp_path / "dogImages.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for i in range(3):
            data = jpeg_bytes(colour=(i, 0, 0))
            info = tarfile.TarInfo(f"dogImages/train/001.A/{i}.jpg")
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    total = sum(len(jpeg_bytes(colour=(i, 0, 0))) for i in range(3))
    with pytest.raises(download.FetchError, match=rf"would unpack to {total:,} bytes, over 1,000.*max_total_bytes"):
        download.fetch(str(archive), tmp_path / "raw", limits={"max_total_bytes": 1000})
    assert download.fetch(str(archive), tmp_path / "raw")["kind"] == "archive"  # the defaults take it
