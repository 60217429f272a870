"""Validation (cvae.evaluate): the rollout, the copy-last baseline, one-step PSNR, regions, and
the dancer-box scores (SSIM and sharpness inside the box found from the pose)."""

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
    # Random poses light (nearly) every pixel: the dancer's box is the whole frame, so the box
    # SSIM is the whole frame's; model and baseline are the same rollout.
    assert v.box_ssim == pytest.approx(v.ssim, abs=1e-6)
    assert v.baseline_box_ssim == pytest.approx(v.baseline_ssim, abs=1e-6)
    assert v.sharpness == pytest.approx(v.baseline_sharpness)
    assert len(v.sharpness) == 19 and all(0.5 < r < 2 for r in v.sharpness)
    assert m["val_box_ssim"] == pytest.approx(m["baseline_box_ssim"])
    assert m["val_sharpness"] == pytest.approx(m["baseline_sharpness"])
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


@pytest.mark.parametrize("preset", ["small", "lab"])
def test_noise_drawn_at_once_equals_per_frame_draws_at_the_preset_sizes(preset):
    """What keeps validation's figures as they were when its noise went from one draw per
    frame to one draw for the rollout: at the presets' sizes (N*H*W a multiple of 16) the CPU
    generator gives the same values, and leaves the same state for the one-step draw after."""
    cfg = load_config(None, preset=preset)
    frame = (1, cfg.model.latent_channels, cfg.data.height, cfg.data.width)
    g = torch.Generator().manual_seed(7)
    per_frame = torch.stack([torch.randn(*frame, generator=g) for _ in range(5)], 1)
    after = torch.randn(3, generator=g)
    g = torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(1, 5, *frame[1:], generator=g), per_frame)
    assert torch.equal(torch.randn(3, generator=g), after)


def _random_tiny_model():
    from conftest import make_tiny_model

    return make_tiny_model(prior="learned", blend_mask=True, predict_change=True)


def test_validation_figures_are_those_of_per_frame_noise_draws():
    """validate draws the rollout's noise at once; N*H*W = 4*8*12 is a multiple of 16, so the
    figures are those of the per-frame draws (generate's rng path), one-step figures too."""
    from cvae.evaluate import validate
    from cvae.losses import psnr

    model = _random_tiny_model()
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(9, 3, 8, 12, generator=g), torch.rand(9, 3, 8, 12, generator=g)
    v = validate(model, frames, poses, short_len=3, device=torch.device("cpu"), seed=3)
    rng = torch.Generator().manual_seed(3)
    with torch.no_grad():
        model.eval()
        pred = model.generate(frames[:1], poses[None], rng=rng)[0]
        noise = torch.randn(1, 3, 4, 8, 12, generator=rng)
        one_step = model(frames[None, :4], poses[None, :4], True, noise=noise).pred[0]
    assert torch.equal(v.pred, pred)
    assert v.psnr == psnr(pred[1:], frames[1:]).tolist()
    assert v.one_step == psnr(one_step, frames[1:4]).tolist()
    assert not torch.allclose(pred[1:], frames[:1].expand_as(pred[1:]))  # z reaches the frames


def test_validation_is_deterministic_for_a_seed_at_any_frame_size():
    """At 5x7 frames (N*H*W = 140, not a multiple of 16) the noise drawn at once differs from
    per-frame draws, but a seed still fixes every figure."""
    from cvae.evaluate import validate

    model = _random_tiny_model()
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(6, 3, 5, 7, generator=g), torch.rand(6, 3, 5, 7, generator=g)
    runs = [validate(model, frames, poses, short_len=2, device=torch.device("cpu"), seed=seed)
            for seed in (0, 0, 1)]
    assert torch.equal(runs[0].pred, runs[1].pred) and runs[0].metrics() == runs[1].metrics()
    assert runs[0].one_step == runs[1].one_step
    assert not torch.equal(runs[0].pred, runs[2].pred)


def test_validation_on_more_threads_agrees_and_gives_the_threads_back(monkeypatch):
    """threads=2 (the cores of the workers that wait for rank 0) runs the validation on 2
    threads, changes no figure beyond float rounding, and torch's thread count is what it was
    afterwards, also after an error."""
    from cvae import evaluate
    from cvae.evaluate import validate

    seen = []
    inner = evaluate._validate

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return inner(*args, **kwargs)

    monkeypatch.setattr(evaluate, "_validate", counting)
    model = _random_tiny_model()
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(2, 7, 3, 8, 12, generator=g), torch.rand(2, 7, 3, 8, 12, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one, two = (validate(model, frames, poses, short_len=2, device=torch.device("cpu"),
                             seed=1, threads=threads) for threads in (0, 2))
        assert torch.get_num_threads() == 1 and seen == [1, 2]
        assert torch.allclose(one.pred, two.pred, atol=1e-5)
        assert two.metrics() == pytest.approx(one.metrics(), rel=1e-5)
        with pytest.raises(RuntimeError):
            validate(model, frames[..., :4], poses, short_len=2, device=torch.device("cpu"),
                     threads=2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_several_videos_roll_out_together_and_score_the_mean_per_frame():
    """[V,T,...] videos: each rolls out on its own slice of the noise (the first video's is
    what it gets alone), every per-frame score is the mean over the videos, and the figures'
    rollout is the first video's."""
    from cvae.evaluate import copy_last_baseline, validate
    from cvae.losses import psnr

    model = _random_tiny_model()
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(2, 9, 3, 8, 12, generator=g), torch.rand(2, 9, 3, 8, 12, generator=g)
    both = validate(model, frames, poses, short_len=3, device=torch.device("cpu"), seed=3)
    alone = validate(model, frames[0], poses[0], short_len=3, device=torch.device("cpu"), seed=3)
    assert both.videos == 2 and alone.videos == 1
    assert both.source() == "mean of 2 validation videos" and alone.source() == "validation video"
    torch.testing.assert_close(both.pred, alone.pred)
    assert torch.equal(both.target, frames[0])
    noise = torch.randn(2, 8, 4, 8, 12, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.eval()
        second = model.generate(frames[1:2, 0], poses[1:2], noise=noise[1:2])[0]
    expected = (psnr(alone.pred[1:], frames[0, 1:]) + psnr(second[1:], frames[1, 1:])) / 2
    torch.testing.assert_close(torch.tensor(both.psnr), expected)
    baseline = (torch.tensor(copy_last_baseline(frames[0])) +
                torch.tensor(copy_last_baseline(frames[1]))) / 2
    torch.testing.assert_close(torch.tensor(both.baseline), baseline)
    assert len(both.one_step) == 3 and len(both.box_ssim) == 8
    assert both.metrics().keys() == alone.metrics().keys()


# ------------------------------------------------- the dancer's box: a score that sees blur


def _pose_with_box(t: int, h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Poses [t,3,h,w]: black, with a skeleton outline (one colour per channel) whose skeleton
    pixels span exactly rows box[0]..box[1]-1 and columns box[2]..box[3]-1."""
    top, bottom, left, right = box
    poses = torch.zeros(t, 3, h, w)
    poses[:, 0, top, left:right] = 0.8  # a red line along the top
    poses[:, 2, top:bottom, left] = 0.06  # a dim blue one down the left: still skeleton
    poses[:, 1, bottom - 1, right - 1] = 1.0  # a green dot in the far corner
    return poses


def _textured(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Frames [t,3,h,w]: a smooth grey room with a sharp random-noise dancer at rows 8..23,
    columns 20..35."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.linspace(0.3, 0.5, w).expand(t, 3, h, w).clone()
    frames[:, :, 8:24, 20:36] = torch.rand(t, 3, 16, 16, generator=g)
    return frames


def test_dancer_box_is_the_padded_bounding_box_of_the_skeleton_pixels():
    from cvae.evaluate import dancer_box

    pose = _pose_with_box(1, 20, 30, (5, 12, 8, 21))[0]
    pose[1, 0, 0] = 0.04  # dimmer than POSE_ON: black, not skeleton
    pose[:, 18, 2] = 0.05  # at POSE_ON exactly: not above it
    assert dancer_box(pose, 0) == (5, 12, 8, 21)
    assert dancer_box(pose, 2) == (3, 14, 6, 23)
    assert dancer_box(pose, 6) == (0, 18, 2, 27)  # clamped at the top, not elsewhere
    assert dancer_box(pose, 40) == (0, 20, 0, 30)  # clamped to the frame
    corner = torch.zeros(3, 20, 30)
    corner[0, 19, 29] = 1.0
    assert dancer_box(corner, 3) == (16, 20, 26, 30)
    assert dancer_box(torch.zeros(3, 20, 30), 2) is None  # no skeleton pixel


def test_box_pad_is_two_pixels_on_small_frames_and_grows_with_the_height():
    from cvae.evaluate import box_pad

    assert [box_pad(h) for h in (4, 32, 64, 256)] == [2, 2, 4, 16]


def test_box_scores_of_a_perfect_prediction():
    from cvae.evaluate import box_scores

    truth = _textured(3, 32, 64)
    poses = _pose_with_box(3, 32, 64, (10, 22, 22, 34))
    scores = box_scores(truth.clone(), truth, truth[0], poses)
    assert scores["box_ssim"] == pytest.approx([1.0] * 3, abs=1e-6)
    assert scores["sharpness"] == [1.0, 1.0, 1.0]  # exactly: the same pixels
    # the baseline repeats frame 0: itself at t = 0, other noise (no structure in common) after
    assert scores["baseline_box_ssim"][0] == pytest.approx(1.0, abs=1e-6)
    assert all(s < 0.1 for s in scores["baseline_box_ssim"][1:])
    assert scores["baseline_sharpness"][1:] == pytest.approx([1.0, 1.0], abs=0.2)  # as sharp


def test_a_blur_wins_on_psnr_and_loses_on_sharpness():
    """The reason for the box scores: a smeared dancer costs less squared error than a sharp one
    a few pixels off, yet the sharpness ratio and the box SSIM see the smear."""
    import torch.nn.functional as F

    from cvae.evaluate import box_scores
    from cvae.losses import psnr

    truth = _textured(2, 32, 64)
    blurred = F.avg_pool2d(truth, 5, stride=1, padding=2, count_include_pad=False)
    shifted = torch.roll(truth, shifts=3, dims=-1)  # sharp, but 3 pixels to the right
    poses = _pose_with_box(2, 32, 64, (10, 22, 22, 34))
    assert psnr(blurred, truth).min() > psnr(shifted, truth).max()  # PSNR prefers the smear
    blur = box_scores(blurred, truth, truth[0], poses)
    sharp = box_scores(shifted, truth, truth[0], poses)
    assert max(blur["sharpness"]) < 0.2  # far below 1
    assert min(sharp["sharpness"]) > 0.8  # about as sharp as the truth
    assert max(blur["box_ssim"]) < 0.5


def test_sharp_noise_can_exceed_one_and_a_flat_truth_has_no_ratio():
    from cvae.evaluate import box_scores, sharpness_ratio

    g = torch.Generator().manual_seed(1)
    smooth = torch.linspace(0, 1, 64).expand(2, 3, 32, 64).clone()  # gentle gradient
    noisy = (smooth + 0.2 * torch.randn(2, 3, 32, 64, generator=g)).clamp(0, 1)
    poses = _pose_with_box(2, 32, 64, (4, 28, 10, 50))
    scores = box_scores(noisy, smooth, smooth[0], poses)
    assert min(scores["sharpness"]) > 10  # noise: far more edges than the truth
    flat = torch.full((3, 6, 6), 0.5)
    ratio = sharpness_ratio(torch.rand(2, 3, 6, 6, generator=g), flat)
    assert ratio.shape == (2,) and torch.isnan(ratio).all()
    flat_scores = box_scores(flat.expand(2, 3, 6, 6), flat.expand(2, 3, 6, 6), flat,
                             _pose_with_box(2, 6, 6, (1, 4, 1, 4)))
    assert all(math.isnan(v) for v in flat_scores["sharpness"])
    assert flat_scores["box_ssim"] == pytest.approx([1.0, 1.0], abs=1e-3)  # still scored


def test_gradient_energy_formula():
    from cvae.evaluate import gradient_energy

    image = torch.zeros(3, 2, 3)
    image[0, 0, 1] = 1.0  # one bright pixel in one channel: 2 horizontal + 1 vertical steps
    image[2, 1, :] = 0.5  # a bright bottom row in another: 3 vertical steps of 0.5
    expected = (2 * 1.0 + 1 * 1.0 + 3 * 0.25) / 6
    assert float(gradient_energy(image)) == pytest.approx(expected)
    assert gradient_energy(torch.stack([image, 2 * image])).tolist() == pytest.approx(
        [expected, 4 * expected])


def test_a_frame_without_a_skeleton_pixel_scores_nan():
    from cvae.evaluate import box_scores

    truth = _textured(3, 32, 64)
    poses = _pose_with_box(3, 32, 64, (10, 22, 22, 34))
    poses[1] = 0.0  # the pose of frame 1 is empty
    scores = box_scores(truth.clone(), truth, truth[0], poses)
    for name, values in scores.items():
        assert math.isnan(values[1]), name
        assert not math.isnan(values[0]) and not math.isnan(values[2]), name


def _validation(**box) -> object:
    from cvae.evaluate import Validation

    frames = torch.zeros(4, 3, 8, 8)
    return Validation(psnr=[20.0, 21.0, 22.0], baseline=[19.0] * 3, short_len=2, pred=frames,
                      target=frames, ssim=[0.5] * 3, baseline_ssim=[0.4] * 3, **box)


def test_validation_box_means_skip_nan_and_leave_out_what_has_no_score():
    nan = math.nan
    v = _validation(box_ssim=[0.9, nan, 0.7], baseline_box_ssim=[0.5, nan, 0.3],
                    sharpness=[1.0, nan, 0.5], baseline_sharpness=[nan, nan, nan])
    m = v.metrics()
    assert m["val_box_ssim"] == pytest.approx(0.8)
    assert m["baseline_box_ssim"] == pytest.approx(0.4)
    assert m["val_sharpness"] == pytest.approx(0.75)
    # no frame scored: no figure rather than a nan (a nan metric reads as a diverged run)
    assert "baseline_sharpness" not in m
    assert all(math.isfinite(value) for value in m.values())
    assert not {"val_box_ssim", "val_sharpness"} & set(_validation().metrics())


def test_per_frame_csv_has_the_box_columns():
    from cvae.evaluate import PER_FRAME_COLUMNS

    nan = math.nan
    v = _validation(box_ssim=[0.9, nan, 0.7], baseline_box_ssim=[0.5, nan, 0.3],
                    sharpness=[1.0, nan, 0.5], baseline_sharpness=[0.25, nan, 2.0])
    lines = v.per_frame_csv().splitlines()
    assert lines[0] == ("frame,psnr,baseline_psnr,ssim,baseline_ssim,box_ssim,baseline_box_ssim,"
                        "sharpness,baseline_sharpness") == ",".join(PER_FRAME_COLUMNS)
    assert lines[1] == "1,20.0000,19.0000,0.5000,0.4000,0.9000,0.5000,1.0000,0.2500"
    assert lines[2].split(",")[5:] == ["nan"] * 4
    assert _validation().per_frame_csv().splitlines()[1].endswith(",nan,nan,nan,nan")
