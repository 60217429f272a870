"""Held-out score of the test rollouts: PSNR and SSIM per frame against the true frames, and
SSIM and the sharpness ratio inside the dancer's box (cvae.evaluate.box_scores, the box from
each frame's pose), beside the copy-frame-0 baseline of the same sequence (its given frame 0
repeated).

Only a data set that keeps the true frames of its test sequences can be scored: the synthetic
one writes them to ``test/test_truth/<k>/frameN.png``. Nothing selects on this score; it says
how the chosen model does on sequences it never saw. Files written by ``write_scores``:

- test_scores.csv          one row per sequence and frame 1..T-1 (SCORE_COLUMNS)
- test_scores_summary.csv  the means per sequence, then over all sequences (sequence ``all``),
                           then over the last LATE_FRAMES frames of all sequences (``late``)
- test_psnr_per_frame.png  every score per frame, averaged over the sequences

The ``late`` window is where the project's goal is stated: over frames 500-629 of the held-out
sequences, dancer-box SSIM above the baseline's and a sharpness ratio of at least 0.8
(`goal_met`). Means skip the nan of frames whose pose has no skeleton pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cvae import plots, storage
from cvae.errors import DataError
from cvae.evaluate import BOX_SCORES, box_scores, nanmean, ssim
from cvae.lab_folder import check_one_size, contiguous_frames, load_image
from cvae.losses import psnr
from cvae.synth import TRUTH_DIR

SCORES = ("psnr", "baseline_psnr", "ssim", "baseline_ssim", *BOX_SCORES)
SCORE_COLUMNS = ("sequence", "frame", *SCORES)
SUMMARY_COLUMNS = ("sequence", "first_frame", "last_frame", "frames", *SCORES)
LATE_FRAMES = 130  # the goal's window: frames 500-629 of 630-frame sequences
GOAL_SHARPNESS = 0.8  # the late sharpness ratio the goal asks for


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
    box_ssim: list[float]  # inside the dancer's box (nan where the pose is empty)
    baseline_box_ssim: list[float]
    sharpness: list[float]  # gradient energy over the truth's, inside the dancer's box
    baseline_sharpness: list[float]

    def means(self, frames: range | None = None) -> dict[str, float]:
        """Each score's mean over `frames` (numbers 1..T-1; all of them by default)."""
        return {name: nanmean(self.values(name, frames)) for name in SCORES}

    def values(self, name: str, frames: range | None = None) -> list[float]:
        """One score of `frames` (numbers 1..T-1; all of them by default)."""
        values = getattr(self, name)
        return values if frames is None else values[frames.start - 1:frames.stop - 1]


def score_sequence(index: int, pred: np.ndarray, first: torch.Tensor, truth: torch.Tensor,
                   poses: torch.Tensor) -> SequenceScore:
    """pred: uint8 [T,3,H,W] (the submitted frames); first: uint8 [3,H,W] the given frame;
    truth: uint8 [T,3,H,W]; poses: uint8 [T,3,H,W], the poses the rollout was given."""
    target = truth[1:].float() / 255  # [T-1,3,H,W] in [0,1]
    model = torch.from_numpy(np.ascontiguousarray(pred[1:])).float() / 255
    given = first.float() / 255  # [3,H,W]
    baseline = given[None].expand_as(target).contiguous()
    return SequenceScore(
        index=index,
        psnr=psnr(model, target).tolist(),
        baseline_psnr=psnr(baseline, target).tolist(),
        ssim=ssim(model, target).tolist(),
        baseline_ssim=ssim(baseline, target).tolist(),
        **box_scores(model, target, given, poses[1:].float() / 255),
    )


def late_frames(scores: list[SequenceScore]) -> range:
    """The last LATE_FRAMES predicted frames (all of them if fewer): 500..629 of 630."""
    last = len(scores[0].psnr)
    return range(max(1, last - LATE_FRAMES + 1), last + 1)


def overall(scores: list[SequenceScore], frames: range | None = None,
            prefix: str = "test_") -> dict[str, float]:
    """Means over `frames` (all by default) of every sequence: test_psnr, test_baseline_psnr,
    ..., nan skipped."""
    return {f"{prefix}{name}": nanmean([v for s in scores for v in s.values(name, frames)])
            for name in SCORES}


def late(scores: list[SequenceScore]) -> dict:
    """The means over the late window (`late_frames`): test_late_psnr, ..., test_late_sharpness,
    its first and last frame, and whether the goal is met there (`goal_met`)."""
    frames = late_frames(scores)
    means = overall(scores, frames, prefix="test_late_")
    return {**means, "late_first_frame": frames.start, "late_last_frame": frames.stop - 1,
            "late_goal_met": goal_met(means)}


def goal_met(late_means: dict[str, float]) -> bool:
    """The goal over the late window: dancer-box SSIM above the baseline's and a sharpness
    ratio of at least GOAL_SHARPNESS (nan meets nothing)."""
    box, baseline = late_means["test_late_box_ssim"], late_means["test_late_baseline_box_ssim"]
    return bool(box > baseline and late_means["test_late_sharpness"] >= GOAL_SHARPNESS)


def scores_csv(scores: list[SequenceScore]) -> str:
    """The text of test_scores.csv: one row per sequence and frame."""
    lines = [",".join(SCORE_COLUMNS)]
    for s in scores:
        for t, values in enumerate(zip(*(getattr(s, n) for n in SCORES), strict=True), start=1):
            lines.append(f"{s.index},{t}," + ",".join(f"{v:.4f}" for v in values))
    return "\n".join(lines) + "\n"


def summary_csv(scores: list[SequenceScore]) -> str:
    """The text of test_scores_summary.csv: means per sequence over frames 1..T-1, then over
    ``all`` sequences, then over the ``late`` frames (`late_frames`) of all sequences."""
    every, window = range(1, len(scores[0].psnr) + 1), late_frames(scores)
    rows = [(str(s.index), every, [s]) for s in scores]
    rows += [("all", every, scores), ("late", window, scores)]
    lines = [",".join(SUMMARY_COLUMNS)]
    for label, frames, group in rows:
        means = overall(group, frames, prefix="")
        lines.append(f"{label},{frames.start},{frames.stop - 1},{len(frames) * len(group)},"
                     + ",".join(f"{means[name]:.4f}" for name in SCORES))
    return "\n".join(lines) + "\n"


def mean_per_frame(scores: list[SequenceScore], name: str) -> list[float]:
    """One score per frame 1..T-1, the mean over the sequences (nan skipped): [T-1]."""
    return [nanmean(list(frame))
            for frame in zip(*(getattr(s, name) for s in scores), strict=True)]


def write_scores(scores: list[SequenceScore], out: Path) -> dict:
    """Write test_scores.csv, test_scores_summary.csv and test_psnr_per_frame.png under out;
    returns the overall means and the paths."""
    storage.write_text(out / "test_scores.csv", scores_csv(scores))
    storage.write_text(out / "test_scores_summary.csv", summary_csv(scores))
    total, window = overall(scores), late(scores)
    per_frame = {name: mean_per_frame(scores, name) for name in SCORES}
    plots.psnr_per_frame(
        per_frame.pop("psnr"), out / "test_psnr_per_frame.png",
        baseline=per_frame.pop("baseline_psnr"), **per_frame,
        title=f"Held-out test sequences ({len(scores)}, mean per frame): PSNR "
              f"{total['test_psnr']:.2f} dB vs {total['test_baseline_psnr']:.2f} dB copying "
              f"frame 0\nframes {window['late_first_frame']}-{window['late_last_frame']}: "
              f"dancer-box SSIM {window['test_late_box_ssim']:.3f} vs "
              f"{window['test_late_baseline_box_ssim']:.3f}, sharpness "
              f"{window['test_late_sharpness']:.2f} vs "
              f"{window['test_late_baseline_sharpness']:.2f}")
    return {**total, **window, "scores_csv": str(out / "test_scores.csv"),
            "scores_summary_csv": str(out / "test_scores_summary.csv"),
            "scores_png": str(out / "test_psnr_per_frame.png")}


def summary_lines(result: dict) -> list[str]:
    """The held-out score as cvae-test prints it; result: what `write_scores` returns."""
    r = result
    verdict = "met" if r["late_goal_met"] else "not met"
    return [
        f"held-out test sequences: PSNR {r['test_psnr']:.2f} dB (copy-frame-0 baseline "
        f"{r['test_baseline_psnr']:.2f}), SSIM {r['test_ssim']:.3f} (baseline "
        f"{r['test_baseline_ssim']:.3f}); per frame {r['scores_csv']}, figure {r['scores_png']}",
        f"  in the dancer's box: SSIM {r['test_box_ssim']:.3f} (baseline "
        f"{r['test_baseline_box_ssim']:.3f}), sharpness {r['test_sharpness']:.2f} (baseline "
        f"{r['test_baseline_sharpness']:.2f}; 1 = as sharp as the truth)",
        f"  frames {r['late_first_frame']}-{r['late_last_frame']}: box SSIM "
        f"{r['test_late_box_ssim']:.3f} (baseline {r['test_late_baseline_box_ssim']:.3f}), "
        f"sharpness {r['test_late_sharpness']:.2f} (baseline "
        f"{r['test_late_baseline_sharpness']:.2f}); goal (box SSIM above the baseline's, "
        f"sharpness >= {GOAL_SHARPNESS}) {verdict}; means in {r['scores_summary_csv']}",
    ]
