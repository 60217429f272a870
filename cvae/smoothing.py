"""A validation PSNR that one lucky epoch cannot dominate.

The 630-frame validation PSNR can move by almost 2 dB between consecutive epochs, so ranking or
stopping runs on a single epoch's `val_psnr` rewards luck. `val_psnr_avg3` is the mean of the last
min(3, n) validated epochs' `val_psnr` (n validated so far): rank 0 adds it to every validated
epoch's metrics, from the run's own rows, so a resumed run continues the same window.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

RAW = "val_psnr"
WINDOW = 3
SMOOTHED = f"{RAW}_avg{WINDOW}"


def trailing_mean(values: Iterable[float], window: int = WINDOW) -> float | None:
    """The mean of the last `window` values (fewer when there are fewer); None for none."""
    tail = list(values)[-window:]
    return sum(tail) / len(tail) if tail else None


def _validated(rows: Iterable[dict[str, Any]]) -> list[float]:
    return [r[RAW] for r in rows if r.get(RAW) is not None and not math.isnan(r[RAW])]


def smoothed_psnr(rows: Iterable[dict[str, Any]], current: float) -> float:
    """The smoothed figure of an epoch whose val_psnr is `current`, after the run's earlier
    rows (epochs without validation are skipped)."""
    return trailing_mean([*_validated(rows), current])


def fill_smoothed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with `val_psnr_avg3` set on every validated row that lacks it (logs written
    before the column existed, or rebuilt from what Tune received). Returns new dicts."""
    out, seen = [], []
    for row in rows:
        row = dict(row)
        if row.get(RAW) is not None and not math.isnan(row[RAW]):
            seen.append(row[RAW])
            if row.get(SMOOTHED) is None:
                row[SMOOTHED] = trailing_mean(seen)
        out.append(row)
    return out
