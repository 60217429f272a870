"""model.first_frame_attend (cvae.appearance): frame 0's look moved to where the pose puts each
body part, and the CVAE's paths with it."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_MODEL, float64_both_ways, make_tiny_model

from cvae.appearance import MASKED_LOGIT, FirstFrameAttention, area_slots, slots
from cvae.config import load_config
from cvae.errors import CvaeError
from cvae.model import CVAE, init_copy_last

B, T, H, W = 2, 4, 8, 12
N = TINY_MODEL["latent_channels"]
ATTEND = {"first_frame_skip": True, "first_frame_attend": True, "pose_region": 1,
          "predict_change": True}


def sparse_clip(seed: int = 1):
    """frames [B,T,3,H,W] and poses drawn on black (a few lit pixels: a small dancer's area)."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(B, T, 3, H, W, generator=g)
    lit = torch.rand(B, T, 1, H, W, generator=g) > 0.93
    return frames, torch.rand(B, T, 3, H, W, generator=g) * lit


def test_area_slots_take_the_area_first_in_raster_order():
    area = torch.zeros(1, 1, 4, 4)
    area[0, 0, 1, 2] = area[0, 0, 0, 3] = area[0, 0, 3, 0] = 1.0
    index, inside = area_slots(area)
    assert slots(4, 4) == 4 and index.shape == inside.shape == (1, 4)
    assert index[0, :3].tolist() == [3, 6, 12]  # (0,3), (1,2), (3,0)
    assert inside[0].tolist() == [True, True, True, False]


def _two_limb_attention(scale: float = 50.0) -> FirstFrameAttention:
    """Pose features one-hot over 2 limbs; queries and keys the one-hot scaled: a pixel of
    limb k attends to frame 0's pixels of limb k alone."""
    attention = FirstFrameAttention(label_ch=2, key_ch=2)
    with torch.no_grad():
        for conv in (attention.query, attention.key):
            conv.weight.copy_(torch.eye(2)[:, :, None, None] * scale ** 0.5)
            conv.bias.zero_()
    return attention


def test_each_body_part_takes_frame_0s_look_from_where_it_was():
    """Limb 0 sat at the left in frame 0 (features 1), limb 1 at the right (features 5); now
    they have swapped sides: inside the area now each pixel gets its own limb's features,
    outside it frame 0's features stay."""
    pose0 = torch.zeros(1, 2, 4, 8)
    pose0[0, 0, 1:3, 0:2] = 1.0
    pose0[0, 1, 1:3, 6:8] = 1.0
    first = torch.zeros(1, 3, 4, 8)
    first[..., 0:2] = 1.0
    first[..., 6:8] = 5.0
    first[..., 3:5] = -2.0  # the room between them, outside any area
    pose_t = pose0.flip(-1)  # limb 0 now at the right, limb 1 at the left
    attention = _two_limb_attention()
    look = attention.look(pose0, first, (pose0.sum(1, keepdim=True) > 0).float())
    area_t = (pose_t.sum(1, keepdim=True) > 0).float()
    out = attention(pose_t, first, area_t, look)
    torch.testing.assert_close(out[..., 1:3, 6:8], torch.ones(1, 3, 2, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[..., 1:3, 0:2], torch.full((1, 3, 2, 2), 5.0), atol=1e-4,
                               rtol=0)
    outside = area_t.expand_as(first) == 0
    assert torch.equal(out[outside], first[outside])


def test_a_frame_0_without_a_dancer_gives_finite_features():
    attention = FirstFrameAttention(label_ch=2, key_ch=2)
    feat = torch.rand(1, 3, 4, 8)
    look = attention.look(torch.rand(1, 2, 4, 8), feat, torch.zeros(1, 1, 4, 8))
    assert torch.all(look.mask == MASKED_LOGIT)
    out = attention(torch.rand(1, 2, 4, 8), feat, torch.ones(1, 1, 4, 8), look)
    assert torch.isfinite(out).all()


def test_first_frame_attend_needs_the_skip_and_the_region():
    with pytest.raises(CvaeError, match="model.first_frame_attend"):
        load_config(None, overrides=["model.first_frame_attend=true", "model.pose_region=1"])
    with pytest.raises(CvaeError, match="model.first_frame_attend"):
        load_config(None, overrides=["model.first_frame_attend=true",
                                     "model.first_frame_skip=true"])
    cfg = load_config(None, overrides=["model.first_frame_attend=true", "model.pose_region=1",
                                       "model.first_frame_skip=true"])
    assert cfg.model.first_frame_attend


def test_batched_teacher_forcing_equals_the_per_frame_loop_and_the_attention_learns():
    results = float64_both_ways(*sparse_clip(), **ATTEND)
    (pred_b, _, _, _, grads_b), (pred_s, _, _, _, grads_s) = results
    torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
    for name, grad in grads_b.items():
        torch.testing.assert_close(grad, grads_s[name], rtol=1e-8, atol=1e-10, msg=name)
    assert grads_b["attention.query.weight"].abs().sum() > 0
    assert grads_b["attention.key.weight"].abs().sum() > 0


def test_free_running_and_the_rollout_take_the_same_step_with_attention():
    model = make_tiny_model(**ATTEND).eval()
    with torch.no_grad():  # the posterior at N(0.5, ~0): z = 0.5 in training and rollout
        model.posterior[-1].weight.zero_()
        model.posterior[-1].bias[:N].fill_(0.5)
        model.posterior[-1].bias[N:].fill_(-60.0)
    frames, poses = sparse_clip()
    with torch.no_grad():
        free = model(frames, poses, False).pred.clamp(0.0, 1.0)
        rollout = model.generate(frames[:, 0], poses, noise=torch.full((B, T - 1, N, H, W), 0.5))
    torch.testing.assert_close(rollout[:, 1:], free, rtol=0, atol=1e-6)


def test_first_frame_attend_starts_as_copy_last():
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        f"model.{key}={value}" for key, value in ATTEND.items()])
    model = CVAE(cfg.model)
    init_copy_last(model)
    frames, poses = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    with torch.no_grad():
        pred = model(frames, poses, True).pred
    torch.testing.assert_close(pred, frames[:, :-1], rtol=0, atol=1e-6)


def test_the_attention_is_a_part_of_its_own_in_the_parameter_table():
    from cvae.model import parameter_table

    rows = dict(parameter_table(make_tiny_model(**ATTEND)))
    L = TINY_MODEL["label_channels"]
    assert rows["attention"] == 2 * (L * 16 + 16)  # two 1x1 projections L -> 16
    assert rows["total"] == sum(v for k, v in rows.items() if k != "total")
    assert "attention" not in dict(parameter_table(make_tiny_model()))
