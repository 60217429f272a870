"""The lab's loss (cvae.losses): KL divergence, the clip loss, PSNR."""

from __future__ import annotations

import math

import pytest
import torch

from cvae.losses import LossTerms, clip_loss, gradient_difference, kl_divergence, psnr


def test_kl_divergence_matches_a_hand_computation():
    mu = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), -1.0]])
    # KL(N(m, s^2) || N(0,1)) = 0.5 * (s^2 + m^2 - 1 - log s^2), summed, / batch
    terms = [
        0.5 * (1.0 + 0.0 - 1 - 0.0),
        0.5 * (2.0 + 1.0 - 1 - math.log(2.0)),
        0.5 * (0.5 + 4.0 - 1 - math.log(0.5)),
        0.5 * (math.exp(-1.0) + 0.25 - 1 + 1.0),
    ]
    assert kl_divergence(mu, logvar, batch_size=1).item() == pytest.approx(sum(terms), rel=1e-6)
    assert kl_divergence(mu, logvar, batch_size=2).item() == pytest.approx(sum(terms) / 2,
                                                                            rel=1e-6)


def test_kl_of_the_prior_is_zero():
    z = torch.zeros(2, 3, 4, 5, 5)
    assert kl_divergence(z, z, 2).item() == 0.0


def test_clip_loss_is_per_step_mse_sum_plus_beta_kl():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 3, 4, 4, generator=g), torch.rand(2, 3, 3, 4, 4, generator=g)
    mu, logvar = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    loss, mse, kl = clip_loss(pred, target, mu, logvar, beta=0.3)
    per_step = sum(((pred[:, s] - target[:, s]) ** 2).mean() for s in range(3))
    hand_kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum() / 2
    assert mse.item() == pytest.approx(per_step.item(), rel=1e-6)
    assert kl.item() == pytest.approx(hand_kl.item(), rel=1e-6)
    assert loss.item() == pytest.approx(per_step.item() + 0.3 * hand_kl.item(), rel=1e-6)


def test_free_bits_floor_each_steps_kl_in_the_loss_and_stop_its_gradient_below():
    """train.free_bits: the loss takes max(KL_t, free_bits) per step; the reported KL is the
    true one; a step under the floor gets no gradient from the KL term."""
    pred = target = torch.zeros(1, 2, 3, 2, 2)
    mu = torch.zeros(1, 2, 1, 2, 2)
    mu[:, 1] = 2.0  # step 0: KL 0; step 1: 0.5 * 4 * 4 elements = 8 nats
    logvar = torch.zeros_like(mu)
    mu.requires_grad_(True)
    loss, mse, kl = clip_loss(pred, target, mu, logvar, beta=0.5, terms=LossTerms(free_bits=3.0))
    assert kl.item() == pytest.approx(8.0)
    assert loss.item() == pytest.approx(0.5 * (3.0 + 8.0))  # step 0 floored at 3
    loss.backward()
    assert mu.grad[:, 0].abs().max().item() == 0.0  # under the floor: no pull to the prior
    assert mu.grad[:, 1].abs().min().item() > 0.0
    off = clip_loss(pred, target, mu.detach(), logvar, beta=0.5)
    assert off[0].item() == pytest.approx(4.0) and off[2].item() == pytest.approx(8.0)


def test_gradient_difference_by_hand_and_zero_for_the_same_edges_at_another_level():
    target = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])  # one vertical edge of height 1
    blur = torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.5, 1.0]])  # the edge spread over two pixels
    # right neighbours: target |1|,|0| vs blur |.5|,|.5| -> .5 + .5 per row, mean over 4 = .5;
    # downwards: all 0 on both sides
    assert gradient_difference(blur, target).item() == pytest.approx(0.5)
    assert gradient_difference(target, target).item() == 0.0
    # an edge 0.8 high: 0.2 per row on the edge, mean over 4 = 0.1; the same edges at another
    # level (what the squared error charges) cost nothing
    brighter = target * 0.8 + 0.2
    assert gradient_difference(brighter, target).item() == pytest.approx(0.1)
    assert gradient_difference(target - 0.3, target).item() == 0.0  # shifted: same edges
    assert gradient_difference(1.0 - target, target).item() == 0.0  # the edge's sign is free


def test_edge_weight_adds_the_gradient_difference_per_step_and_leaves_mse_and_kl():
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(2, 3, 3, 4, 4, generator=g), torch.rand(2, 3, 3, 4, 4, generator=g)
    mu, logvar = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    plain = clip_loss(pred, target, mu, logvar, beta=0.3)
    edged = clip_loss(pred, target, mu, logvar, beta=0.3, terms=LossTerms(edge_weight=0.05))
    per_step = sum(gradient_difference(pred[:, s], target[:, s]) for s in range(3))
    assert edged[0].item() == pytest.approx(plain[0].item() + 0.05 * per_step.item(), rel=1e-6)
    assert per_step.item() > 0
    assert edged[1].item() == plain[1].item() and edged[2].item() == plain[2].item()


def test_psnr_of_identical_images_is_large():
    x = torch.rand(5, 3, 8, 8)
    values = psnr(x, x)
    assert values.shape == (5,)
    assert (values >= 100.0 - 1e-4).all()


@pytest.mark.parametrize("offset, expected", [(0.1, 20.0), (0.01, 40.0), (0.5, 10 * math.log10(4))])
def test_psnr_of_a_known_mse(offset, expected):
    target = torch.full((2, 4, 3, 6, 6), 0.25)
    values = psnr(target + offset, target)  # MSE = offset^2 on every frame
    assert values.shape == (2, 4)
    torch.testing.assert_close(values, torch.full((2, 4), expected), rtol=1e-4, atol=1e-4)


def test_psnr_is_per_frame():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[1] = 0.1
    values = psnr(pred, target)
    assert values[0].item() == pytest.approx(100.0)
    assert values[1].item() == pytest.approx(20.0, rel=1e-4)


def test_clip_loss_adds_the_mask_penalty_per_step_and_needs_the_mask():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.rand(2, 3, 3, 4, 5, generator=g), torch.rand(2, 3, 3, 4, 5, generator=g)
    mu, logvar = torch.randn(2, 3, 2, 4, 5, generator=g), torch.randn(2, 3, 2, 4, 5, generator=g)
    mask = torch.rand(2, 3, 1, 4, 5, generator=g)
    plain = clip_loss(pred, target, mu, logvar, beta=0.3)
    penalised = clip_loss(pred, target, mu, logvar, beta=0.3, terms=LossTerms(mask_penalty=0.2),
                          mask=mask)
    torch.testing.assert_close(penalised[0], plain[0] + 0.2 * mask.mean() * 3)
    torch.testing.assert_close(penalised[1:], plain[1:])
    with pytest.raises(ValueError, match="mask_penalty"):
        clip_loss(pred, target, mu, logvar, beta=0.3, terms=LossTerms(mask_penalty=0.2))
