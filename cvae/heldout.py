"""Held-out score of the test rollouts: PSNR and SSIM per frame against the true frames, beside
the copy-frame-0 baseline of the same sequence (its given frame 0 repeated).

Only a data set that keeps the true frames of its test sequences can be scored: the synthetic
one writes them to ``test/test_truth/<k>/frameN.png``. Nothing selects on this score; it says
how the chosen model does on sequences it never saw. Files written by ``write_scores``:

- test_scores.csv          one row per sequence and frame 1..T-1 (SCORE_COLUMNS)
- test_scores_summary.csv  the means per sequence, then over all sequences (sequence ``all``)
- test_psnr_per_frame.png  PSNR and SSIM per frame, averaged over the sequences
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cvae import plots, storage
from cvae.errors import DataError
from cvae.evaluate import ssim
from cvae.lab_folder import check_one_size, contiguous_frames, load_image
from cvae.losses import psnr
from cvae.synth import TRUTH_DIR

SCORES = ("psnr", "baseline_psnr", "ssim", "baseline_ssim")
SCORE_COLUMNS = ("sequence", "frame", *SCORES)
SUMMARY_COLUMNS = ("sequence", "frames", *SCORES)


def truth_folder(root: str | Path) -> Path:
    """Where a data set keeps the true frames of its test sequences."""
    return Path(root) / "test" / TRUTH_DIR


def load_truth(root: str | Path, indices: list[int], height: int, width: int,
               length: int) -> list[torch.Tensor] | None:
    """The true frames 0..length-1 of each test sequence k in ``indices``: uint8 [T,3,H,W] each,
    resized like the Tester's input. None when the data set keeps no true frames."""
    folder = truth_folder(root)
    if not folder.is_dir():
        return None
    files = {}
    for k in indices:
        # DataError naming a missing folder or a missing frame (a gap)
        files[k] = contiguous_frames(folder / str(k), first=0)[:length]
        if len(files[k]) < length:
            raise DataError(f"{folder / str(k)}: {len(files[k])} true frames, the rollout has "
                            f"{length}")
    check_one_size([p for k in indices for p in files[k]])
    return [torch.stack([load_image(p, height, width) for p in files[k]]) for k in indices]


@dataclass
class SequenceScore:
    """Scores of one test rollout, frames 1..T-1 (frame 0 is given, not scored)."""

    index: int
    psnr: list[float]
    baseline_psnr: list[float]  # the given frame 0 repeated
    ssim: list[float]
    baseline_ssim: list[float]

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(getattr(self, name))) for name in SCORES}


def score_sequence(index: int, pred: np.ndarray, first: torch.Tensor,
                   truth: torch.Tensor) -> SequenceScore:
    """pred: uint8 [T,3,H,W] (the submitted frames); first: uint8 [3,H,W] the given frame;
    truth: uint8 [T,3,H,W]."""
    target = truth[1:].float() / 255  # [T-1,3,H,W] in [0,1]
    model = torch.from_numpy(np.ascontiguousarray(pred[1:])).float() / 255
    baseline = (first.float() / 255)[None].expand_as(target).contiguous()
    return SequenceScore(
        index=index,
        psnr=psnr(model, target).tolist(),
        baseline_psnr=psnr(baseline, target).tolist(),
        ssim=ssim(model, target).tolist(),
        baseline_ssim=ssim(baseline, target).tolist(),
    )


def overall(scores: list[SequenceScore]) -> dict[str, float]:
    """Means over every scored frame of every sequence: test_psnr, test_baseline_psnr, ..."""
    return {f"test_{name}": float(np.mean([v for s in scores for v in getattr(s, name)]))
            for name in SCORES}


def scores_csv(scores: list[SequenceScore]) -> str:
    """The text of test_scores.csv: one row per sequence and frame."""
    lines = [",".join(SCORE_COLUMNS)]
    for s in scores:
        for t, values in enumerate(zip(*(getattr(s, n) for n in SCORES), strict=True), start=1):
            lines.append(f"{s.index},{t}," + ",".join(f"{v:.4f}" for v in values))
    return "\n".join(lines) + "\n"


def summary_csv(scores: list[SequenceScore]) -> str:
    """The text of test_scores_summary.csv: means per sequence, then ``all`` sequences."""
    rows = [(str(s.index), len(s.psnr), s.means()) for s in scores]
    total = overall(scores)
    rows.append(("all", sum(len(s.psnr) for s in scores),
                 {name: total[f"test_{name}"] for name in SCORES}))
    lines = [",".join(SUMMARY_COLUMNS)] + [
        f"{k},{n}," + ",".join(f"{m[name]:.4f}" for name in SCORES) for k, n, m in rows
    ]
    return "\n".join(lines) + "\n"


def write_scores(scores: list[SequenceScore], out: Path) -> dict:
    """Write test_scores.csv, test_scores_summary.csv and test_psnr_per_frame.png under out;
    returns the overall means and the paths."""
    storage.write_text(out / "test_scores.csv", scores_csv(scores))
    storage.write_text(out / "test_scores_summary.csv", summary_csv(scores))
    total = overall(scores)
    per_frame = {name: np.mean([getattr(s, name) for s in scores], axis=0).tolist()
                 for name in SCORES}  # each [T-1]: the mean over the sequences
    plots.psnr_per_frame(
        per_frame["psnr"], out / "test_psnr_per_frame.png", baseline=per_frame["baseline_psnr"],
        ssim=per_frame["ssim"], baseline_ssim=per_frame["baseline_ssim"],
        title=f"Held-out test sequences ({len(scores)}, mean per frame): PSNR "
              f"{total['test_psnr']:.2f} dB vs {total['test_baseline_psnr']:.2f} dB copying "
              f"frame 0")
    return {**total, "scores_csv": str(out / "test_scores.csv"),
            "scores_summary_csv": str(out / "test_scores_summary.csv"),
            "scores_png": str(out / "test_psnr_per_frame.png")}
