"""The training loss: sum over the clip's predicted frames of MSE + beta * KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, batch_size: int,
                  per_step: bool = False) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) summed over every latent element, divided by the batch;
    per_step: mu, logvar [B,S,...] -> one sum per step, [S]."""
    terms = 1 + logvar - mu.pow(2) - logvar.exp()
    return -0.5 * (terms.flatten(2).sum((0, 2)) if per_step else terms.sum()) / batch_size


def clip_loss(pred: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              beta: float, free_bits: float = 0.0,
              edge_weight: float = 0.0) -> tuple[torch.Tensor, ...]:
    """pred, target [B,S,3,H,W]; mu, logvar [B,S,N,H,W].

    Returns (loss, mse, kl), each summed over the S steps (one loss per step, added up):
    MSE_t is the mean over the batch and pixels, KL_t is summed over latents / B. With
    `free_bits` > 0 the loss takes max(KL_t, free_bits) for each step (no cost, and no pull
    towards the prior, below that many nats per frame); `kl` stays the true KL. With
    `edge_weight` > 0 the loss adds edge_weight x `gradient_difference` per step.
    """
    steps = pred.shape[1]
    pred, target = pred.float(), target.float()  # once: bf16 autocast outputs are copied here
    # Every step's MSE averages the same number of elements, so the sum of per-step means is
    # steps * (mean over everything); the same holds for the gradient difference.
    mse = F.mse_loss(pred, target) * steps
    floored = free_bits > 0
    kl = kl_divergence(mu.float(), logvar.float(), pred.shape[0], per_step=floored)  # [S] or []
    charged = kl.clamp_min(free_bits) if floored else kl
    loss = mse + beta * charged.sum()
    if edge_weight > 0:
        loss = loss + edge_weight * gradient_difference(pred, target) * steps
    return loss, mse, kl.sum()


def gradient_difference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The gradient difference loss (Mathieu et al. 2016, alpha = 1): the mean over pixels of
    | |pred's difference to its right neighbour| - |target's| |, plus the same downwards.
    [...,H,W] -> a scalar. 0 when pred's edges are as strong as target's, wherever its colours
    are; a blur pays for every edge it softens, which the squared error barely charges."""
    return sum((pred.diff(dim=d).abs() - target.diff(dim=d).abs()).abs().mean() for d in (-1, -2))


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR for images in [0,1]: 20 log10(1) - 10 log10(MSE). [...,C,H,W] -> [...]."""
    mse = (pred.float() - target.float()).pow(2).flatten(-3).mean(-1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))
