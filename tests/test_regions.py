"""model.hidden_fill=surround: the room behind frame 0's dancer filled from the room around it
(cvae.regions.fill_from_surround), and a composite whose steps change only the dancer's area."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_model

from cvae.config import load_config
from cvae.errors import ConfigError
from cvae.model import init_copy_last
from cvae.regions import Composite, fill_from_surround, skeleton_area


def test_fill_keeps_known_pixels_and_fills_a_hole_from_its_surround():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 10, 16, generator=g)
    hole = torch.zeros(2, 1, 10, 16)
    hole[0, :, 3:7, 5:9] = 1
    hole[1, :, 0:4, 0:3] = 1  # a hole on the border
    filled = fill_from_surround(image, hole)
    known = (hole == 0).expand_as(image)
    assert torch.equal(filled[known], image[known])
    # each channel of a hole pixel blends the known pixels' values: within their range
    for b in range(2):
        for c in range(3):
            ring = image[b, c][hole[b, 0] == 0]
            inside = filled[b, c][hole[b, 0] == 1]
            assert ring.min() - 1e-6 <= inside.min() and inside.max() <= ring.max() + 1e-6
    # a smooth room is filled close to what it was: a horizontal ramp within 0.03
    ramp = torch.linspace(0, 1, 16).expand(1, 3, 10, 16).clone()
    scrambled = torch.where(hole[:1] > 0, torch.ones_like(ramp) * 5, ramp)
    assert (fill_from_surround(scrambled, hole[:1]) - ramp).abs().max() < 0.03


def test_fill_of_a_uniform_room_is_exact_and_an_image_all_hole_is_zero():
    room = torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1).expand(1, 3, 9, 13).clone()
    hole = torch.zeros(1, 1, 9, 13)
    hole[..., 2:8, 3:11] = 1
    dancer = torch.where(hole > 0, torch.rand(1, 3, 9, 13), room)
    torch.testing.assert_close(fill_from_surround(dancer, hole), room, rtol=0, atol=1e-6)
    assert torch.equal(fill_from_surround(dancer, torch.ones_like(hole)), torch.zeros_like(room))


def _dancer_clip(t: int = 6):
    """A uniform room with a dancer (a random patch around a 1-pixel skeleton at row 4) that
    moves right by 2 pixels a frame: frames and poses [2,t,3,10,16]."""
    room = torch.tensor([0.2, 0.5, 0.7]).view(1, 1, 3, 1, 1).expand(2, t, 3, 10, 16)
    poses = torch.zeros(2, t, 3, 10, 16)
    for i in range(t):
        poses[:, i, :, 4, 2 + 2 * i] = 1.0
    area = skeleton_area(poses, 1).expand_as(room)
    frames = torch.where(area > 0, torch.rand(2, t, 3, 10, 16), room)
    return frames, poses, room


def test_surround_plan_fills_frame_0_s_dancer_and_changes_only_the_dancer_now():
    frames, poses, room = _dancer_clip()
    plan = Composite.plan(frames[:, 0], poses, 1, hidden_fill="surround")
    torch.testing.assert_close(plan.background, room[:, 0], rtol=0, atol=1e-6)
    area = skeleton_area(poses, 1)
    torch.testing.assert_close(plan.change, area[:, 1:], rtol=0, atol=0)
    # a step keeps the previous frame wherever the dancer was not a frame before, and the
    # filled room where it was
    prev = torch.rand(2, 3, 10, 16)
    change, base = plan.step_args(2, prev)
    before = area[:, 2].expand_as(prev) > 0
    assert torch.equal(base[~before], prev[~before])
    torch.testing.assert_close(base[before], room[:, 0][before], rtol=0, atol=1e-6)
    generated = Composite.plan(frames[:, 0], poses, 1)  # today's default, unchanged
    assert torch.equal(generated.background, frames[:, 0])
    assert torch.equal(generated.keep, area[:, :1].expand_as(generated.keep))


def test_an_untrained_model_with_the_surround_fill_rolls_out_the_empty_room():
    """copy_last's no-change model keeps each step's base: the room without frame 0's dancer
    (the default fill keeps frame 0 instead: the copy-frame-0 baseline)."""
    frames, poses, room = _dancer_clip()
    model = make_tiny_model(predict_change=True, pose_region=1, hidden_fill="surround")
    init_copy_last(model)
    with torch.no_grad():
        rollout = model.eval().generate(frames[:, 0], poses)
        tf = model(frames, poses, True).pred
    change = skeleton_area(poses, 1)[:, 1:].expand_as(tf)
    # outside the dancer's area now: the room exactly; inside it, no change from the frame
    # the step was given
    torch.testing.assert_close(rollout[:, 1:][change == 0], room[:, 1:][change == 0],
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(tf[change == 0], room[:, 1:][change == 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(tf[change > 0], frames[:, :-1][change > 0], rtol=0, atol=1e-6)


def test_with_the_surround_fill_a_step_from_the_true_frame_keeps_the_uncovered_room():
    """A room with texture, which the fill cannot restore: one step from the true previous
    frame keeps the room the dancer has uncovered since frame 0 exactly, and a rollout keeps
    the fill wherever no step changes the frame."""
    frames, poses, _ = _dancer_clip()
    room = torch.rand(2, 1, 3, 10, 16).expand_as(frames)
    area = skeleton_area(poses, 1)
    frames = torch.where(area > 0, frames, room)
    model = make_tiny_model(predict_change=True, pose_region=1, hidden_fill="surround")
    init_copy_last(model)
    with torch.no_grad():
        rollout = model.eval().generate(frames[:, 0], poses)[:, 1:]
        tf = model(frames, poses, True).pred
    kept = ((area[:, 1:] == 0) & (area[:, :-1] == 0)).expand_as(tf)
    uncovered = kept & (area[:, :1] > 0).expand_as(tf)  # frame 0's dancer has left
    assert uncovered.any()
    torch.testing.assert_close(tf[kept], room[:, 1:][kept], rtol=0, atol=1e-6)
    fill = Composite.plan(frames[:, 0], poses, 1, hidden_fill="surround").background
    still = (area[:, 1:] == 0).expand_as(tf)
    torch.testing.assert_close(rollout[still], fill[:, None].expand_as(tf)[still],
                               rtol=0, atol=1e-6)
    assert not torch.allclose(rollout[uncovered], room[:, 1:][uncovered], atol=1e-3)
    # in training the same step keeps the fill there, as a rollout's step does
    with torch.no_grad():
        tf_train = model.train()(frames, poses, True).pred
    torch.testing.assert_close(tf_train[kept], fill[:, None].expand_as(tf)[kept],
                               rtol=0, atol=1e-6)


def test_keeping_the_room_or_not_gives_the_same_rollout():
    """A rollout's previous frame is the fill wherever the dancer was not, so keeping it
    (keep_room, out of training) or the fill (training) is the same step there."""
    frames, poses, _ = _dancer_clip(7)
    plans = [Composite.plan(frames[:, 0], poses, 1, "surround", keep_room=k) for k in (True, False)]
    assert plans[1].keep is None  # the background everywhere, with no work per step
    painted = torch.rand(2, 6, 3, 10, 16)  # what the generator paints at each step
    rollouts = []
    for plan in plans:
        prev, steps = frames[:, 0], []
        for t in range(6):
            change, base = plan.step_args(t, prev)
            prev = base + change * (painted[:, t] - base)
            steps.append(prev)
        rollouts.append(torch.stack(steps, 1))
    assert torch.equal(rollouts[0], rollouts[1])


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.hidden_fill=surround"], "needs model.pose_region"),
    (["model.pose_region=1", "model.hidden_fill=inpaint"], "must be one of"),
])
def test_bad_hidden_fills_are_refused_with_the_key(overrides, message):
    with pytest.raises(ConfigError, match="model.hidden_fill") as exc:
        load_config(None, overrides=overrides)
    assert message in str(exc.value)
