"""model.first_frame_posed (cvae.posed): frame 0's colours painted on the pose to predict, and
the CVAE's paths with it."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL, float64_both_ways, make_tiny_model

from cvae.config import load_config
from cvae.errors import CvaeError
from cvae.model import CVAE, init_copy_last, parameter_table
from cvae.posed import POSED_CHANNELS, paint, paint_steps

RED, YELLOW = (1.0, 0.0, 0.0), (1.0, 1.0, 0.0)  # two limbs of the palette
SHIRT, SKIN = (0.2, 0.6, 0.7), (0.9, 0.7, 0.5)
N = TINY_MODEL["latent_channels"]


def _stroke(image: torch.Tensor, rows: slice, cols: slice, colour, scale: float = 1.0):
    image[0, :, rows, cols] = torch.tensor(colour)[:, None, None] * scale


def _two_limbs():
    """Pose 0: a red limb at the left over the shirt, a yellow one at the right over the skin;
    pose t: the yellow limb at the left, the red one in the middle (its edge drawn at half
    brightness, as an anti-aliased stroke is)."""
    first, pose0, pose = torch.rand(1, 3, 6, 12), torch.zeros(1, 3, 6, 12), torch.zeros(1, 3, 6, 12)
    _stroke(pose0, slice(1, 5), slice(0, 2), RED)
    _stroke(first, slice(1, 5), slice(0, 2), SHIRT)
    _stroke(pose0, slice(1, 5), slice(10, 12), YELLOW)
    _stroke(first, slice(1, 5), slice(10, 12), SKIN)
    _stroke(pose, slice(1, 5), slice(0, 2), YELLOW)
    _stroke(pose, slice(1, 5), slice(5, 6), RED)
    _stroke(pose, slice(1, 5), slice(6, 7), RED, scale=0.5)
    return first, pose0, pose


def test_each_limb_takes_frame_0s_colour_from_where_its_pose_colour_was():
    first, pose0, pose = _two_limbs()
    out = paint(first, pose0, pose)
    assert out.shape == (1, POSED_CHANNELS, 6, 12)
    colour, cover = out[:, :3], out[:, 3:]
    skin, shirt = torch.tensor(SKIN)[:, None, None], torch.tensor(SHIRT)[:, None, None]
    torch.testing.assert_close(colour[0, :, 1:5, 0:2], skin.expand(3, 4, 2), atol=1e-4, rtol=0)
    # the stroke and its darker edge alike
    torch.testing.assert_close(colour[0, :, 1:5, 5:7], shirt.expand(3, 4, 2), atol=1e-4, rtol=0)
    assert torch.all(cover[0, 0, 1:5, 0:2] > 0.99) and torch.all(cover[0, 0, 1:5, 5:7] > 0.99)
    off = pose.amax(1, keepdim=True) == 0  # off the skeleton: nothing painted
    assert torch.all(out.masked_select(off.expand_as(out)) == 0)


def test_a_limb_colour_missing_from_pose_0_is_not_painted():
    first, pose0, pose = _two_limbs()
    _stroke(pose, slice(0, 1), slice(8, 10), (0.0, 0.0, 1.0))  # blue: not in pose 0
    out = paint(first, pose0, pose)
    assert torch.all(out[0, :, 0, 8:10] == 0)


def test_empty_poses_paint_nothing_and_stay_finite():
    first, pose0, pose = _two_limbs()
    for a, b in ((torch.zeros_like(pose0), pose), (pose0, torch.zeros_like(pose))):
        out = paint(first, a, b)
        assert torch.isfinite(out).all() and torch.all(out == 0)


def test_paint_steps_paints_every_step_from_frame_0_and_pose_0():
    first, pose0, pose = _two_limbs()
    poses = torch.stack([pose0, pose, pose0], dim=1)  # [1,3,3,H,W]
    steps = paint_steps(first, poses)
    assert steps.shape == (1, 2, POSED_CHANNELS, 6, 12)
    torch.testing.assert_close(steps[:, 0], paint(first, pose0, pose))
    torch.testing.assert_close(steps[:, 1], paint(first, pose0, pose0))


def _sparse_clip(b: int = 2, t: int = 4, h: int = 8, w: int = 12):
    """frames and poses drawn on black (a few lit pixels of a few palette colours)."""
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(b, t, 3, h, w, generator=g)
    palette = torch.tensor([RED, YELLOW, (0.0, 1.0, 0.0)])
    limb = torch.randint(0, 3, (b, t, h, w), generator=g)
    lit = torch.rand(b, t, 1, h, w, generator=g) > 0.8
    return frames, palette[limb].permute(0, 1, 4, 2, 3) * lit


def test_first_frame_posed_widens_the_fusion_by_4_channels_only():
    plain, posed = make_tiny_model(), make_tiny_model(first_frame_posed=True)
    assert posed.decoder_fusion[0][0].conv1[0].in_channels == \
        plain.decoder_fusion[0][0].conv1[0].in_channels + POSED_CHANNELS
    a, b = dict(parameter_table(plain)), dict(parameter_table(posed))
    assert {k: v for k, v in a.items() if k not in ("decoder_fusion", "total")} == \
        {k: v for k, v in b.items() if k not in ("decoder_fusion", "total")}
    cfg = load_config(None, overrides=["model.first_frame_posed=true"])
    assert cfg.model.first_frame_posed and not load_config(None).model.first_frame_posed


def test_batched_teacher_forcing_equals_the_per_frame_loop_with_posed():
    for options in ({}, {"first_frame_skip": True, "pose_region": 1, "predict_change": True}):
        (pred_b, _, _, _, grads_b), (pred_s, _, _, _, grads_s) = \
            float64_both_ways(*_sparse_clip(), first_frame_posed=True, **options)
        torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
        for name, grad in grads_b.items():
            torch.testing.assert_close(grad, grads_s[name], rtol=1e-8, atol=1e-10, msg=name)


def test_the_posed_colours_reach_the_prediction_and_the_rollout_takes_the_same_step():
    """Changing frame 0's colour under a limb changes step 2 (given the true frame 1) through
    the posed channels alone; the rollout's step is the free-running one."""
    frames, poses = _sparse_clip()
    model = make_tiny_model(first_frame_posed=True).eval()
    noise = torch.full((2, 3, N, 8, 12), 0.5)
    with torch.no_grad():
        model.posterior[-1].weight.zero_()  # the posterior at N(0.5, ~0): z = 0.5 everywhere
        model.posterior[-1].bias[:N].fill_(0.5)
        model.posterior[-1].bias[N:].fill_(-60.0)
        recoloured = frames.clone()
        recoloured[:, 0] = 1.0 - frames[:, 0]
        a = model(frames, poses, True, noise=noise).pred[:, 1:]
        b = model(recoloured, poses, True, noise=noise).pred[:, 1:]
        assert not torch.allclose(a, b)
        free = model(frames, poses, False).pred.clamp(0.0, 1.0)
        rollout = model.generate(frames[:, 0], poses, noise=noise)
    torch.testing.assert_close(rollout[:, 1:], free, rtol=0, atol=1e-6)


def test_first_frame_posed_starts_as_copy_last():
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        "model.first_frame_posed=true", "model.first_frame_skip=true"])
    model = CVAE(cfg.model)
    init_copy_last(model)
    frames, poses = _sparse_clip(h=32, w=64)
    with torch.no_grad():
        pred = model(frames, poses, True).pred
    torch.testing.assert_close(pred, frames[:, :-1], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ model.posed_base

BASE = {"first_frame_posed": True, "posed_base": True, "predict_change": True}


def test_posed_base_needs_the_painting_and_predict_change():
    for missing in ("model.first_frame_posed", "model.predict_change"):
        sets = [f"{key}=true" for key in ("model.posed_base", "model.first_frame_posed",
                                          "model.predict_change") if key != missing]
        with pytest.raises(CvaeError, match="model.posed_base"):
            load_config(None, overrides=sets)
    assert load_config(None, overrides=[f"model.{k}=true" for k in BASE]).model.posed_base


@pytest.mark.parametrize("region", [0, 1], ids=["whole", "pose_region"])
def test_untrained_posed_base_predicts_the_painting_and_keeps_the_rest(region):
    """copy_last with no change yet: the painted pixels are frame 0's colours on the step's pose;
    every other pixel is what the step keeps (the previous frame; with pose_region and the
    surround fill, the filled frame 0)."""
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        *(f"model.{k}={v}" for k, v in BASE.items()), f"model.pose_region={region}",
        f"model.hidden_fill={'surround' if region else 'generated'}"])
    model = CVAE(cfg.model)
    init_copy_last(model)
    frames, poses = _sparse_clip(h=32, w=64)
    with torch.no_grad():
        pred = model(frames, poses, True).pred  # [B,S,3,H,W]
        kept = frames[:, :-1] if not region else model.composite(frames[:, 0], poses).background[
            :, None].expand_as(pred)
    posed = paint_steps(frames[:, 0], poses)
    painted = (posed[:, :, 3:] > 0).expand_as(pred)
    assert painted.any() and not painted.all()
    torch.testing.assert_close(pred[painted], posed[:, :, :3][painted], rtol=0, atol=1e-6)
    torch.testing.assert_close(pred[~painted], kept[~painted], rtol=0, atol=1e-6)


def test_posed_base_batched_equals_per_frame_and_the_rollout_takes_the_same_step():
    for options in ({}, {"pose_region": 1, "hidden_fill": "surround", "first_frame_skip": True}):
        (pred_b, _, _, _, grads_b), (pred_s, _, _, _, grads_s) = \
            float64_both_ways(*_sparse_clip(), **BASE, **options)
        torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
        for name, grad in grads_b.items():
            torch.testing.assert_close(grad, grads_s[name], rtol=1e-8, atol=1e-10, msg=name)
    model = make_tiny_model(**BASE, pose_region=1).eval()
    frames, poses = _sparse_clip()
    noise = torch.full((2, 3, N, 8, 12), 0.5)
    with torch.no_grad():
        model.posterior[-1].weight.zero_()
        model.posterior[-1].bias[:N].fill_(0.5)
        model.posterior[-1].bias[N:].fill_(-60.0)
        free = model(frames, poses, False).pred.clamp(0.0, 1.0)
        rollout = model.generate(frames[:, 0], poses, noise=noise)
    torch.testing.assert_close(rollout[:, 1:], free, rtol=0, atol=1e-6)


def test_posed_gate_starts_halfway_between_the_previous_frame_and_the_painting():
    with pytest.raises(CvaeError, match="model.posed_gate"):
        load_config(None, overrides=["model.posed_gate=true", "model.first_frame_posed=true",
                                     "model.predict_change=true"])
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        *(f"model.{k}={v}" for k, v in BASE.items()), "model.posed_gate=true"])
    model = CVAE(cfg.model)
    init_copy_last(model)
    assert model.generator[-1].out_channels == 4  # RGB + the gate
    frames, poses = _sparse_clip(h=32, w=64)
    with torch.no_grad():
        pred = model(frames, poses, True).pred
    posed, prev = paint_steps(frames[:, 0], poses), frames[:, :-1]
    painting = torch.where(posed[:, :, 3:] > 0, posed[:, :, :3], prev)
    torch.testing.assert_close(pred, prev + 0.5 * (painting - prev), rtol=0, atol=1e-6)
    assert not torch.allclose(pred, prev)


def test_posed_gate_batched_equals_per_frame_and_the_gate_learns():
    (pred_b, _, _, _, grads_b), (pred_s, _, _, _, grads_s) = \
        float64_both_ways(*_sparse_clip(), **BASE, posed_gate=True, pose_region=1,
                          blend_mask=True)
    torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
    for name, grad in grads_b.items():
        torch.testing.assert_close(grad, grads_s[name], rtol=1e-8, atol=1e-10, msg=name)
    head = [name for name in grads_b if name.startswith("generator.") and "weight" in name][-1]
    assert grads_b[head].shape[0] == 5  # RGB, the blend mask, the gate
    assert grads_b[head][4].abs().sum() > 0
