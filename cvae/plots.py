"""Figures, written atomically (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from cvae.storage import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def training_curve(rows: Sequence[dict], path: str | Path) -> Path:
    """Training loss per epoch, with beta and the teacher-forcing ratio on a second axis."""
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [float(r["loss"]) for r in rows], "o-", color="tab:blue", label="loss")
    ax.plot(epochs, [float(r["mse"]) for r in rows], ".--", color="tab:cyan", label="MSE part")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (per clip)")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(epochs, [float(r["beta"]) for r in rows], "s-", color="tab:red", label="beta")
    ax2.plot(epochs, [float(r["tfr"]) for r in rows], "^-", color="tab:green", label="tfr")
    ax2.set_ylabel("beta, teacher-forcing ratio")
    ax2.set_ylim(-0.05, 1.05)
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right", fontsize=8)
    ax.set_title("Training")
    return _save(fig, path)


def psnr_per_frame(psnr: Sequence[float], path: str | Path, *, baseline: Sequence[float] = (),
                   title: str = "PSNR per frame", ssim: Sequence[float] = (),
                   baseline_ssim: Sequence[float] = ()) -> Path:
    """PSNR of each predicted frame (1..T-1), with the copy-last baseline's (frame 0 repeated);
    given SSIM per frame too, a second panel below shows it the same way."""
    panels = 2 if len(ssim) else 1
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.5 * panels), sharex=True, squeeze=False)
    _per_frame_panel(axes[0, 0], psnr, baseline, unit="dB", fmt=".2f")
    axes[0, 0].set_ylabel("PSNR (dB)")
    axes[0, 0].set_title(title)
    if panels == 2:
        _per_frame_panel(axes[1, 0], ssim, baseline_ssim, unit="", fmt=".3f")
        axes[1, 0].set_ylabel("SSIM")
    axes[-1, 0].set_xlabel("frame")
    return _save(fig, path)


def _per_frame_panel(ax, model: Sequence[float], baseline: Sequence[float], *, unit: str,
                     fmt: str) -> None:
    """One score per frame 1..T-1: the model's line and, if given, the baseline's."""
    frames = range(1, len(model) + 1)
    suffix = f" {unit}" if unit else ""
    mean = sum(model) / max(len(model), 1)
    ax.plot(frames, model, lw=1, label=f"model (mean {mean:{fmt}}{suffix})")
    if len(baseline):
        mean = sum(baseline) / len(baseline)
        ax.plot(frames, baseline, lw=1, alpha=0.7,
                label=f"copy-last baseline: frame 0 repeated (mean {mean:{fmt}}{suffix})")
    ax.legend(fontsize=8)


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
          xlabel: str, ylabel: str, title: str, logy: bool = False) -> Path:
    """One line per named (x, y) series: the report's comparison plots."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, ".-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)
