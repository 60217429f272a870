"""Tests of the CVAE: parameter counts of the lab preset, shapes, rollout, output activation."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    TINY_MODEL,
    float64_both_ways,
    make_tiny_model,
    teacher_forced_both_ways,
    tiny_model_config,
)

from cvae.config import load_config
from cvae.model import (
    CVAE,
    PARTS,
    Prediction,
    init_copy_last,
    parameter_table,
    unwrap,
)

B, T, H, W = 2, 4, 8, 12
N = TINY_MODEL["latent_channels"]


def tiny(**kw) -> CVAE:
    """The shared tiny model (seed 0), with other ModelConfig fields ``kw``."""
    return make_tiny_model(**kw)


def clip(seed: int = 1, b: int = B, t: int = T, h: int = H, w: int = W):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, h, w, generator=g), torch.rand(b, t, 3, h, w, generator=g)


# ------------------------------------------------------------------------ parameter counts


def test_lab_preset_parameter_counts():
    model = CVAE(load_config(preset="lab").model)
    assert parameter_table(model) == [
        ("frame_encoder", 193_568),
        ("pose_encoder", 16_832),
        ("posterior", 8_289),
        ("decoder_fusion", 617_768),
        ("generator", 749_163),
        ("total", 1_585_620),
    ]


def test_parameter_table_parts_sum_to_total():
    model = tiny()
    rows = dict(parameter_table(model))
    assert list(rows) == [*PARTS, "total"]
    assert sum(rows[p] for p in PARTS) == rows["total"]
    assert rows["total"] == sum(p.numel() for p in model.parameters())


def test_small_preset_is_smaller_than_lab():
    small = dict(parameter_table(CVAE(load_config(preset="small").model)))["total"]
    assert 0 < small < 1_585_620 / 8


def test_sigmoid_adds_no_parameters():
    assert parameter_table(tiny()) == parameter_table(tiny(output_activation="sigmoid"))


def test_dry_run_prints_the_lab_table(cli, capsys):
    from cvae.train_cli import main

    assert cli(main, ["--preset", "lab", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1,585,620" in out
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    assert lines["frame_encoder"] == "193,568"
    assert lines["pose_encoder"] == "16,832"
    assert lines["posterior"] == "8,289"
    assert lines["decoder_fusion"] == "617,768"
    assert lines["generator"] == "749,163"
    assert lines["total"] == "1,585,620"
    assert "frame_channels: 128" in out  # the resolved config is printed too


# --------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("teacher_forced", [True, False])
def test_forward_shapes(teacher_forced):
    model = tiny()
    frames, poses = clip()
    out = model(frames, poses, teacher_forced)
    assert isinstance(out, Prediction) and out.mask is None  # no blend_mask, no pose_region
    pred, mu, logvar = out.pred, out.mu, out.logvar
    assert pred.shape == (B, T - 1, 3, H, W)
    assert mu.shape == (B, T - 1, N, H, W)
    assert logvar.shape == (B, T - 1, N, H, W)
    assert torch.isfinite(pred).all() and torch.isfinite(mu).all() and torch.isfinite(logvar).all()


@pytest.mark.parametrize("teacher_forced", [True, False])
def test_forward_shapes_non_square_minimum_size(teacher_forced):
    model = tiny()
    frames, poses = clip(b=1, t=2, h=4, w=6)
    out = model(frames, poses, teacher_forced)
    pred, mu, logvar = out.pred, out.mu, out.logvar
    assert pred.shape == (1, 1, 3, 4, 6)
    assert mu.shape == logvar.shape == (1, 1, N, 4, 6)


def test_forward_is_deterministic_given_the_noise():
    model = tiny()
    frames, poses = clip()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(5))
    a = model(frames, poses, True, noise=noise)
    b = model(frames, poses, True, noise=noise)
    for x, y in zip(a[:3], b[:3], strict=True):  # pred, mu, logvar (mask: None)
        assert torch.equal(x, y)
    other = model(frames, poses, True, noise=noise + 1.0)
    assert not torch.allclose(a.pred, other.pred)  # the prediction depends on z
    assert torch.equal(a.mu, other.mu)  # mu and logvar do not depend on the noise


def test_two_frame_clip_teacher_forced_equals_free_running():
    # with one predicted step both paths see the same (true) previous frame
    model = tiny()
    frames, poses = clip(t=2)
    noise = torch.randn(B, 1, N, H, W)
    tf = model(frames, poses, True, noise=noise)
    fr = model(frames, poses, False, noise=noise)
    for x, y in zip(tf[:3], fr[:3], strict=True):  # pred, mu, logvar
        torch.testing.assert_close(x, y)


def test_free_running_feeds_back_its_predictions():
    model = tiny()
    frames, poses = clip(t=3)
    noise = torch.randn(B, 2, N, H, W)
    tf = model(frames, poses, True, noise=noise).pred
    fr = model(frames, poses, False, noise=noise).pred
    torch.testing.assert_close(fr[:, 0], tf[:, 0])  # step 1 starts from true frame 0 both ways
    assert not torch.allclose(fr[:, 1], tf[:, 1])  # step 2: predicted vs true frame 1
    # teacher forced, step 2 is driven by true frame 1
    changed = frames.clone()
    changed[:, 1] = 1.0 - changed[:, 1]
    tf_changed = model(changed, poses, True, noise=noise).pred
    assert not torch.allclose(tf[:, 1], tf_changed[:, 1])


def test_free_running_feeds_back_the_prediction_clamped_as_a_rollout_does():
    model = tiny()
    with torch.no_grad():
        model.generator[-1].bias.fill_(2.0)  # predictions overshoot the image range
    frames, poses = clip(t=3)
    noise = torch.randn(B, 2, N, H, W)
    fr = model(frames, poses, False, noise=noise).pred
    assert fr[:, 0].max() > 1.0
    fed_back = frames.clone()
    fed_back[:, 1] = fr[:, 0].clamp(0.0, 1.0)
    torch.testing.assert_close(model(fed_back, poses, True, noise=noise).pred[:, 1], fr[:, 1])


def test_output_activation_none_is_unbounded_linear_head():
    model = tiny()
    assert not isinstance(model.generator[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("bias", [-3.0, 0.0, 3.0])
@pytest.mark.parametrize("teacher_forced", [True, False])
def test_sigmoid_output_is_in_open_unit_interval(bias, teacher_forced):
    frames, poses = clip()
    outputs = {}
    for activation in ("none", "sigmoid"):
        model = tiny(output_activation=activation)
        with torch.no_grad():
            model.generator[7].bias.fill_(bias)  # the last conv: shift the raw output
        outputs[activation] = model(frames, poses, teacher_forced).pred
    assert isinstance(model.generator[-1], torch.nn.Sigmoid)
    squashed = outputs["sigmoid"]
    assert squashed.min() > 0.0 and squashed.max() < 1.0
    if bias > 0:
        assert outputs["none"].max() > 1.0  # the linear head leaves [0, 1] ...
    elif bias < 0:
        assert outputs["none"].min() < 0.0


def test_sigmoid_is_applied_to_the_linear_output():
    plain = tiny()
    squashed = tiny(output_activation="sigmoid")
    frames, poses = clip()
    noise = torch.randn(B, T - 1, N, H, W)
    a = plain(frames, poses, True, noise=noise).pred
    b = squashed(frames, poses, True, noise=noise).pred
    torch.testing.assert_close(torch.sigmoid(a), b)


# -------------------------------------------------------------------------------- generate


def test_generate_shape_first_frame_and_range():
    model = tiny().eval()
    frames, poses = clip(t=5)
    out = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(0))
    assert out.shape == (B, 5, 3, H, W)
    assert torch.equal(out[:, 0], frames[:, 0])
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert not out.requires_grad


def test_generate_clamps_an_out_of_range_head():
    model = tiny().eval()
    with torch.no_grad():
        model.generator[-1].bias.fill_(5.0)  # the raw output is far above 1
    frames, poses = clip(t=3)
    out = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 1:], torch.ones_like(out[:, 1:]))


def test_generate_is_reproducible_with_a_seeded_generator():
    model = tiny().eval()
    frames, poses = clip(t=4)
    a = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(3))
    b = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(3))
    c = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_single_frame_is_the_input():
    model = tiny().eval()
    frames, poses = clip(t=1)
    out = model.generate(frames[:, 0], poses)
    assert out.shape == (B, 1, 3, H, W)
    assert torch.equal(out[:, 0], frames[:, 0])


def test_generate_counts_progress():
    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    model = tiny().eval()
    frames, poses = clip(t=6)
    model.generate(frames[:, 0], poses, progress=bar)
    assert bar.n == frames.shape[0] * 5  # generated frames: every sequence of the batch


def test_generate_takes_the_whole_noise_at_once_as_the_per_frame_draws():
    """noise [B,T-1,N,H,W] drawn in one call (frame-major, then moved to [B,T-1,...]) gives the
    rollout that per-frame draws [B,N,H,W] from a generator with the same seed give."""
    model = tiny(prior="learned", pose_region=1, blend_mask=True).eval()
    frames, poses = clip(t=5)
    per_frame = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(5))
    eps = torch.randn(4, B, N, H, W, generator=torch.Generator().manual_seed(5))
    assert torch.equal(model.generate(frames[:, 0], poses, noise=eps.transpose(0, 1)), per_frame)
    with pytest.raises(ValueError, match="not both"):
        model.generate(frames[:, 0], poses, rng=torch.Generator(), noise=eps.transpose(0, 1))


@pytest.mark.parametrize("skip", [False, True], ids=["", "first_frame_skip"])
@pytest.mark.parametrize("prior", ["fixed", "learned"])
def test_free_running_and_the_rollout_take_the_same_step(prior, skip):
    """With the posterior (and the learned prior) fixed at N(0.5, ~0), training's free run and
    the rollout with eps = 0.5 both use z = 0.5: the same frames, step for step (with
    first_frame_skip, both feed frame 0's features to every step)."""
    model = tiny(prior=prior, pose_region=1, blend_mask=True, predict_change=True,
                 first_frame_skip=skip).eval()
    for head in [model.posterior[-1]] + ([] if model.prior is None else [model.prior[-1]]):
        with torch.no_grad():
            head.weight.zero_()
            head.bias[:N].fill_(0.5)
            head.bias[N:].fill_(-60.0)  # std e^-30
    frames, poses = clip()
    eps = torch.full((B, T - 1, N, H, W), 0.5 if prior == "fixed" else 0.0)
    with torch.no_grad():
        free = model(frames, poses, False).pred.clamp(0.0, 1.0)
        rollout = model.generate(frames[:, 0], poses, noise=eps)
    torch.testing.assert_close(rollout[:, 1:], free, rtol=0, atol=1e-6)
    assert not torch.allclose(free[:, 1:], frames[:, :1].expand_as(free[:, 1:]))  # it moves


def test_unwrap():
    model = tiny()

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert unwrap(model) is model
    assert unwrap(Wrapper(model)) is model


# ------------------------------------------------------------------------ initialisation


def _copy_last_model(activation: str = "none", predict_change: bool = False,
                     first_frame_skip: bool = False) -> CVAE:
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        f"model.output_activation={activation}", f"model.predict_change={predict_change}",
        f"model.first_frame_skip={first_frame_skip}"])
    model = CVAE(cfg.model)
    init_copy_last(model)
    return model


@pytest.mark.parametrize("predict_change", [False, True])
def test_copy_last_init_predicts_the_previous_frame_with_the_posterior_at_the_prior(
        predict_change):
    model = _copy_last_model(predict_change=predict_change)
    frames, poses = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    for teacher_forced in (True, False):
        pred, mu, logvar, _ = model(frames, poses, teacher_forced)
        expected = frames[:, :-1] if teacher_forced else frames[:, :1].expand_as(pred)
        torch.testing.assert_close(pred, expected, rtol=0, atol=1e-6)
        assert mu.abs().max() == 0 and logvar.abs().max() == 0  # KL = 0 at the first step
    rollout = model.eval().generate(frames[:, 0], poses)
    torch.testing.assert_close(rollout, frames[:, :1].expand_as(rollout), rtol=0, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) == 131_257  # the same parameters


@pytest.mark.parametrize("predict_change", [False, True])
def test_copy_last_init_leaves_every_part_trainable(predict_change):
    """Zero-initialised layers open up after the first steps: every part learns."""
    from cvae.training import train_step

    model = _copy_last_model(predict_change=predict_change)
    start = {part: [p.detach().clone() for p in getattr(model, part).parameters()]
             for part in PARTS}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, poses = torch.rand(1, 3, 3, 32, 64), torch.rand(1, 3, 3, 32, 64)
    for _ in range(3):
        train_step(model, optimizer, frames, poses, beta=1.0, teacher_forced=True, grad_clip=1.0)
    for part, before in start.items():
        after = list(getattr(model, part).parameters())
        assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)), part


def test_lab_init_starts_far_from_copying():
    """PyTorch's default init (model.init=torch, the lab's) damps the previous frame on its way
    to the prediction: the untrained prediction barely changes when the input frame does."""
    torch.manual_seed(0)
    model = CVAE(load_config(None, preset="small").model).eval()
    frames, poses = torch.rand(1, 2, 3, 32, 64), torch.rand(1, 2, 3, 32, 64)
    noise = torch.zeros(1, 1, 8, 32, 64)
    changed = frames.clone()
    changed[:, 0] = torch.rand(3, 32, 64)
    with torch.no_grad():
        delta = model(frames, poses, True, noise).pred - model(changed, poses, True, noise).pred
    assert delta.std() < 0.01 * (frames[:, 0] - changed[:, 0]).std()


# ------------------------------------------------------------------------ predicting the change


def test_predict_change_adds_the_output_to_the_previous_frame():
    """Same weights: the change model's prediction = the frame model's + the previous frame."""
    frames, poses = clip()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(3))
    frame_model, change_model = tiny(), tiny(predict_change=True)
    change_model.load_state_dict(frame_model.state_dict())
    frame_model.eval(), change_model.eval()
    with torch.no_grad():
        out = frame_model(frames, poses, True, noise).pred
        pred = change_model(frames, poses, True, noise).pred
    torch.testing.assert_close(pred, frames[:, :-1] + out)
    assert sum(p.numel() for p in change_model.parameters()) == \
        sum(p.numel() for p in frame_model.parameters())


def test_predict_change_free_running_feeds_back_prediction_plus_change():
    frames, poses = clip()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(3))
    model = tiny(predict_change=True).eval()
    with torch.no_grad():
        pred = model(frames, poses, False, noise).pred
        stepped = model(frames, poses, True, noise, stepwise=True).pred
    torch.testing.assert_close(pred[:, 0], stepped[:, 0])  # step 1 starts from the true frame
    assert not torch.allclose(pred[:, 1:], stepped[:, 1:])  # later steps from predictions


def test_predict_change_with_sigmoid_is_refused():
    from cvae.errors import ConfigError

    with pytest.raises(ConfigError, match="model.predict_change"):
        load_config(None, overrides=["model.predict_change=true",
                                     "model.output_activation=sigmoid"])


# ------------------------------------------------- batched vs per-frame teacher forcing


@pytest.mark.parametrize("predict_change", [False, True], ids=["frame", "change"])
@pytest.mark.parametrize("chunk", [0, 1, 4], ids=["whole", "chunk1", "chunk4"])
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"]
)
def test_batched_teacher_forcing_equals_the_per_frame_loop(dtype, tol, chunk, predict_change):
    torch.manual_seed(0)
    model = CVAE(tiny_model_config(predict_change=predict_change)).to(dtype).train()
    model.chunk_frames = chunk  # 4 does not divide the 6 predicted frames: a ragged last chunk
    g = torch.Generator().manual_seed(1)
    b, t, h, w = 2, 4, 8, 12
    frames = torch.rand(b, t, 3, h, w, generator=g, dtype=dtype)
    poses = torch.rand(b, t, 3, h, w, generator=g, dtype=dtype)
    noise = torch.randn(b, t - 1, N, h, w, generator=g, dtype=dtype)
    results = teacher_forced_both_ways(model, frames, poses, noise, beta=0.5)
    (pred_b, loss_b, mse_b, kl_b, grads_b), (pred_s, loss_s, mse_s, kl_s, grads_s) = results
    torch.testing.assert_close(pred_b, pred_s, rtol=tol, atol=tol)
    torch.testing.assert_close(loss_b, loss_s, rtol=tol, atol=tol)
    torch.testing.assert_close(mse_b, mse_s, rtol=tol, atol=tol)
    torch.testing.assert_close(kl_b, kl_s, rtol=tol, atol=tol)
    assert grads_b.keys() == grads_s.keys() == dict(model.named_parameters()).keys()
    # The conv bias before the pose encoder's BatchNorm has a gradient of exactly 0 in exact
    # arithmetic (BN subtracts it again): rounding noise there is judged against the model's
    # largest gradient, not its own.
    largest = max(g.abs().max().item() for g in grads_b.values())
    for name, grad in grads_b.items():
        assert grad.dtype == dtype
        scale = max(grad.abs().max().item(), 1e-3 * largest)
        torch.testing.assert_close(grad / scale, grads_s[name] / scale, rtol=tol, atol=tol,
                                   msg=f"gradient of {name} differs")
    # every part of the model is trained by the loss
    assert all(g.abs().sum() > 0 for g in grads_b.values())

def test_per_frame_loop_differs_when_free_running(tiny_model):
    model = tiny_model
    frames, poses = torch.rand(1, 4, 3, 8, 8), torch.rand(1, 4, 3, 8, 8)
    noise = torch.randn(1, 3, N, 8, 8)
    tf = model(frames, poses, True, noise=noise).pred
    fr = model(frames, poses, False, noise=noise).pred
    assert not torch.allclose(tf[:, 2], fr[:, 2])  # a guard: the equivalence is not trivial


# ------------------------------------------------------------------------ blending with the mask


def _blend_model(predict_change: bool) -> CVAE:
    torch.manual_seed(0)
    cfg = load_config(None, preset="small", overrides=[
        "model.blend_mask=true", f"model.predict_change={predict_change}"])
    model = CVAE(cfg.model)
    init_copy_last(model)
    return model


@pytest.mark.parametrize("predict_change", [False, True], ids=["frame", "change"])
def test_untrained_blend_model_predicts_the_previous_frame_exactly(predict_change):
    model = _blend_model(predict_change)
    frames, poses = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    for teacher_forced in (True, False):
        pred, mu, _, mask = model(frames, poses, teacher_forced)
        assert pred.shape == (2, 3, 3, 32, 64) and mu.shape == (2, 3, 8, 32, 64)
        assert mask.shape == (2, 3, 1, 32, 64)
        expected = frames[:, :-1] if teacher_forced else frames[:, :1].expand_as(pred)
        torch.testing.assert_close(pred, expected, rtol=0, atol=0)
    rollout = model.eval().generate(frames[:, 0], poses)
    assert rollout.shape == frames.shape
    torch.testing.assert_close(rollout, frames[:, :1].expand_as(rollout), rtol=0, atol=0)
    # the mask channel adds D/8 weights and a bias to the generator's last convolution
    assert sum(p.numel() for p in model.parameters()) == 131_257 + 48 // 8 + 1


def _features(model: CVAE, prev: torch.Tensor, pose: torch.Tensor):
    """(prev features, pose features, z ~ N(0, I)) for one step. prev, pose [B,3,H,W]."""
    z = torch.randn(prev.shape[0], model.latent_channels, *prev.shape[-2:])
    return model.frame_encoder(prev), model.pose_encoder(pose), z


def test_blend_mask_starts_closed_and_stays_in_0_1():
    model = _blend_model(predict_change=False).eval()
    prev, pose = torch.rand(2, 3, 32, 64), torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        generated, mask = model.generated_and_mask(prev, *_features(model, prev, pose))
        assert generated.shape == (2, 3, 32, 64) and mask.shape == (2, 1, 32, 64)
        torch.testing.assert_close(mask, torch.full_like(mask, torch.sigmoid(torch.tensor(-4.0))
                                                         .item()))
        # other weights (PyTorch's init, the head's weights scaled up): still in [0,1]
        model = CVAE(load_config(None, preset="small", overrides=[
            "model.blend_mask=true"]).model).eval()
        model.generator[-1].weight.mul_(100)
        generated, mask = model.generated_and_mask(prev, *_features(model, prev, pose))
        pred = model._step(prev, *_features(model, prev, pose))[0]
    assert 0 <= mask.min() and mask.max() <= 1 and mask.std() > 0
    assert torch.isfinite(pred).all()


def test_blend_prediction_mixes_generated_and_previous_by_the_mask():
    frames, poses = clip()
    model = tiny(blend_mask=True).eval()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        pred = model(frames, poses, True, noise, stepwise=True).pred[:, 0]  # [B,3,H,W]
        prev = frames[:, 0]
        pose_feat = model.pose_encoder(poses[:, 1:].flatten(0, 1)).unflatten(0, (B, T - 1))
        z = model.posterior(model.frame_encoder(frames[:, 1]), pose_feat[:, 0],
                            noise[:, 0])[0]
        generated, mask = model.generated_and_mask(prev, model.frame_encoder(prev),
                                                   pose_feat[:, 0], z)
    torch.testing.assert_close(pred, mask * generated + (1 - mask) * prev)


def test_reference_parameter_count_is_unchanged_with_the_mask_off():
    model = CVAE(load_config(preset="lab", overrides=["model.blend_mask=false"]).model)
    assert dict(parameter_table(model))["total"] == 1_585_620
    blend = CVAE(load_config(preset="lab", overrides=["model.blend_mask=true"]).model)
    assert dict(parameter_table(blend))["total"] == 1_585_620 + 192 // 8 + 1


def test_blend_with_sigmoid_is_refused():
    from cvae.errors import ConfigError

    with pytest.raises(ConfigError, match="model.blend_mask"):
        load_config(None, overrides=["model.blend_mask=true", "model.output_activation=sigmoid"])


@pytest.mark.parametrize("teacher_forced", [True, False], ids=["teacher-forced", "free"])
def test_the_masks_come_with_the_prediction_chunked_whole_and_per_frame(teacher_forced):
    frames, poses = clip()
    model = tiny(blend_mask=True, predict_change=True).eval()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.chunk_frames = 2  # 6 predicted frames in chunks of 2: masks concatenated
        chunked = model(frames, poses, teacher_forced, noise)
        model.chunk_frames = 0
        whole = model(frames, poses, teacher_forced, noise)
        stepped = model(frames, poses, teacher_forced, noise, stepwise=True)
    mask = whole.mask
    assert mask.shape == (B, T - 1, 1, H, W) and 0 <= mask.min() and mask.max() <= 1
    torch.testing.assert_close(chunked.pred, whole.pred)
    torch.testing.assert_close(chunked.mask, mask)
    torch.testing.assert_close(stepped.pred, whole.pred, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stepped.mask, mask, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------ pose region


def test_skeleton_area_is_the_square_neighbourhood_of_the_skeleton():
    from cvae.regions import skeleton_area

    pose = torch.zeros(2, 3, 3, 12, 16)  # [B,T,3,H,W]
    pose[0, 1, 2, 5, 3] = 0.8  # one skeleton pixel (blue channel)
    pose[0, 1, 0, 9, 12] = 0.5  # another
    pose[1, 0, 1, 0, 0] = 0.04  # too dark to count as skeleton
    area = skeleton_area(pose, radius=2)
    assert area.shape == (2, 3, 1, 12, 16)
    expected = torch.zeros(12, 16)
    expected[3:8, 1:6] = 1  # 5x5 around (5, 3)
    expected[7:12, 10:15] = 1  # 5x5 around (9, 12)
    torch.testing.assert_close(area[0, 1, 0], expected, rtol=0, atol=0)
    assert area.sum() == expected.sum()  # every other frame is empty


def _region_clip():
    """A clip whose poses are black except a 1-pixel skeleton that moves right by 2 pixels a
    frame (row 4, columns 2, 4, ..., 10); random frames [B,6,3,10,16]."""
    frames, _ = clip(t=6, h=10, w=16)
    poses = torch.zeros_like(frames)
    for t in range(poses.shape[1]):
        poses[:, t, :, 4, 2 + 2 * t] = 1.0
    return frames, poses


def test_composite_plan_changes_the_dancer_now_and_what_it_uncovers_in_frame_0():
    from cvae.regions import Composite

    frames, poses = _region_clip()
    comp = Composite.plan(frames[:, 0], poses, radius=1)
    hidden = torch.zeros(10, 16)
    hidden[3:6, 1:4] = 1  # around frame 0's pixel (4, 2)
    for t in range(comp.keep.shape[1]):  # every step keeps the previous frame there
        torch.testing.assert_close(comp.keep[0, t, 0], hidden, rtol=0, atol=0)
    step1 = torch.zeros(10, 16)
    step1[3:6, 3:6] = 1  # the dancer at frame 1 (4, 4)...
    step1[3:6, 1:4] = 1  # ...and frame 0's area, which lies in `hidden`
    torch.testing.assert_close(comp.change[0, 0, 0], step1, rtol=0, atol=0)
    step3 = torch.zeros(10, 16)
    step3[3:6, 7:10] = 1  # frame 3 (4, 8); frame 2's area (4, 6) is outside `hidden`
    torch.testing.assert_close(comp.change[0, 2, 0], step3, rtol=0, atol=0)
    prev = torch.rand(2, 3, 10, 16)
    base = comp.step_args(0, prev)[1]
    inside = comp.keep[:, 0].bool().expand_as(prev)
    assert torch.equal(base[inside], prev[inside])
    assert torch.equal(base[~inside], frames[:, 0][~inside])


def _random_generator_model(**kw) -> CVAE:
    model = tiny(predict_change=True, pose_region=1, **kw).eval()
    torch.manual_seed(0)
    for p in model.generator.parameters():  # a generator that changes every pixel
        p.data.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("blend", [False, True], ids=["region", "region+mask"])
def test_pose_region_keeps_frame_0_wherever_the_dancer_never_was(blend):
    from cvae.regions import Composite

    frames, poses = _region_clip()
    model = _random_generator_model(blend_mask=blend, blend_mask_init=0.0)
    comp = Composite.plan(frames[:, 0], poses, 1)
    with torch.no_grad():
        tf = model(frames, poses, True).pred
        free = model(frames, poses, False).pred
        rollout = model.generate(frames[:, 0], poses)[:, 1:]
    # teacher-forced: outside each step's change area, that step's base exactly
    keep = (comp.change == 0).expand_as(tf)
    base = comp.step_args(slice(None), frames[:, :-1])[1]
    assert torch.equal(tf[keep], base[keep])
    assert not torch.allclose(tf[~keep], base[~keep])
    # rolled out: frame 0 wherever no step may change the frame
    never = (comp.change.amax(1, keepdim=True) == 0).expand_as(free)
    assert 0.4 < never.float().mean() < 1
    first = frames[:, :1].expand_as(free)
    assert torch.equal(free[never], first[never])
    assert torch.equal(rollout[never], first[never])


def test_pose_region_without_change_is_the_copy_frame_0_baseline():
    frames, poses = _region_clip()
    model = tiny(predict_change=True, pose_region=2)  # copy_last init: no change at all
    init_copy_last(model)
    with torch.no_grad():
        rollout = model.eval().generate(frames[:, 0], poses)
    torch.testing.assert_close(rollout, frames[:, :1].expand_as(rollout), rtol=0, atol=0)


def test_pose_region_batched_and_stepwise_agree_and_masks_are_the_change_areas():
    from cvae.regions import Composite

    frames, poses = _region_clip()
    model = _random_generator_model()
    model.chunk_frames = 3
    noise = torch.randn(frames.shape[0], frames.shape[1] - 1, N, *frames.shape[-2:])
    with torch.no_grad():
        batched = model(frames, poses, True, noise)
        stepped = model(frames, poses, True, noise, stepwise=True)
    torch.testing.assert_close(stepped.pred, batched.pred, rtol=1e-5, atol=1e-5)
    change = Composite.plan(frames[:, 0], poses, 1).change
    torch.testing.assert_close(batched.mask, change, rtol=0, atol=0)
    torch.testing.assert_close(stepped.mask, change, rtol=0, atol=0)


def test_pose_region_adds_no_parameters_and_bad_radii_are_refused():
    from cvae.errors import ConfigError

    plain = CVAE(load_config(preset="lab").model)
    region = CVAE(load_config(preset="lab", overrides=["model.pose_region=3"]).model)
    assert dict(parameter_table(region))["total"] == dict(parameter_table(plain))["total"]
    for bad in ("-1", "65"):
        with pytest.raises(ConfigError, match="model.pose_region"):
            load_config(None, overrides=[f"model.pose_region={bad}"])


# ------------------------------------------------------------ model.prior=learned (SVG-LP)


def test_kl_against_the_learned_prior_is_the_gaussian_kl():
    """relative_to_prior + the loss's KL to N(0, I) = KL(posterior || prior), computed here by
    torch.distributions."""
    from torch.distributions import Normal
    from torch.distributions import kl_divergence as torch_kl

    from cvae.losses import kl_divergence
    from cvae.model import relative_to_prior

    g = torch.Generator().manual_seed(3)
    mu, logvar, prior_mu, prior_logvar = (
        torch.randn(2, 3, N, 4, 5, generator=g, dtype=torch.float64) for _ in range(4))
    expected = torch_kl(Normal(mu, (0.5 * logvar).exp()),
                        Normal(prior_mu, (0.5 * prior_logvar).exp())).sum() / 2
    got = kl_divergence(*relative_to_prior(mu, logvar, prior_mu, prior_logvar), batch_size=2)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    same = relative_to_prior(mu, logvar, mu, logvar)
    assert same[0].abs().max() == 0 and same[1].abs().max() == 0  # posterior = prior: KL 0


@pytest.mark.parametrize("options", [{"prior": "learned"}, {"prior": "learned", "prev_pose": True}],
                         ids=["prior", "prior+prev_pose"])
def test_learned_prior_batched_equals_per_frame_and_every_part_learns(options):
    results = float64_both_ways(*clip(), **options)
    (pred_b, _, _, kl_b, grads_b), (pred_s, _, _, kl_s, _) = results
    torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(kl_b, kl_s, rtol=1e-10, atol=1e-10)
    assert kl_b > 0
    prior_grads = [grads_b[n] for n in grads_b if n.startswith("prior.")]
    assert prior_grads and all(g.abs().sum() > 0 for g in prior_grads)  # the KL trains it


def test_free_running_prior_is_fed_the_models_own_predictions():
    """Free-running, the prior of step t sees prediction t-1 (clamped, as fed back), while the
    posterior sees the true frame t: the KL is recomputed here from those inputs."""
    from cvae.model import relative_to_prior

    model = make_tiny_model(prior="learned").to(torch.float64).eval()
    frames, poses = (x.to(torch.float64) for x in clip())
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(2),
                        dtype=torch.float64)
    with torch.no_grad():
        pred, mu, logvar, _ = model(frames, poses, False, noise=noise)
        given = torch.cat([frames[:, :1], pred[:, :-1].clamp(0, 1)], 1).flatten(0, 1)
        pose_feat = model.pose_encoder(poses[:, 1:].flatten(0, 1))
        _, post_mu, post_logvar = model.posterior(model.frame_encoder(frames[:, 1:].flatten(0, 1)),
                                                  pose_feat, noise.flatten(0, 1))
        prior = model.prior.gaussian(model.frame_encoder(given), pose_feat)
        expected = relative_to_prior(post_mu, post_logvar, *prior)
    torch.testing.assert_close(mu.flatten(0, 1), expected[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logvar.flatten(0, 1), expected[1], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(pred[:, 0], frames[:, 1])  # predictions differ from the truth


def _prior_fixed_at(model: CVAE, mean: float) -> CVAE:
    """The learned prior made to predict N(mean, ~0) everywhere, whatever its inputs."""
    head = model.prior[-1]
    with torch.no_grad():
        head.weight.zero_()
        head.bias[:N].fill_(mean)
        head.bias[N:].fill_(-60.0)  # std e^-30
    return model.eval()


def test_rollout_draws_z_from_the_learned_prior():
    frames, poses = clip()
    outs = {}
    for mean in (0.7, -0.7):
        model = _prior_fixed_at(make_tiny_model(prior="learned"), mean)
        rollout = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(0))
        prev, expected = frames[:, 0], [frames[:, 0]]
        with torch.no_grad():
            for t in range(1, T):
                z = torch.full((B, N, H, W), mean)
                prev = model._step(prev, model.frame_encoder(prev),
                                   model.pose_encoder(poses[:, t]), z)[0].clamp(0, 1)
                expected.append(prev)
        torch.testing.assert_close(rollout, torch.stack(expected, 1), rtol=0, atol=1e-6)
        outs[mean] = rollout
    assert not torch.allclose(outs[0.7], outs[-0.7])  # z reaches the frames: a real check


def test_learned_prior_adds_a_posterior_sized_part_and_starts_at_kl_zero():
    fixed, learned = dict(parameter_table(tiny())), dict(parameter_table(tiny(prior="learned")))
    assert list(learned) == [*PARTS, "prior", "total"]
    assert learned["prior"] == learned["posterior"]
    assert learned["total"] == fixed["total"] + learned["prior"]
    torch.manual_seed(0)
    # the small preset: the tiny widths are too narrow to carry RGB through the copy_last init
    model = CVAE(load_config(None, preset="small", overrides=["model.prior=learned"]).model)
    init_copy_last(model)
    frames, poses = clip(h=32, w=64)
    for teacher_forced in (True, False):
        out = model(frames, poses, teacher_forced)
        assert out.mu.abs().max() == 0 and out.logvar.abs().max() == 0
    rollout = model.eval().generate(frames[:, 0], poses)
    torch.testing.assert_close(rollout, frames[:, :1].expand_as(rollout), rtol=0, atol=1e-6)


def test_unknown_prior_is_refused_naming_the_key():
    from cvae.errors import ConfigError

    with pytest.raises(ConfigError, match="model.prior"):
        load_config(None, overrides=["model.prior=lstm"])


# ------------------------------------------------------------------------- model.prev_pose


def test_prev_pose_widens_only_the_first_pose_convolution():
    plain, both = dict(parameter_table(tiny())), dict(parameter_table(tiny(prev_pose=True)))
    half_l = TINY_MODEL["label_channels"] // 2
    assert both["pose_encoder"] == plain["pose_encoder"] + 3 * 7 * 7 * half_l
    assert {k: v for k, v in both.items() if k not in ("pose_encoder", "total")} == \
        {k: v for k, v in plain.items() if k not in ("pose_encoder", "total")}


def test_rollout_with_prev_pose_feeds_pose_t_and_pose_t_minus_1():
    model = make_tiny_model(prev_pose=True).eval()
    frames, poses = clip()
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        rollout = model.generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(0))
        rng, prev, expected = torch.Generator().manual_seed(0), frames[:, 0], [frames[:, 0]]
        for t in range(1, T):
            z = torch.randn(B, N, H, W, generator=rng)
            pose_feat = model.pose_encoder(torch.cat([poses[:, t], poses[:, t - 1]], dim=1))
            prev = model._step(prev, model.frame_encoder(prev), pose_feat, z)[0].clamp(0, 1)
            expected.append(prev)
        torch.testing.assert_close(rollout, torch.stack(expected, 1), rtol=0, atol=1e-6)
        # the same input through the training path: step 1 from frame 0 sees poses 1 and 0
        moved = poses.clone()
        moved[:, 0] = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(5))
        first = model(frames, poses, True, noise=noise).pred[:, 0]
        assert not torch.allclose(first, model(frames, moved, True, noise=noise).pred[:, 0])
        # while without prev_pose pose 0 is never an input
        plain = make_tiny_model().eval()
        torch.testing.assert_close(plain(frames, poses, True, noise=noise).pred[:, 0],
                                   plain(frames, moved, True, noise=noise).pred[:, 0])


# ------------------------------------------------------------------ model.first_frame_skip


def test_first_frame_skip_widens_only_the_decoder_fusion():
    plain, skip = dict(parameter_table(tiny())), dict(parameter_table(tiny(first_frame_skip=True)))
    assert skip["decoder_fusion"] > plain["decoder_fusion"]
    assert {k: v for k, v in skip.items() if k not in ("decoder_fusion", "total")} == \
        {k: v for k, v in plain.items() if k not in ("decoder_fusion", "total")}
    assert tiny(first_frame_skip=True).decoder_fusion[0][0].conv1[0].in_channels == \
        2 * TINY_MODEL["frame_channels"] + TINY_MODEL["label_channels"] + N


def test_frame_0_reaches_every_step_with_first_frame_skip_only():
    """Teacher-forced, step 2 (predicting frame 2 from the true frame 1) sees frame 0 only
    through the skip: changing frame 0 changes it with the skip and leaves it alone without."""
    frames, poses = clip()
    moved = frames.clone()
    moved[:, 0] = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(4))
    for skip in (False, True):
        model = tiny(first_frame_skip=skip).eval()
        with torch.no_grad():
            a = model(frames, poses, True, noise=noise).pred[:, 1:]
            b = model(moved, poses, True, noise=noise).pred[:, 1:]
        assert torch.allclose(a, b) is not skip, f"first_frame_skip={skip}"


@pytest.mark.parametrize("options", [{}, {"pose_region": 1, "blend_mask": True},
                                     {"prior": "learned"}], ids=["plain", "region+mask", "prior"])
def test_first_frame_skip_batched_equals_per_frame_and_every_part_learns(options):
    (pred_b, loss_b, _, _, grads_b), (pred_s, loss_s, _, _, grads_s) = \
        float64_both_ways(*clip(), first_frame_skip=True, **options)
    torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss_b, loss_s, rtol=1e-10, atol=1e-10)
    for name, grad in grads_b.items():
        torch.testing.assert_close(grad, grads_s[name], rtol=1e-8, atol=1e-10, msg=name)
    assert all(g.abs().sum() > 0 for g in grads_b.values())


def test_first_frame_skip_starts_as_copy_last():
    """init_copy_last still predicts the previous frame: frame 0's channels come after it."""
    model = _copy_last_model(first_frame_skip=True)
    frames, poses = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
    with torch.no_grad():
        pred = model(frames, poses, True).pred
    torch.testing.assert_close(pred, frames[:, :-1], rtol=0, atol=1e-6)


# ------------------------------------------------------------------------ torch.compile


def test_compiled_frame_step_trains_and_rolls_out_as_eager():
    """run.compile: the compiled per-frame step gives eager's predictions and gradients on a
    free-running clip (pose_region, first_frame_skip, the pose painting with its gate and the
    learned prior all inside the step), and eager's rollout."""
    frames, poses = clip(seed=3)
    noise = torch.randn(B, T - 1, N, H, W, generator=torch.Generator().manual_seed(4))
    options = dict(pose_region=1, predict_change=True, first_frame_skip=True, prior="learned",
                   first_frame_posed=True, posed_base=True, posed_gate=True)
    eager, compiled = tiny(**options), tiny(**options)
    compiled.compile_frames()
    results = []
    for model in (eager, compiled):
        pred = model(frames, poses, teacher_forced=False, noise=noise)
        (pred.pred.square().mean() + pred.mu.square().mean()).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((pred.pred.detach(), grads))
    assert compiled.compiled_frame is not None
    torch.testing.assert_close(results[1][0], results[0][0])
    assert len(results[1][1]) == len(results[0][1]) > 0
    for a, b in zip(results[1][1], results[0][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    rollouts = [m.eval().generate(frames[:, 0], poses, noise=noise) for m in (eager, compiled)]
    torch.testing.assert_close(rollouts[1], rollouts[0])


def test_run_compile_compiles_the_built_model():
    from cvae.training import build_model

    cfg = load_config(overrides=[*(f"model.{k}={v}" for k, v in TINY_MODEL.items()),
                                 "run.compile=true"])
    assert build_model(cfg, torch.device("cpu")).compiled_frame is not None
    assert build_model(load_config(), torch.device("cpu")).compiled_frame is None
