"""Fetch an iterator's first item in a background thread.

`fit` primes the next epoch's batches before validating, so a data pipeline's per-epoch start-up
(Ray Data plans and starts its streaming split anew every epoch: seconds) overlaps the validation
rollout instead of stalling the next epoch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Primed(Generic[T]):
    """An iterator whose first item is fetched now, in a background thread; errors raised while
    fetching it are raised again in the consumer's thread."""

    _END = object()

    def __init__(self, iterator: Iterator[T]):
        self._iterator = iterator
        self._first: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._fetch, name="prime-next-epoch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first = next(self._iterator, self._END)
        except BaseException as err:  # re-raised in the consumer's thread
            self._error = err

    def __iter__(self) -> Primed[T]:
        return self

    def __next__(self) -> T:
        if self._thread is None:
            return next(self._iterator)
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        first, self._first = self._first, None
        if first is self._END:
            raise StopIteration
        return first
