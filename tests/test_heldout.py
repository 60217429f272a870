"""Exact values of the scores on small synthetic cases: SSIM, the held-out score, the views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cvae.evaluate import copy_last_baseline, copy_last_ssim, ssim
from cvae.heldout import load_truth, overall, score_sequence, scores_csv, summary_csv
from cvae.montage import strip_steps, write_compare_gif, write_strip


def _frames(t: int, h: int = 32, w: int = 64, seed: int = 0) -> torch.Tensor:
    """Random float frames [t,3,h,w] in [0,1]."""
    return torch.rand(t, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [(32, 64), (10, 20), (5, 7)])  # narrower than the 11-px window
def test_ssim_of_identical_frames_is_one(size):
    frames = _frames(4, *size)
    assert ssim(frames, frames).tolist() == pytest.approx([1.0] * 4, abs=1e-6)


def test_ssim_is_per_frame_and_lower_for_other_frames():
    a, b = _frames(3), _frames(3, seed=1)
    mixed = torch.stack([a[0], b[1], a[2]])
    values = ssim(mixed, a).tolist()
    assert values[0] == pytest.approx(1.0, abs=1e-6) and values[2] == pytest.approx(1.0, abs=1e-6)
    assert values[1] < 0.1  # independent noise: no structure in common


def test_copy_last_baseline_psnr_matches_numpy():
    frames = _frames(5, 8, 12)
    arr = frames.double().numpy()
    expected = [10 * np.log10(1 / np.mean((arr[0] - arr[t]) ** 2)) for t in range(1, 5)]
    assert copy_last_baseline(frames) == pytest.approx(expected, abs=1e-4)
    assert copy_last_ssim(frames[:1].expand(3, -1, -1, -1)) == pytest.approx([1.0, 1.0], abs=1e-6)


def _uint8(frames: torch.Tensor) -> torch.Tensor:
    return frames.mul(255).round().to(torch.uint8)


def test_a_model_that_outputs_the_truth_scores_perfectly():
    truth = _uint8(_frames(4))
    score = score_sequence(3, truth.numpy(), truth[0], truth)
    assert score.index == 3
    assert score.psnr == pytest.approx([100.0] * 3)  # MSE 0, clamped at 1e-10
    assert score.ssim == pytest.approx([1.0] * 3, abs=1e-6)
    arr = truth.double().numpy() / 255
    expected = [10 * np.log10(1 / np.mean((arr[0] - arr[t]) ** 2)) for t in range(1, 4)]
    assert score.baseline_psnr == pytest.approx(expected, abs=1e-4)
    assert all(s < 0.1 for s in score.baseline_ssim)


def test_a_model_that_copies_frame0_scores_as_the_baseline():
    truth = _uint8(_frames(5))
    copies = truth[:1].expand_as(truth).numpy()
    score = score_sequence(0, copies, truth[0], truth)
    assert score.psnr == pytest.approx(score.baseline_psnr)
    assert score.ssim == pytest.approx(score.baseline_ssim)


def test_scores_csv_and_summary():
    truth = _uint8(_frames(3))
    scores = [score_sequence(k, truth.numpy(), truth[0], truth) for k in (0, 4)]
    lines = scores_csv(scores).splitlines()
    assert lines[0] == "sequence,frame,psnr,baseline_psnr,ssim,baseline_ssim"
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["0", "1"], ["0", "2"], ["4", "1"], ["4", "2"]]
    summary = summary_csv(scores).splitlines()
    assert [line.split(",")[:2] for line in summary[1:]] == [["0", "2"], ["4", "2"], ["all", "4"]]
    assert overall(scores)["test_psnr"] == pytest.approx(100.0)


def test_no_truth_folder_means_no_score(lab):
    assert load_truth(lab, [0, 1], 10, 20, 3) is None


@pytest.mark.parametrize(("length", "steps"), [
    (630, [1, 10, 50, 100, 200, 400, 629]), (100, [1, 10, 50, 99]), (2, [1]), (11, [1, 10])])
def test_strip_steps_are_capped_to_the_length(length, steps):
    assert strip_steps(length) == steps


def test_views_have_one_panel_or_row_per_source(tmp_path):
    a = _uint8(_frames(12, 8, 10)).numpy()
    sources = {"truth": a, "prediction": a[::-1].copy(), "copy frame 0": np.broadcast_to(a[:1],
                                                                                      a.shape)}
    write_compare_gif(sources, tmp_path / "c.gif", fps=10, scale=2)
    with Image.open(tmp_path / "c.gif") as im:
        assert im.n_frames == 12 and im.size == (3 * 20 + 2 * 2, 14 + 16)
    write_strip(sources, tmp_path / "s.png", scale=2)
    with Image.open(tmp_path / "s.png") as im:
        assert im.size[1] == 14 + 3 * (16 + 2)  # three rows under the step labels
        assert im.format == "PNG"
    assert not list(tmp_path.glob(".*tmp*"))
