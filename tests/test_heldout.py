"""Exact values of the scores on small synthetic cases: SSIM, the held-out score (with the
dancer-box scores and the late window), the views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cvae.evaluate import copy_last_baseline, copy_last_ssim, ssim
from cvae.heldout import (
    SequenceScore,
    goal_met,
    late,
    late_frames,
    load_truth,
    overall,
    score_sequence,
    scores_csv,
    summary_csv,
    summary_lines,
)
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


def _poses(t: int, h: int = 32, w: int = 64) -> torch.Tensor:
    """uint8 poses [t,3,h,w]: a skeleton line across rows 8..19 at columns 16..40."""
    poses = torch.zeros(t, 3, h, w, dtype=torch.uint8)
    poses[:, 1, 8:20, 16] = 255
    poses[:, 0, 8, 16:40] = 200
    return poses


def test_a_model_that_outputs_the_truth_scores_perfectly():
    truth = _uint8(_frames(4))
    score = score_sequence(3, truth.numpy(), truth[0], truth, _poses(4))
    assert score.index == 3
    assert score.psnr == pytest.approx([100.0] * 3)  # MSE 0, clamped at 1e-10
    assert score.ssim == pytest.approx([1.0] * 3, abs=1e-6)
    arr = truth.double().numpy() / 255
    expected = [10 * np.log10(1 / np.mean((arr[0] - arr[t]) ** 2)) for t in range(1, 4)]
    assert score.baseline_psnr == pytest.approx(expected, abs=1e-4)
    assert all(s < 0.1 for s in score.baseline_ssim)
    assert score.box_ssim == pytest.approx([1.0] * 3, abs=1e-6)
    assert score.sharpness == [1.0] * 3
    assert all(s < 0.1 for s in score.baseline_box_ssim)


def test_a_model_that_copies_frame0_scores_as_the_baseline():
    truth = _uint8(_frames(5))
    copies = truth[:1].expand_as(truth).numpy()
    score = score_sequence(0, copies, truth[0], truth, _poses(5))
    assert score.psnr == pytest.approx(score.baseline_psnr)
    assert score.ssim == pytest.approx(score.baseline_ssim)
    assert score.box_ssim == pytest.approx(score.baseline_box_ssim)
    assert score.sharpness == pytest.approx(score.baseline_sharpness)


def test_the_box_is_where_the_pose_is_and_an_empty_pose_scores_nan():
    truth = _uint8(_frames(4))
    pred = truth.clone()
    pred[:, :, :, 48:] = 0  # wrong far right of the box (columns 14..41): the box does not see it
    poses = _poses(4)
    poses[2] = 0  # frame 2's pose is empty
    score = score_sequence(0, pred.numpy(), truth[0], truth, poses)
    assert max(score.psnr) < 20 and max(score.ssim) < 0.9  # the whole frame sees the error
    assert score.box_ssim[0] == pytest.approx(1.0, abs=1e-6) and score.sharpness[0] == 1.0
    assert math.isnan(score.box_ssim[1]) and math.isnan(score.baseline_sharpness[1])
    means = score.means()
    assert means["box_ssim"] == pytest.approx(1.0, abs=1e-6)  # nan skipped
    assert not math.isnan(means["baseline_box_ssim"])


def test_scores_csv_and_summary():
    truth = _uint8(_frames(3))
    scores = [score_sequence(k, truth.numpy(), truth[0], truth, _poses(3)) for k in (0, 4)]
    lines = scores_csv(scores).splitlines()
    assert lines[0] == ("sequence,frame,psnr,baseline_psnr,ssim,baseline_ssim,box_ssim,"
                        "baseline_box_ssim,sharpness,baseline_sharpness")
    assert [line.split(",")[:2] for line in lines[1:]] == [
        ["0", "1"], ["0", "2"], ["4", "1"], ["4", "2"]]
    summary = summary_csv(scores).splitlines()
    assert summary[0].startswith("sequence,first_frame,last_frame,frames,psnr,")
    assert summary[0].endswith(",sharpness,baseline_sharpness")
    # per sequence, all, then the late window: the last 130 frames, here both (fewer)
    assert [line.split(",")[:4] for line in summary[1:]] == [
        ["0", "1", "2", "2"], ["4", "1", "2", "2"], ["all", "1", "2", "4"],
        ["late", "1", "2", "4"]]
    assert overall(scores)["test_psnr"] == pytest.approx(100.0)
    assert overall(scores)["test_sharpness"] == 1.0


def _fake_score(values: list[float], box: list[float] | None = None) -> SequenceScore:
    """A SequenceScore whose every score is `values` (box_ssim `box` when given)."""
    box = values if box is None else box
    return SequenceScore(0, values, values, values, values, box, values, values, values)


@pytest.mark.parametrize(("scored", "window"), [(629, (500, 629)), (130, (1, 130)),
                                                 (131, (2, 131)), (5, (1, 5))])
def test_late_window_is_the_last_130_predicted_frames(scored, window):
    frames = late_frames([_fake_score([0.0] * scored)])
    assert (frames.start, frames.stop - 1) == window and len(frames) == min(scored, 130)


def test_late_means_cover_frames_500_to_629_only():
    nan = math.nan
    early, tail = [0.0] * 499, [1.0] * 129 + [nan]  # frames 1..499, 500..629 (629 is nan)
    scores = [_fake_score(early + tail), _fake_score(early + [3.0] * 130)]
    summary = late(scores)
    assert (summary["late_first_frame"], summary["late_last_frame"]) == (500, 629)
    assert summary["test_late_sharpness"] == pytest.approx((129 * 1.0 + 130 * 3.0) / 259)
    assert overall(scores)["test_psnr"] < 1  # the whole rollout is mostly the early zeros
    rows = {line.split(",")[0]: line.split(",") for line in summary_csv(scores).splitlines()}
    assert rows["late"][1:4] == ["500", "629", "260"]
    assert float(rows["late"][4]) == pytest.approx(summary["test_late_psnr"], abs=1e-4)


def test_goal_needs_box_ssim_above_the_baseline_and_sharpness_08():
    def means(box, baseline, sharp):
        return {"test_late_box_ssim": box, "test_late_baseline_box_ssim": baseline,
                "test_late_sharpness": sharp}

    assert goal_met(means(0.6, 0.5, 0.8))
    assert not goal_met(means(0.6, 0.5, 0.79))  # too blurred
    assert not goal_met(means(0.5, 0.5, 1.0))  # not above the baseline
    assert not goal_met(means(math.nan, 0.5, 1.0))


def test_summary_lines_show_the_box_scores_and_the_late_window():
    truth = _uint8(_frames(4))
    scores = [score_sequence(0, truth.numpy(), truth[0], truth, _poses(4))]
    result = {**overall(scores), **late(scores), "scores_csv": "s.csv",
              "scores_summary_csv": "m.csv", "scores_png": "s.png"}
    lines = summary_lines(result)
    assert lines[0].startswith("held-out test sequences: PSNR 100.00 dB")
    assert "in the dancer's box: SSIM 1.000 (baseline" in lines[1]
    assert "sharpness 1.00 (baseline" in lines[1]
    assert lines[2].startswith("  frames 1-3: box SSIM 1.000")
    assert "goal (box SSIM above the baseline's, sharpness >= 0.8) met" in lines[2]


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
        default_width = im.size[0]
    write_strip(sources, tmp_path / "two.png", scale=2, steps=[0, 11])
    with Image.open(tmp_path / "two.png") as im:  # two columns instead of strip_steps(12)'s
        assert default_width - im.size[0] == (len(strip_steps(12)) - 2) * (20 + 2)
        frame = np.asarray(im)[14:30, -22:-2]  # the first row's last tile: truth at t = 11
        assert np.array_equal(frame[::2, ::2], a[11].transpose(1, 2, 0))
    assert not list(tmp_path.glob(".*tmp*"))
