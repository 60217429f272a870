"""The next epoch's batches, primed early (cvae.prefetch.Primed)."""

from __future__ import annotations

import pytest

from cvae.errors import CvaeError
from cvae.prefetch import Primed


def test_primed_iterator_yields_everything_in_order():
    primed = Primed(iter([1, 2, 3]))
    assert list(primed) == [1, 2, 3]
    assert list(Primed(iter([]))) == []


def test_primed_iterator_fetches_the_first_item_before_it_is_asked():
    fetched = []

    def source():
        fetched.append("first")
        yield "a"
        fetched.append("second")
        yield "b"

    primed = Primed(source())
    primed._thread.join(timeout=10)
    assert fetched == ["first"]  # fetched in the background, the rest left for later
    assert next(primed) == "a" and fetched == ["first"]
    assert next(primed) == "b"


def test_primed_iterator_reraises_the_sources_error_in_the_consumer():
    def broken():
        raise CvaeError("shard 3 is corrupt")
        yield

    with pytest.raises(CvaeError, match="shard 3 is corrupt"):
        next(Primed(broken()))
