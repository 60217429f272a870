"""User-facing errors: one clear line, exit code 2, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class CvaeError(Exception):
    """An error caused by the user's input (a file, a folder, a config key, a checkpoint)."""


class ConfigError(CvaeError):
    """A config key or value that cannot be used."""


class DataError(CvaeError):
    """A data file or folder that cannot be read as the expected layout."""


EXIT_USAGE = 2


def cli_entry(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a console-script main so user errors print one line and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
        except CvaeError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(EXIT_USAGE) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        raise SystemExit(code or 0)

    return wrapper
