"""Validation (cvae.evaluate): the rollout, the copy-last baseline, one-step PSNR, regions."""

from __future__ import annotations

import math

import pytest
import torch

from cvae.config import load_config
from cvae.model import CVAE


def test_region_errors_split_background_and_dancer():
    from cvae.evaluate import region_errors

    T = 10
    truth = torch.zeros(T, 3, 4, 12)  # black room; a white 2x2 dancer walks 1 pixel per frame
    for t in range(T):
        truth[t, :, 1:3, t:t + 2] = 1.0
    pred = truth.clone()
    pred[1:, :, :, :] = 0.0  # a rollout that erased the dancer at once
    rows = region_errors(pred, truth, window=4)
    assert [(r["first_frame"], r["last_frame"]) for r in rows] == [(1, 4), (5, 8), (9, 9)]
    for r in rows:
        assert r["dancer_mse"] == pytest.approx(1.0)  # all of the dancer is missing
        assert r["background_mse"] == pytest.approx(0.0)  # and the room is exact
        assert r["mse"] == pytest.approx(4 / 48)  # 4 of 48 pixels wrong by 1
    # The baseline repeats frame 0: the dancer is missing where it went and stays where it was
    # (background pixels); frame 1 still overlaps frame 0 by one column.
    first = rows[0]
    assert first["baseline_dancer_mse"] == pytest.approx((2 + 4 + 4 + 4) / 16)
    assert first["baseline_background_mse"] == pytest.approx((2 + 4 + 4 + 4) / (4 * 44))
    # no dancer in a window: its dancer figures are nan, not a division error
    still = region_errors(torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 4, 4))
    assert math.isnan(still[0]["dancer_mse"]) and still[0]["background_mse"] == 0.0


def test_validation_reports_the_rollout_the_baseline_and_one_step():
    from cvae.evaluate import validate
    from cvae.model import init_copy_last

    torch.manual_seed(0)
    model = CVAE(load_config(None, preset="small").model)
    init_copy_last(model)  # predicts the previous frame: it IS the copy-last baseline
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(20, 3, 32, 64, generator=g), torch.rand(20, 3, 32, 64, generator=g)
    v = validate(model, frames, poses, short_len=5, device=torch.device("cpu"))
    m = v.metrics()
    assert len(v.psnr) == len(v.baseline) == 19
    assert len(v.one_step) == len(v.one_step_baseline) == 5
    # Rollout from frame 0: the baseline, given the same, repeats frame 0 -- as this model does.
    torch.testing.assert_close(torch.tensor(v.psnr), torch.tensor(v.baseline))
    assert m["val_psnr"] == pytest.approx(m["baseline_psnr"])
    assert m["val_psnr_short"] == pytest.approx(m["baseline_psnr_short"])
    assert len(v.ssim) == len(v.baseline_ssim) == 19
    torch.testing.assert_close(torch.tensor(v.ssim), torch.tensor(v.baseline_ssim))
    assert m["val_ssim_short"] == pytest.approx(m["baseline_ssim_short"])
    assert all(-1 <= s < 1 for s in v.baseline_ssim)  # random frames: not alike
    # One step: the baseline copies the true previous frame -- as this model does.
    torch.testing.assert_close(torch.tensor(v.one_step), torch.tensor(v.one_step_baseline))
    assert m["val_psnr_one_step"] == pytest.approx(m["baseline_psnr_one_step"])
    # the two baselines differ: frame 0 repeated vs the true previous frame
    truth = frames.float()
    expected = [float(10 * torch.log10(1 / ((truth[0] - truth[t]) ** 2).mean())) for t in (1, 5)]
    assert [v.baseline[0], v.baseline[4]] == pytest.approx(expected, abs=1e-4)
    assert v.one_step_baseline[4] == pytest.approx(
        float(10 * torch.log10(1 / ((truth[4] - truth[5]) ** 2).mean())), abs=1e-4)
    assert model.training  # validate restores the mode it found
