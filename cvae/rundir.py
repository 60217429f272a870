"""A training run's folder: config.yaml, metrics.csv, figures, TensorBoard logs, checkpoints/.

    <out>/config.yaml           the resolved config the run trained with
    <out>/metrics.csv           one row per epoch (METRIC_COLUMNS)
    <out>/training.png          loss, beta, teacher forcing and PSNR per epoch
    <out>/psnr_per_frame.csv    the best epoch's validation rollout, frame by frame (+ .png;
                                PER_FRAME_COLUMNS of cvae.evaluate)
    <out>/tb/                   TensorBoard events
    <out>/checkpoints/          last.pt, best.pt, epoch_<n>.pt (cvae.checkpoint)

Only rank 0 writes it. `read_metrics` is the one reader of metrics.csv (the report uses it too).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch

from cvae import plots, storage
from cvae.config import Config, to_yaml
from cvae.evaluate import Validation

METRIC_COLUMNS = (
    "epoch", "loss", "mse", "kl", "beta", "tfr", "lr", "workers", "val_psnr", "val_psnr_short",
    "val_psnr_avg3", "baseline_psnr", "baseline_psnr_short", "val_ssim", "val_ssim_short",
    "baseline_ssim", "baseline_ssim_short", "val_box_ssim", "baseline_box_ssim", "val_sharpness",
    "baseline_sharpness", "seconds", "val_seconds",
)
METRICS_FILE = "metrics.csv"
CHECKPOINTS = "checkpoints"


def read_metrics(run: str | Path) -> list[dict[str, Any]]:
    """metrics.csv as one dict per epoch: floats (None where a cell is empty), epoch an int.
    Every METRIC_COLUMNS key is there: a file written before a column existed reads None in it.
    A run without metrics.csv has no rows."""
    file = Path(run) / METRICS_FILE
    if not file.is_file():
        return []
    with open(file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        values = dict.fromkeys(METRIC_COLUMNS) | {k: _float(v) for k, v in row.items() if k}
        if values.get("epoch") is None:
            continue
        values["epoch"] = int(values["epoch"])
        out.append(values)
    return out


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class RunDir:
    """Rank 0's writer of the run folder. A resumed run keeps the rows up to its checkpoint's
    epoch and forgets later ones, so no epoch appears twice."""

    def __init__(self, out: str | Path, cfg: Config, *, resume_epoch: int = 0):
        self.path = Path(out)
        self.ckpt_dir = self.path / CHECKPOINTS
        self.path.mkdir(parents=True, exist_ok=True)
        storage.write_text(self.path / "config.yaml", to_yaml(cfg))
        self.rows = [r for r in read_metrics(self.path) if r["epoch"] <= resume_epoch]
        self._write_metrics()
        self._tb = None

    def _write_metrics(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRIC_COLUMNS, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _fmt(row.get(k)) for k in METRIC_COLUMNS} for row in self.rows)
        storage.write_text(self.path / METRICS_FILE, text.getvalue())

    @property
    def tb(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def log_epoch(self, metrics: dict[str, Any], validation: Validation | None) -> None:
        """Append the epoch's row to metrics.csv, redraw training.png, log to TensorBoard."""
        self.rows.append({k: metrics.get(k) for k in METRIC_COLUMNS})
        self._write_metrics()
        plots.training_curve(self.rows, self.path / "training.png")
        epoch = int(metrics["epoch"])
        for key in METRIC_COLUMNS[1:]:
            value = metrics.get(key)
            if value is not None:
                group = "val" if key.startswith(("val_", "baseline_")) else "train"
                self.tb.add_scalar(f"{group}/{key}", value, epoch)
        if validation is not None:
            self.tb.add_image("val/predicted_over_true", _pred_vs_true(validation), epoch)
        self.tb.flush()

    def write_best_validation(self, validation: Validation, epoch: int) -> None:
        write_psnr_csv(self.path / "psnr_per_frame.csv", validation)
        m = validation.metrics()
        plots.psnr_per_frame(
            validation.psnr, self.path / "psnr_per_frame.png", baseline=validation.baseline,
            title=f"PSNR per frame, {validation.source()} (best epoch {epoch}: "
                  f"{m['val_psnr']:.2f} dB)",
            **validation.figure_scores(),
        )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_psnr_csv(path: str | Path, validation: Validation) -> None:
    """psnr_per_frame.csv: the rollout's and the copy-last baseline's PSNR, SSIM, SSIM in the
    dancer's box and sharpness ratio in it, of every frame."""
    storage.write_text(path, validation.per_frame_csv())


def _pred_vs_true(validation: Validation, frames: int = 8) -> torch.Tensor:
    """[3,H',W'] grid: predicted frames 1..n (top row) over the true ones (bottom row)."""
    from torchvision.utils import make_grid

    n = min(frames, validation.pred.shape[0] - 1)
    tiles = torch.cat([validation.pred[1 : n + 1], validation.target[1 : n + 1]])
    return make_grid(tiles, nrow=n, padding=1)


def epoch_line(m: dict[str, Any], epochs: int) -> str:
    """The one line an epoch prints."""
    line = (f"epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f} (mse {m['mse']:.4f}, "
            f"kl {m['kl']:.2f})  beta {m['beta']:.3g}  tfr {m['tfr']:.2f}  {m['seconds']:.0f}s")
    if "workers" in m:
        line += f"  {m['workers']} worker" + ("s" if m["workers"] != 1 else "")
    if "val_psnr" in m:
        line += (f"  val_psnr {m['val_psnr']:.2f} (baseline {m['baseline_psnr']:.2f})"
                 f"  short {m['val_psnr_short']:.2f} (baseline {m['baseline_psnr_short']:.2f})"
                 f"  one-step {m['val_psnr_one_step']:.2f} (baseline "
                 f"{m['baseline_psnr_one_step']:.2f})")
    if "val_ssim" in m:
        line += f"  ssim {m['val_ssim']:.3f} (baseline {m['baseline_ssim']:.3f})"
    return line
