"""Figures, written atomically (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

import math
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
                   baseline_ssim: Sequence[float] = (), box_ssim: Sequence[float] = (),
                   baseline_box_ssim: Sequence[float] = (), sharpness: Sequence[float] = (),
                   baseline_sharpness: Sequence[float] = ()) -> Path:
    """PSNR of each predicted frame (1..T-1), with the copy-last baseline's (frame 0 repeated);
    below it one panel, the same way, for each other score given per frame: SSIM, SSIM inside
    the dancer's box, the sharpness ratio inside it (with a line at 1, as sharp as the truth).
    nan values (frames not scored) leave gaps and are left out of the means."""
    panels = [(psnr, baseline, "PSNR (dB)", "dB", ".2f", None)] + [
        (model, base, label, "", fmt, level)
        for model, base, label, fmt, level in (
            (ssim, baseline_ssim, "SSIM", ".3f", None),
            (box_ssim, baseline_box_ssim, "SSIM in the dancer's box", ".3f", None),
            (sharpness, baseline_sharpness, "sharpness in the box\n(model / truth)", ".2f", 1.0))
        if len(model)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.5 * len(panels)), sharex=True,
                             squeeze=False)
    for ax, (model, base, label, unit, fmt, level) in zip(axes[:, 0], panels, strict=True):
        _per_frame_panel(ax, model, base, unit=unit, fmt=fmt)
        ax.set_ylabel(label)
        if level is not None:
            ax.axhline(level, color="grey", lw=0.8, ls="--")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("frame")
    return _save(fig, path)


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def _per_frame_panel(ax, model: Sequence[float], baseline: Sequence[float], *, unit: str,
                     fmt: str) -> None:
    """One score per frame 1..T-1: the model's line and, if given, the baseline's."""
    frames = range(1, len(model) + 1)
    suffix = f" {unit}" if unit else ""
    ax.plot(frames, model, lw=1, label=f"model (mean {_nanmean(model):{fmt}}{suffix})")
    if len(baseline):
        ax.plot(frames, baseline, lw=1, alpha=0.7,
                label=f"copy-last baseline: frame 0 repeated (mean "
                      f"{_nanmean(baseline):{fmt}}{suffix})")
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
