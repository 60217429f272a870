"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable


class CvaeError(Exception):
    """An error caused by the user's input (a file, a folder, a config key, a checkpoint)."""


class ConfigError(CvaeError):
    """A config key or value that cannot be used."""


class DataError(CvaeError):
    """A data file or folder that cannot be read as the expected layout."""


EXIT_USAGE = 2

# What the OS says, in words a user acts on; other errnos keep the OS's own text.
_OS_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied (read-only or not yours)",
    errno.EPERM: "permission denied (read-only or not yours)",
    errno.EROFS: "read-only file system",
    errno.EEXIST: "already exists",
    errno.ENOTDIR: "a file where a folder is needed",
    errno.EISDIR: "a folder where a file is needed",
    errno.ENOENT: "not found",
}


def os_error_line(err: OSError) -> str:
    """`<file>: <reason>` for a filesystem error: the file the OS named and why, in words."""
    reason = _OS_REASONS.get(err.errno) or err.strerror or type(err).__name__
    names = [n for n in (err.filename, err.filename2) if n is not None]
    where = " -> ".join(os.fsdecode(n) for n in names)
    return f"{where}: {reason}" if where else f"{reason} ({err})"


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script main so user errors print one line and exit 2: CvaeError, and
    OSError (what the filesystem refuses: a full disk, a read-only or missing folder, a file in
    the way). Anything else is a programming error and keeps its traceback."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except CvaeError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except OSError as err:  # the filesystem said no: a full disk, a read-only folder, ...
            print(f"error: {os_error_line(err)}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise SystemExit(code or 0)

    return wrapper
