"""The training loss: sum over the clip's predicted frames of MSE + beta * KL, and the optional
terms a run's config adds (LossTerms)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossTerms:
    """The loss's optional terms, each off at 0 (the lab's loss); cvae.config.TrainConfig says
    what each does. A new term is a field here, read in `from_train` and added in clip_loss."""

    free_bits: float = 0.0  # train.free_bits: nats per step below which KL costs nothing
    edge_weight: float = 0.0  # train.edge_weight: x the gradient difference per step
    mask_penalty: float = 0.0  # train.mask_penalty: x the mean blend mask per step

    @classmethod
    def from_train(cls, train) -> LossTerms:
        """The terms a cvae.config.TrainConfig sets."""
        return cls(free_bits=train.free_bits, edge_weight=train.edge_weight,
                   mask_penalty=train.mask_penalty)


NO_TERMS = LossTerms()  # the lab's loss: MSE + beta * KL alone


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, batch_size: int,
                  per_step: bool = False) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(0, I)) summed over every latent element, divided by the batch;
    per_step: mu, logvar [B,S,...] -> one sum per step, [S]."""
    terms = 1 + logvar - mu.pow(2) - logvar.exp()
    return -0.5 * (terms.flatten(2).sum((0, 2)) if per_step else terms.sum()) / batch_size


def clip_loss(pred: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
              beta: float, terms: LossTerms = NO_TERMS,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """pred, target [B,S,3,H,W]; mu, logvar [B,S,N,h,w]; mask [B,S,1,H,W] in [0,1] (the
    model's blend mask, needed by terms.mask_penalty only).

    Returns (loss, mse, kl), each summed over the S steps (one loss per step, added up):
    MSE_t is the mean over the batch and pixels, KL_t is summed over latents / B. With
    `terms.free_bits` > 0 the loss takes max(KL_t, free_bits) for each step (no cost, and no
    pull towards the prior, below that many nats per frame); `kl` stays the true KL. With
    `terms.edge_weight` > 0 the loss adds edge_weight x `gradient_difference` per step, with
    `terms.mask_penalty` > 0 mask_penalty x the mean mask per step.
    """
    free_bits, edge_weight = terms.free_bits, terms.edge_weight
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
    if terms.mask_penalty > 0:
        if mask is None:
            raise ValueError("clip_loss: terms.mask_penalty needs the model's blend mask")
        loss = loss + terms.mask_penalty * mask.float().mean() * steps
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
