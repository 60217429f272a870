"""Writing files so that a reader never sees half of one (cvae.storage)."""

from __future__ import annotations

import os

import pytest

from cvae import storage


def leftovers(folder) -> list[str]:
    """Names of temporary files or folders the writers left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_atomic_path_renames_over_the_destination_on_success(tmp_path):
    dest = tmp_path / "sub" / "metrics.csv"  # the parent folder is made
    with storage.atomic_path(dest) as tmp:
        assert tmp != dest and tmp.parent == dest.parent
        assert tmp.name == f".metrics.tmp-{os.getpid()}.csv"  # hidden, suffix kept
        tmp.write_text("new")
        assert not dest.exists()  # nothing at the destination until the block ends
    assert dest.read_text() == "new"
    assert leftovers(dest.parent) == []


def test_atomic_path_on_an_error_leaves_the_destination_and_no_temp_file(tmp_path):
    dest = tmp_path / "last.pt"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), storage.atomic_path(dest) as tmp:
        tmp.write_text("half of a new fi")
        raise RuntimeError("disk full")
    assert dest.read_text() == "old"
    assert leftovers(tmp_path) == []
    # the same with no destination yet: still nothing there afterwards
    fresh = tmp_path / "fresh.txt"
    with pytest.raises(KeyboardInterrupt), storage.atomic_path(fresh) as tmp:
        tmp.write_text("x")
        raise KeyboardInterrupt
    assert not fresh.exists() and leftovers(tmp_path) == []


def test_atomic_path_removes_a_temp_folder_on_an_error(tmp_path):
    dest = tmp_path / "pack"
    with pytest.raises(ValueError), storage.atomic_path(dest) as tmp:
        (tmp / "train").mkdir(parents=True)
        (tmp / "train" / "part-0.parquet").write_text("x")
        raise ValueError("bad shard")
    assert not dest.exists() and leftovers(tmp_path) == []


def test_atomic_path_replaces_an_empty_folder_with_a_written_one(tmp_path):
    dest = tmp_path / "data"
    dest.mkdir()
    with storage.atomic_path(dest) as tmp:
        tmp.mkdir()
        (tmp / "meta.json").write_text("{}")
    assert (dest / "meta.json").read_text() == "{}"
    assert leftovers(tmp_path) == []


def test_write_text_and_write_bytes_replace_an_existing_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("an old, longer report")
    assert storage.write_text(path, "new") == path
    assert path.read_text() == "new"
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x00" * 100)
    assert storage.write_bytes(data, b"\x01\x02") == data
    assert data.read_bytes() == b"\x01\x02"
    assert leftovers(tmp_path) == []


def test_swap_folder_replaces_a_non_empty_folder(tmp_path):
    final = tmp_path / "best"
    final.mkdir()
    (final / "checkpoint.pt").write_text("old")
    (final / "stale.txt").write_text("from the old folder")
    staging = tmp_path / ".best.tmp"
    staging.mkdir()
    (staging / "checkpoint.pt").write_text("new")
    storage.swap_folder(staging, final)
    assert sorted(p.name for p in final.iterdir()) == ["checkpoint.pt"]
    assert (final / "checkpoint.pt").read_text() == "new"
    assert not staging.exists() and leftovers(tmp_path) == []
    # into a place that holds nothing yet
    other = tmp_path / ".other.tmp"
    other.mkdir()
    storage.swap_folder(other, tmp_path / "first")
    assert (tmp_path / "first").is_dir() and not other.exists()


def test_remove_deletes_files_and_folders_and_ignores_what_is_gone(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d" / "e").mkdir(parents=True)
    storage.remove(tmp_path / "f")
    storage.remove(tmp_path / "d")
    storage.remove(tmp_path / "never_there")
    assert list(tmp_path.iterdir()) == []


# ---- locations: local paths and URIs alike ----

def test_join_parent_and_name_keep_a_uris_options():
    uri = "s3://bucket/runs?scheme=http&endpoint_override=127.0.0.1:9"
    assert storage.join(uri, "a", "b.pt") == \
        "s3://bucket/runs/a/b.pt?scheme=http&endpoint_override=127.0.0.1:9"
    assert storage.parent(storage.join(uri, "a")) == uri
    assert storage.name(storage.join(uri, "a", "b.pt")) == "b.pt"
    assert storage.join("/x/y", "z") == "/x/y/z" and storage.parent("/x/y") == "/x"


def test_a_location_pyarrow_cannot_open_is_one_error():
    with pytest.raises(storage.StorageError, match="nosuch://x: not a storage location"):
        storage.exists("nosuch://x")


def test_sync_tree_copies_new_and_changed_files_once(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "tb").mkdir(parents=True)
    (src / "metrics.csv").write_text("epoch\n1\n")
    (src / "tb" / "events").write_bytes(b"\0" * 10)
    (src / "checkpoints").mkdir()
    (src / "checkpoints" / "last.pt").write_bytes(b"big")
    seen = storage.sync_tree(src, dst, skip=("checkpoints",))
    assert (dst / "metrics.csv").read_text() == "epoch\n1\n"
    assert (dst / "tb" / "events").read_bytes() == b"\0" * 10
    assert not (dst / "checkpoints").exists()
    before = (dst / "tb" / "events").stat().st_mtime_ns
    (src / "metrics.csv").write_text("epoch\n1\n2\n")
    storage.sync_tree(src, dst, skip=("checkpoints",), seen=seen)
    assert (dst / "metrics.csv").read_text() == "epoch\n1\n2\n"
    assert (dst / "tb" / "events").stat().st_mtime_ns == before  # unchanged: not copied again
    # A fresh call (no `seen`) leaves what the destination already holds alone, too.
    storage.sync_tree(src, dst, skip=("checkpoints",))
    assert (dst / "tb" / "events").stat().st_mtime_ns == before


def test_sync_tree_of_a_missing_source_copies_nothing(tmp_path):
    assert storage.sync_tree(tmp_path / "none", tmp_path / "dst") == {}
    assert not (tmp_path / "dst").exists()


def test_locations_in_a_bucket(s3, tmp_path):
    uri = s3("storage-test")
    storage.write_location(storage.join(uri, "a", "x.txt"), b"hello")
    assert storage.exists(storage.join(uri, "a", "x.txt"))
    assert storage.read_location(storage.join(uri, "a", "x.txt")) == b"hello"
    assert storage.list_names(storage.join(uri, "a")) == ["x.txt"]
    storage.sync_tree(uri, tmp_path / "copy")
    assert (tmp_path / "copy" / "a" / "x.txt").read_bytes() == b"hello"
    with pytest.raises(storage.StorageError, match="not found"):
        storage.read_location(storage.join(uri, "missing.txt"))
