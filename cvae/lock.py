"""One writer per output folder: an OS file lock every writing command takes on its --out.

The lock is `<folder>/.lock` (the `filelock` package: flock on POSIX), so the OS frees it when
its process exits or crashes; nothing stale is left to clean up by hand. Beside it,
`<folder>/.lock.holder` names the holder (pid, host, command) so that a second writer's one-line
error says who has the folder. Ray workers write inside a folder whose driver holds the lock;
they take none themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cvae import storage
from cvae.errors import CvaeError

LOCK_FILE = ".lock"
HOLDER_FILE = ".lock.holder"


class FolderLocked(CvaeError):
    """Another process is writing into the folder."""


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def describe_holder(folder: Path) -> str:
    """Who holds a folder's lock, as its sidecar says (or that it does not say)."""
    try:
        h = json.loads((folder / HOLDER_FILE).read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def lock_folder(path: str | Path) -> Iterator[Path | str]:
    """Hold `path`'s writer lock for the block (the folder is made if needed). A second writer
    fails at once with one FolderLocked line naming the folder and the holder. A folder this
    call made and that is still empty afterwards (the command failed before writing) is removed.
    """
    import filelock

    if storage.is_uri(path):  # an object store has no file locks: the driver's host is the guard
        yield path
        return
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CvaeError(f"{folder}: exists and is not a folder (choose another --out)")
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(folder / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise FolderLocked(f"{folder}: another command is writing into it "
                           f"({describe_holder(folder)}); wait for it to finish, or choose "
                           "another --out") from None
    try:
        storage.write_text(folder / HOLDER_FILE, json.dumps(_holder()))
        yield folder
    finally:
        storage.remove(folder / HOLDER_FILE)
        lock.release()
        if made and {p.name for p in folder.iterdir()} <= {LOCK_FILE}:
            storage.remove(folder / LOCK_FILE)
            with contextlib.suppress(OSError):
                folder.rmdir()
