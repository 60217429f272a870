"""Writing files so that a reader never sees half of one.

Every output of the project (checkpoints, metrics.csv, figures, GIFs, reports, packs) is written
to a temporary name beside its destination and renamed over it: a crash or a full disk mid-write
leaves the previous file (or none), never a truncated one, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cvae.errors import DataError


class StorageError(DataError):
    """A storage location that cannot be opened, read or written."""


def _temp_name(path: Path) -> Path:
    # Same folder (a rename across filesystems is not atomic), hidden, unique per process, and
    # keeping the suffix so writers that pick a format from it (savefig, PIL) still do.
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write `path` through: renamed over `path` when the block ends without
    an error, removed (file or folder) when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # an empty destination folder: os.replace cannot replace it everywhere
        os.replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()




def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def swap_folder(new: Path, path: Path) -> None:
    """Put the finished folder `new` in place of the folder `path`: the old one stays until the
    new one is there, so a crash leaves one of the two complete."""
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    remove(old)
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    remove(old)


# ---- locations: a local path or a URI (s3://bucket/prefix?endpoint_override=..., gs://...) ----
#
# Every path a worker or the driver reads or writes may live on another machine's disk or in an
# object store. A location is opened through pyarrow.fs (what Ray Train and Ray Data use), so
# one code path serves local folders, shared mounts and buckets; options ride in the URI's query
# string and are kept when a location is extended with `join`.


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def join(location: str | Path, *parts: str) -> str:
    """`location`/part/... for a path or a URI (the URI's query string stays at the end)."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    base, sep, query = str(location).partition("?")
    tail = "/".join(p.strip("/") for p in parts if p)
    return f"{base.rstrip('/')}/{tail}{sep}{query}" if tail else str(location)


def parent(location: str | Path) -> str:
    """The folder holding `location` (a URI keeps its query string)."""
    if not is_uri(location):
        return str(Path(location).parent)
    base, sep, query = str(location).partition("?")
    return f"{base.rstrip('/').rsplit('/', 1)[0]}{sep}{query}"


def name(location: str | Path) -> str:
    """The last part of a location's path."""
    return str(location).partition("?")[0].rstrip("/").rsplit("/", 1)[-1]


def open_location(location: str | Path):
    """(pyarrow filesystem, path inside it) for a local path or a URI; a location pyarrow cannot
    open is one StorageError naming it."""
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    try:
        return pafs.FileSystem.from_uri(str(location))
    except (ValueError, OSError) as err:  # pyarrow.ArrowInvalid is a ValueError
        raise StorageError(f"{location}: not a storage location ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _io(location: str | Path, action: str):
    """Run an I/O action on a location, turning pyarrow's and the OS's errors into one line."""
    try:
        return action()
    except FileNotFoundError:
        raise StorageError(f"{location}: not found") from None
    except OSError as err:
        raise StorageError(f"{location}: {_reason(err)}") from None


def info(location: str | Path):
    """pyarrow FileInfo of a location (type NotFound when nothing is there)."""
    fs, path = open_location(location)
    return _io(location, lambda: fs.get_file_info(path))


def exists(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return info(location).type != pafs.FileType.NotFound


def is_dir(location: str | Path) -> bool:
    import pyarrow.fs as pafs

    return info(location).type == pafs.FileType.Directory


def read_location(location: str | Path) -> bytes:
    return read_file(*open_location(location), location)


def read_file(fs, path: str, location: str | Path | None = None) -> bytes:
    """A whole file read into memory from a pyarrow filesystem (`location`: its name in
    errors). The reader's own copy: nothing on disk that another process could rewrite while
    it reads."""

    def read() -> bytes:
        with fs.open_input_stream(path) as stream:
            return stream.read()

    return _io(path if location is None else location, read)


def read_json(location: str | Path, what: str) -> Any:
    """A JSON file's contents; an unreadable or malformed file is one DataError naming it."""
    data = read_location(location)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{location}: malformed {what} ({err})") from None


def write_location(location: str | Path, data: bytes) -> None:
    """Write a file at a location: atomically on a local disk (a temp file renamed), as one
    upload to an object store (which makes it visible whole)."""
    if not is_uri(location):
        write_bytes(location, data)
        return
    fs, path = open_location(location)

    def write() -> None:
        with fs.open_output_stream(path) as stream:
            stream.write(data)

    _io(location, write)


def delete_location(location: str | Path) -> None:
    """Delete the file at a location, if there is one."""
    if not is_uri(location):
        remove(Path(location))
        return
    if exists(location):
        fs, path = open_location(location)
        _io(location, lambda: fs.delete_file(path))


def list_names(location: str | Path) -> list[str]:
    """Names of the entries directly under a folder location ([] when it does not exist)."""
    import pyarrow.fs as pafs

    fs, path = open_location(location)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    return sorted(Path(i.path).name for i in _io(location, lambda: fs.get_file_info(selector)))


def copy_tree(source: str | Path, destination: str | Path) -> None:
    """Copy a folder (or one file) from one location to another, e.g. a bucket prefix to a local
    folder or back. Files of the same name are replaced; others at the destination stay."""
    import pyarrow.fs as pafs

    src_fs, src = open_location(source)
    dst_fs, dst = open_location(destination)
    if isinstance(dst_fs, pafs.LocalFileSystem):
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
    _io(source, lambda: pafs.copy_files(src, dst, source_filesystem=src_fs,
                                        destination_filesystem=dst_fs))


def sync_tree(source: str | Path, destination: str | Path, *, skip: tuple[str, ...] = (),
              seen: dict[str, tuple] | None = None) -> dict[str, tuple]:
    """Copy the files under `source` that are new or changed to the same relative paths under
    `destination`, each written whole (atomically on a local disk). A file counts as unchanged
    when `seen` (what an earlier call copied) has its size and time, or when the destination
    already holds it: the same size, written after it. Top-level entries named in `skip` are
    left out. Returns the updated `seen`; a source that does not exist copies nothing."""
    seen = {} if seen is None else seen
    there = {rel: (entry.size, entry.mtime_ns) for rel, entry in _files(destination)}
    for relative, entry in _files(source):
        key = (entry.size, entry.mtime_ns)
        have = there.get(relative)
        if relative.split("/")[0] in skip or seen.get(relative) == key or (
                have is not None and have[0] == entry.size and have[1] >= entry.mtime_ns):
            seen[relative] = key
            continue
        write_location(join(destination, *relative.split("/")),
                       read_location(join(source, *relative.split("/"))))
        seen[relative] = key
    return seen


def _files(location: str | Path) -> list[tuple[str, Any]]:
    """(path relative to `location`, FileInfo) of every file below it ([] if it is not there)."""
    import pyarrow.fs as pafs

    fs, root = open_location(location)
    selector = pafs.FileSelector(root, allow_not_found=True, recursive=True)
    prefix = len(root.rstrip("/"))
    entries = _io(location, lambda: fs.get_file_info(selector))
    return [(e.path[prefix:].lstrip("/"), e) for e in entries if e.type == pafs.FileType.File]
