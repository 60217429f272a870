"""Autoregressive validation: roll out the validation video, PSNR and SSIM per frame, and the
baselines.

Two pairs of figures, each comparing the model with copying the last frame it was given:
- the rollout (val_psnr, val_psnr_short): the model generates frames 1..T-1 from frame 0 and the
  poses alone; the copy-last baseline, given the same, repeats frame 0 (baseline_psnr, _short).
- one step (val_psnr_one_step): the model predicts each of frames 1..short_len from the true
  previous frame; the copy-last baseline copies that true previous frame
  (baseline_psnr_one_step).
SSIM (val_ssim, val_ssim_short; baseline_ssim, baseline_ssim_short) scores the same rollouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cvae.losses import psnr
from cvae.model import CVAE


@dataclass
class Validation:
    psnr: list[float]  # PSNR of the model's rollout, frames 1..T-1
    baseline: list[float]  # PSNR of frame 0 (the last frame given) repeated, frames 1..T-1
    short_len: int  # frames in the short-horizon mean (validation.short_horizon)
    pred: torch.Tensor  # [T,3,H,W] float in [0,1] on the CPU (frame 0 = the given frame)
    target: torch.Tensor  # [T,3,H,W] the true video
    one_step: list[float] | None = None  # PSNR of frames 1..short_len, each from the true last
    one_step_baseline: list[float] | None = None  # copying the true last frame, same frames
    ssim: list[float] | None = None  # SSIM of the model's rollout, frames 1..T-1
    baseline_ssim: list[float] | None = None  # SSIM of frame 0 repeated, frames 1..T-1

    @staticmethod
    def _mean(values: list[float]) -> float:
        return sum(values) / len(values)

    def metrics(self) -> dict[str, float]:
        return {
            **self._means("psnr", self.psnr, self.baseline),
            **({"val_psnr_one_step": self._mean(self.one_step)} if self.one_step else {}),
            **({"baseline_psnr_one_step": self._mean(self.one_step_baseline)}
               if self.one_step_baseline else {}),
            **(self._means("ssim", self.ssim, self.baseline_ssim)
               if self.ssim and self.baseline_ssim else {}),
        }

    def _means(self, score: str, model: list[float], baseline: list[float]) -> dict[str, float]:
        """val_<score>, val_<score>_short, baseline_<score>, baseline_<score>_short."""
        n = self.short_len
        return {f"val_{score}": self._mean(model), f"val_{score}_short": self._mean(model[:n]),
                f"baseline_{score}": self._mean(baseline),
                f"baseline_{score}_short": self._mean(baseline[:n])}

    def per_frame_csv(self) -> str:
        """The text of psnr_per_frame.csv: one row per frame 1..T-1 (PER_FRAME_COLUMNS)."""
        n = len(self.psnr)
        ssim = self.ssim or [math.nan] * n
        baseline_ssim = self.baseline_ssim or [math.nan] * n
        rows = zip(self.psnr, self.baseline, ssim, baseline_ssim, strict=True)
        lines = [",".join(PER_FRAME_COLUMNS)] + [
            f"{t},{p:.4f},{b:.4f},{s:.4f},{bs:.4f}" for t, (p, b, s, bs) in enumerate(rows, 1)
        ]
        return "\n".join(lines) + "\n"


PER_FRAME_COLUMNS = ("frame", "psnr", "baseline_psnr", "ssim", "baseline_ssim")


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-frame SSIM (torchmetrics, gaussian window, data range 1) of pred, target [T,3,H,W] in
    [0,1] -> [T]. The window is 11 pixels (sigma 1.5), narrowed to the largest odd size that fits
    frames smaller than that."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    size = min(11, *pred.shape[-2:])
    size -= 1 - size % 2  # odd
    sigma = 1.5 * size / 11
    return structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, kernel_size=size, sigma=sigma,
        reduction="none")


def copy_last_ssim(frames: torch.Tensor) -> list[float]:
    """SSIM of frames 1..T-1 for the copy-last baseline (frame 0 repeated). frames [T,3,H,W]."""
    return ssim(frames[:1].expand_as(frames[1:]), frames[1:]).tolist()


def copy_last_baseline(frames: torch.Tensor) -> list[float]:
    """PSNR of frames 1..T-1 for the copy-last baseline's rollout: given frame 0 (and poses it
    does not use), it repeats frame 0. What a rollout must beat. frames [T,3,H,W]."""
    return psnr(frames[:1].expand_as(frames[1:]), frames[1:]).tolist()


def copy_previous_baseline(frames: torch.Tensor) -> list[float]:
    """PSNR of predicting each frame t as the true frame t-1: what one step must beat."""
    return psnr(frames[:-1], frames[1:]).tolist()


@torch.no_grad()
def validate(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, *, short_len: int,
             device: torch.device, seed: int = 0, progress=None) -> Validation:
    """frames, poses: float [T,3,H,W] in [0,1]. The model is put in eval mode and restored."""
    short_len = max(1, min(short_len, frames.shape[0] - 1))
    was_training = model.training
    model.eval()
    try:
        rng = torch.Generator(device="cpu").manual_seed(seed)
        pred = model.generate(frames[:1].to(device), poses[None].to(device), rng=rng,
                              progress=progress)[0].float().cpu()
        # One step from the true previous frame over the short horizon: what the model learned
        # per step, apart from how its rollout drifts.
        n = short_len + 1
        noise = torch.randn(1, n - 1, model.latent_channels, *frames.shape[-2:], generator=rng)
        one_step, _, _ = model(frames[None, :n].to(device), poses[None, :n].to(device), True,
                               noise=noise.to(device))
        one_step = psnr(one_step[0].float().cpu(), frames[1:n].float()).tolist()
    finally:
        model.train(was_training)
    return Validation(
        psnr=psnr(pred[1:], frames[1:].float()).tolist(),
        baseline=copy_last_baseline(frames.float()),
        short_len=short_len,
        pred=pred,
        target=frames.float(),
        one_step=one_step,
        one_step_baseline=copy_previous_baseline(frames[:short_len + 1].float()),
        ssim=ssim(pred[1:], frames[1:]).tolist(),
        baseline_ssim=copy_last_ssim(frames.float()),
    )


REGION_COLUMNS = ("first_frame", "last_frame", "mse", "baseline_mse", "background_mse",
                  "baseline_background_mse", "dancer_mse", "baseline_dancer_mse")


def region_errors(pred: torch.Tensor, target: torch.Tensor, *, window: int = 70,
                  threshold: float = 0.1) -> list[dict[str, float]]:
    """Where a rollout loses: mean squared error per window of frames, split into background and
    dancer, for the rollout and for the copy-last baseline (frame 0 repeated).

    pred, target: [T,3,H,W] in [0,1] (frame 0 given). The background is the per-pixel median of
    the true video over time (a static camera); a pixel is the dancer's in frame t where any
    channel of the true frame differs from it by more than `threshold`. Windows cover frames
    1..T-1; a window with no pixel of a region reports nan for it.
    """
    truth = target.float()
    background = truth.median(0).values  # [3,H,W]
    dancer = ((truth - background).abs().amax(1, keepdim=True) > threshold).float()  # [T,1,H,W]
    model_err = (pred.float() - truth) ** 2
    baseline_err = (truth[:1] - truth) ** 2
    rows = []
    for first in range(1, truth.shape[0], window):
        last = min(first + window, truth.shape[0])  # exclusive
        span, mask = slice(first, last), dancer[first:last]
        rows.append({
            "first_frame": first, "last_frame": last - 1,
            "mse": float(model_err[span].mean()),
            "baseline_mse": float(baseline_err[span].mean()),
            "background_mse": _masked_mean(model_err[span], 1 - mask),
            "baseline_background_mse": _masked_mean(baseline_err[span], 1 - mask),
            "dancer_mse": _masked_mean(model_err[span], mask),
            "baseline_dancer_mse": _masked_mean(baseline_err[span], mask),
        })
    return rows


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of err [T,3,H,W] over the pixels where mask [T,1,H,W] is 1 (nan where none is)."""
    pixels = float(mask.sum()) * err.shape[1]
    return float((err * mask).sum()) / pixels if pixels else math.nan
