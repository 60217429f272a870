"""The smoothed validation PSNR (val_psnr_avg3): a trailing mean over validated epochs."""

from __future__ import annotations

import pytest

from cvae.smoothing import SMOOTHED, fill_smoothed, smoothed_psnr, trailing_mean


def test_trailing_mean_uses_at_most_the_last_three():
    assert trailing_mean([]) is None
    assert trailing_mean([20.0]) == 20.0
    assert trailing_mean([20.0, 22.0]) == 21.0
    assert trailing_mean([10.0, 20.0, 22.0, 24.0]) == pytest.approx(22.0)


def test_one_lucky_epoch_moves_the_smoothed_figure_by_a_third():
    rows = [{"epoch": 1, "val_psnr": 20.0}, {"epoch": 2, "val_psnr": 20.0}]
    assert smoothed_psnr(rows, 21.8) == pytest.approx(20.6)


def test_epochs_without_validation_are_skipped():
    rows = [{"epoch": 1, "val_psnr": 18.0}, {"epoch": 2, "val_psnr": None},
            {"epoch": 3, "val_psnr": 20.0}]
    assert smoothed_psnr(rows, 22.0) == pytest.approx(20.0)


def test_fill_keeps_written_values_and_fills_missing_ones():
    rows = [{"epoch": 1, "val_psnr": 18.0}, {"epoch": 2, "val_psnr": None},
            {"epoch": 3, "val_psnr": 20.0, SMOOTHED: 99.0}, {"epoch": 4, "val_psnr": 22.0}]
    filled = fill_smoothed(rows)
    assert [r.get(SMOOTHED) for r in filled] == [18.0, None, 99.0, pytest.approx(20.0)]
    assert SMOOTHED not in rows[0]  # the input is left alone
