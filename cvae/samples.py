"""Sample quality on the held-out sequences, as SVG reports it: N rollouts per sequence, each
with its own draws of z from the prior, scored against the true frames; the mean over the N
samples and the best of the N (the sample with the highest PSNR averaged over frames 1..T-1,
chosen per sequence; its SSIM is that sample's, not the best SSIM of another).

Where the latent carries nothing the N samples are the same rollout and best equals mean: the
gap between them is how much the model's randomness spans. Sample 0 is the submitted rollout
(drawn first, with test.seed), so the submission does not depend on N. Written by
``write_samples``:

- test_samples.csv   one row per sequence and sample: its mean PSNR and SSIM over frames 1..T-1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvae import storage
from cvae.evaluate import ssim
from cvae.losses import psnr

COLUMNS = ("sequence", "sample", "psnr", "ssim")


def draw_more(model, first: torch.Tensor, poses: torch.Tensor, extra: int,
              rng: torch.Generator, progress=None) -> torch.Tensor:
    """`extra` more rollouts of every sequence as one batch: first [K,3,H,W], poses
    [K,T,3,H,W] in [0,1] -> uint8 [extra,K,T,3,H,W] (frame 0 = the given frame)."""
    K = first.shape[0]
    frames = model.generate(first.repeat(extra, 1, 1, 1), poses.repeat(extra, 1, 1, 1, 1),
                            rng=rng, progress=progress)  # [extra*K,T,3,H,W], sample-major
    frames = frames.clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    frames[:, 0] = first.repeat(extra, 1, 1, 1).mul(255).round().to(torch.uint8).cpu()
    return frames.reshape(extra, K, *frames.shape[1:])


def score_samples(samples: list[np.ndarray], truth: torch.Tensor) -> list[tuple[float, float]]:
    """(mean PSNR, mean SSIM) over frames 1..T-1 of each sample: uint8 [T,3,H,W] each, against
    truth uint8 [T,3,H,W]."""
    target = truth[1:].float() / 255
    scores = []
    for frames in samples:
        pred = torch.from_numpy(np.ascontiguousarray(frames[1:])).float() / 255
        scores.append((psnr(pred, target).mean().item(), ssim(pred, target).mean().item()))
    return scores


def summarise(rows: dict[int, list[tuple[float, float]]]) -> dict:
    """rows: sequence -> (PSNR, SSIM) per sample. The means over sequences of the samples'
    mean and of the best sample (by PSNR) per sequence."""
    best = [max(scores, key=lambda s: s[0]) for scores in rows.values()]
    mean = [np.mean(scores, axis=0) for scores in rows.values()]
    return {
        "test_samples": len(next(iter(rows.values()))),
        "test_samples_mean_psnr": float(np.mean([m[0] for m in mean])),
        "test_samples_mean_ssim": float(np.mean([m[1] for m in mean])),
        "test_samples_best_psnr": float(np.mean([b[0] for b in best])),
        "test_samples_best_ssim": float(np.mean([b[1] for b in best])),
        "test_samples_spread_psnr": float(np.mean([np.ptp([s[0] for s in scores])
                                                   for scores in rows.values()])),
    }


def write_samples(rows: dict[int, list[tuple[float, float]]], out: Path) -> dict:
    """test_samples.csv under out (atomically); returns `summarise`'s figures and its path."""
    lines = [",".join(COLUMNS)] + [
        f"{k},{i},{p:.4f},{s:.4f}" for k, scores in rows.items()
        for i, (p, s) in enumerate(scores)
    ]
    storage.write_text(out / "test_samples.csv", "\n".join(lines) + "\n")
    return {**summarise(rows), "samples_csv": str(out / "test_samples.csv")}


def sample_lines(result: dict) -> list[str]:
    """What cvae-test prints of them; result: what `write_samples` returns."""
    r = result
    return [f"  {r['test_samples']} samples per sequence (z from the prior): mean PSNR "
            f"{r['test_samples_mean_psnr']:.2f} dB, SSIM {r['test_samples_mean_ssim']:.3f}; "
            f"best of {r['test_samples']} PSNR {r['test_samples_best_psnr']:.2f} dB, SSIM "
            f"{r['test_samples_best_ssim']:.3f}; samples of a sequence span "
            f"{r['test_samples_spread_psnr']:.2f} dB on average; {r['samples_csv']}"]
