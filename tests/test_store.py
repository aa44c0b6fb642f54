from dogbreed.data import store


def test_sync_copies_only_what_changed_and_removes_what_is_gone(tmp_path):
    local = tmp_path / "channel"
    (local / "001.A").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (local / "001.A" / name).write_bytes(name.encode() * 100)
    uri = f"file://{tmp_path}/store/datasets/x/train"

    first = store.sync(local, uri)
    assert (first["uploaded"], first["unchanged"], first["removed"]) == (3, 0, 0)
    assert first["uri"] == (tmp_path / "store/datasets/x/train").as_uri()

    second = store.sync(local, uri)
    assert (second["uploaded"], second["unchanged"], second["removed"]) == (0, 3, 0)

    (local / "001.A/b.jpg").write_bytes(b"same size?" * 50)  # same length as before: the hash decides
    (local / "001.A/c.jpg").unlink()
    (local / "002.B").mkdir()
    (local / "002.B/d.jpg").write_bytes(b"d")
    third = store.sync(local, uri)
    assert (third["uploaded"], third["unchanged"], third["removed"]) == (2, 1, 1)
    stored = sorted(
        p.relative_to(tmp_path / "store/datasets/x/train").as_posix()
        for p in (tmp_path / "store/datasets/x/train").rglob("*")
        if p.is_file()
    )
    assert stored == ["001.A/a.jpg", "001.A/b.jpg", "002.B/d.jpg"]
    assert (tmp_path / "store/datasets/x/train/001.A/b.jpg").read_bytes() == b"same size?" * 50


def test_store_uris():
    assert store.local_path("file:///abs/store") == store.local_path("/abs/store")
    assert store.join("file:///s/", "datasets", "train") == "file:///s/datasets/train"
    try:
        store.local_path("gs://bucket/x")
    except store.StoreError as error:
        assert "file://" in str(error)
    else:
        raise AssertionError("gs:// accepted")
