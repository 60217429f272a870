"""model.latent_cell: z drawn per cell of pixels (or once per frame) instead of per pixel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F_nn
from conftest import TINY_MODEL, float64_both_ways, make_tiny_model

from cvae.blocks import Posterior
from cvae.config import ConfigError, load_config
from cvae.evaluate import validate

B, T, H, W = 2, 4, 8, 12
N = TINY_MODEL["latent_channels"]


def clip(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, H, W, generator=g), torch.rand(B, T, 3, H, W, generator=g)


@pytest.mark.parametrize("cell, grid", [(1, (H, W)), (4, (2, 3)), (2, (4, 6)), (0, (1, 1))])
def test_latent_shape_follows_the_cell(cell, grid):
    model = make_tiny_model(latent_cell=cell)
    assert model.latent_shape(H, W) == (N, *grid)
    frames, poses = clip()
    out = model(frames, poses, teacher_forced=False)  # the free-running loop
    assert out.pred.shape == (B, T - 1, 3, H, W)
    assert out.mu.shape == out.logvar.shape == (B, T - 1, N, *grid)
    rollout = model.eval().generate(frames[:, 0], poses, rng=torch.Generator().manual_seed(0))
    assert rollout.shape == (B, T, 3, H, W)


def test_same_weights_at_any_grain():
    """The grain adds no parameters: a per-pixel model's weights load into a coarse one."""
    fine, coarse = make_tiny_model(), make_tiny_model(seed=1, latent_cell=4)
    assert sum(p.numel() for p in fine.parameters()) == \
        sum(p.numel() for p in coarse.parameters())
    coarse.load_state_dict(fine.state_dict())


def test_a_cell_gets_the_mean_of_its_pixels_gaussians():
    torch.manual_seed(0)
    fine = Posterior(8, N).eval()
    feats = torch.rand(2, 6, H, W), torch.rand(2, 2, H, W)
    mu, logvar = fine.gaussian(*feats)
    for cell, pool in ((4, lambda x: F_nn.avg_pool2d(x, 4)),
                       (0, lambda x: x.mean((-2, -1), keepdim=True))):
        coarse = Posterior(8, N, cell).eval()
        coarse.load_state_dict(fine.state_dict())
        got_mu, got_logvar = coarse.gaussian(*feats)
        torch.testing.assert_close(got_mu, pool(mu))
        torch.testing.assert_close(got_logvar, pool(logvar))


def test_each_z_value_reaches_every_pixel_of_its_cell_and_no_other():
    model = make_tiny_model(latent_cell=4).eval()
    prev, pose = torch.rand(1, 3, H, W), torch.rand(1, 3, H, W)
    feats = model.frame_encoder(prev), model.pose_encoder(pose)
    z = torch.randn(1, N, 2, 3)
    spread = z.repeat_interleave(4, -2).repeat_interleave(4, -1)  # [1,N,H,W]
    with torch.no_grad():
        got, _ = model.generated_and_mask(prev, *feats, z)
        want, _ = model.generated_and_mask(prev, *feats, spread)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("options", [{"latent_cell": 4}, {"latent_cell": 0},
                                     {"latent_cell": 4, "prior": "learned"}],
                         ids=["cell4", "whole-frame", "cell4+prior"])
def test_coarse_latent_batched_equals_per_frame_and_the_posterior_learns(options):
    (pred_b, loss_b, _, kl_b, grads), (pred_s, loss_s, _, kl_s, _) = \
        float64_both_ways(*clip(), **options)
    torch.testing.assert_close(pred_b, pred_s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss_b, loss_s, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(kl_b, kl_s, rtol=1e-10, atol=1e-10)
    assert kl_b > 0
    head = [g for n, g in grads.items() if n.startswith("posterior.")]
    assert head and any(g.abs().sum() > 0 for g in head)


def test_validation_draws_coarse_noise_and_a_seed_fixes_it():
    model = make_tiny_model(latent_cell=4, predict_change=True, prior="learned")
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(6, 3, H, W, generator=g), torch.rand(6, 3, H, W, generator=g)
    runs = [validate(model, frames, poses, short_len=2, device=torch.device("cpu"), seed=seed)
            for seed in (0, 0, 1)]
    assert runs[0].pred.shape == (6, 3, H, W)
    assert torch.equal(runs[0].pred, runs[1].pred) and runs[0].metrics() == runs[1].metrics()
    assert not torch.equal(runs[0].pred, runs[2].pred)  # z reaches the frames


@pytest.mark.parametrize("cell", [0, 1, 8, 32])
def test_a_cell_that_divides_the_frame_loads(cell):
    cfg = load_config(overrides=[f"model.latent_cell={cell}"])
    assert cfg.model.latent_cell == cell


def test_a_cell_that_does_not_divide_the_frame_is_refused_naming_the_key_and_size():
    with pytest.raises(ConfigError, match=r"^model\.latent_cell = 3: must divide data\.height "
                                          r"and data\.width \(32 x 64\), or be 0"):
        load_config(overrides=["model.latent_cell=3"])
