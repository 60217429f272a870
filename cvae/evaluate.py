"""Autoregressive validation: roll out the validation videos, PSNR and SSIM per frame (the
mean over the videos), and the baselines.

Two pairs of figures, each comparing the model with copying the last frame it was given:
- the rollout (val_psnr, val_psnr_short): the model generates frames 1..T-1 from frame 0 and the
  poses alone; the copy-last baseline, given the same, repeats frame 0 (baseline_psnr, _short).
- one step (val_psnr_one_step): the model predicts each of frames 1..short_len from the true
  previous frame; the copy-last baseline copies that true previous frame
  (baseline_psnr_one_step).
SSIM (val_ssim, val_ssim_short; baseline_ssim, baseline_ssim_short) scores the same rollouts.

Whole-frame PSNR rewards blur (a grey average of where the dancer might be costs less squared
error than a sharp dancer in the wrong place), so the rollout is also scored inside the dancer's
box, found from its pose image (`dancer_box`): SSIM there (val_box_ssim, baseline_box_ssim) and
how sharp the prediction is there against the truth (val_sharpness, baseline_sharpness; 1 = as
sharp as the truth, a smear far below 1). See `box_scores`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from cvae.losses import psnr
from cvae.model import CVAE
from cvae.regions import POSE_ON


@dataclass
class Validation:
    psnr: list[float]  # PSNR of the model's rollout, frames 1..T-1
    baseline: list[float]  # PSNR of frame 0 (the last frame given) repeated, frames 1..T-1
    short_len: int  # frames in the short-horizon mean (validation.short_horizon)
    pred: torch.Tensor  # [T,3,H,W] float in [0,1] on the CPU (frame 0 = the given frame):
    # the first validation video's rollout, which the figures and strips show
    target: torch.Tensor  # [T,3,H,W] that true video
    one_step: list[float] | None = None  # PSNR of frames 1..short_len, each from the true last
    one_step_baseline: list[float] | None = None  # copying the true last frame, same frames
    ssim: list[float] | None = None  # SSIM of the model's rollout, frames 1..T-1
    baseline_ssim: list[float] | None = None  # SSIM of frame 0 repeated, frames 1..T-1
    # Inside the dancer's box of each frame 1..T-1 (box_scores; nan where its pose is empty):
    box_ssim: list[float] | None = None  # SSIM of the rollout
    baseline_box_ssim: list[float] | None = None  # SSIM of frame 0 repeated
    sharpness: list[float] | None = None  # gradient energy of the rollout over the truth's
    baseline_sharpness: list[float] | None = None  # the same for frame 0 repeated
    videos: int = 1  # validation videos; every list above is the mean over them per frame

    def source(self) -> str:
        """What the scores are of: 'validation video' or 'mean of 4 validation videos'."""
        if self.videos == 1:
            return "validation video"
        return f"mean of {self.videos} validation videos"

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
            **self._box_means(),
        }

    def _box_means(self) -> dict[str, float]:
        """val_box_ssim, baseline_box_ssim, val_sharpness, baseline_sharpness: means over the
        frames that have a score. One without any (no pose has a skeleton pixel) is left out:
        an empty cell in metrics.csv, never a nan that would read as a diverged run."""
        means = {key: nanmean(getattr(self, name) or []) for name, key in BOX_METRICS.items()}
        return {key: value for key, value in means.items() if math.isfinite(value)}

    def _means(self, score: str, model: list[float], baseline: list[float]) -> dict[str, float]:
        """val_<score>, val_<score>_short, baseline_<score>, baseline_<score>_short."""
        n = self.short_len
        return {f"val_{score}": self._mean(model), f"val_{score}_short": self._mean(model[:n]),
                f"baseline_{score}": self._mean(baseline),
                f"baseline_{score}_short": self._mean(baseline[:n])}

    def per_frame(self) -> dict[str, list[float]]:
        """Every score per frame 1..T-1, named as in PER_FRAME_COLUMNS (nan where not scored)."""
        n = len(self.psnr)
        return {"psnr": self.psnr, "baseline_psnr": self.baseline,
                **{name: getattr(self, name) or [math.nan] * n
                   for name in ("ssim", "baseline_ssim", *BOX_SCORES)}}

    def figure_scores(self) -> dict[str, list[float]]:
        """The keyword arguments of plots.psnr_per_frame beside PSNR: SSIM and the box scores."""
        return {name: getattr(self, name) or []
                for name in ("ssim", "baseline_ssim", *BOX_SCORES)}

    def per_frame_csv(self) -> str:
        """The text of psnr_per_frame.csv: one row per frame 1..T-1 (PER_FRAME_COLUMNS)."""
        scores = self.per_frame()
        rows = zip(*(scores[name] for name in PER_FRAME_COLUMNS[1:]), strict=True)
        lines = [",".join(PER_FRAME_COLUMNS)] + [
            f"{t}," + ",".join(f"{v:.4f}" for v in values) for t, values in enumerate(rows, 1)
        ]
        return "\n".join(lines) + "\n"


BOX_SCORES = ("box_ssim", "baseline_box_ssim", "sharpness", "baseline_sharpness")
BOX_METRICS = {"box_ssim": "val_box_ssim", "baseline_box_ssim": "baseline_box_ssim",
               "sharpness": "val_sharpness", "baseline_sharpness": "baseline_sharpness"}
PER_FRAME_COLUMNS = ("frame", "psnr", "baseline_psnr", "ssim", "baseline_ssim", *BOX_SCORES)


def nanmean(values: list[float]) -> float:
    """The mean of the values that are not nan; nan when none is (and no warning)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


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
             device: torch.device, seed: int = 0, progress=None, threads: int = 0) -> Validation:
    """frames, poses: float in [0,1], one video [T,3,H,W] or V videos of one length
    [V,T,3,H,W], rolled out together as one batch. Every per-frame score is the mean over the
    videos (a score the videos agree on, not one video's luck); `pred` and `target` are the
    first video's, for the figures. The model is put in eval mode and restored.

    The noise is drawn on the CPU from a generator seeded with `seed`, so the figures do not
    depend on the device: first the rollout's, all T-1 frames of every video at once
    ([V,T-1,N,H,W], moved to the device in one copy; the first video's draws are those a lone
    video gets), then the one-step pass's. These are the same values as T-1 draws of one frame
    each whenever one frame's noise (N*H*W values) is a multiple of 16, as at every preset
    (32x64 frames): PyTorch's CPU sampler fills 16 values at a time and redraws a ragged tail.
    Other sizes draw other (still seeded, deterministic) values.

    threads: torch's CPU threads for this call (0: as they are), e.g. the cores of the workers
    that wait while one validates; the figures agree to float rounding (~1e-7).
    """
    with torch_threads(threads):
        return _validate(model, frames, poses, short_len=short_len, device=device, seed=seed,
                         progress=progress)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` inside the block (0 or less: left as they
    are), and back to what they were after it."""
    before = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _validate(model: CVAE, frames: torch.Tensor, poses: torch.Tensor, *, short_len: int,
              device: torch.device, seed: int, progress) -> Validation:
    if frames.dim() == 4:
        frames, poses = frames[None], poses[None]
    videos, length = frames.shape[:2]
    short_len = max(1, min(short_len, length - 1))
    was_training = model.training
    model.eval()
    try:
        rng = torch.Generator(device="cpu").manual_seed(seed)
        latent = model.latent_shape(*frames.shape[-2:])  # N,h,w
        noise = torch.randn(videos, length - 1, *latent, generator=rng)  # [V,T-1,N,h,w]
        pred = model.generate(frames[:, 0].to(device), poses.to(device),
                              noise=noise.to(device), progress=progress).float().cpu()
        # One step from the true previous frame over the short horizon: what the model learned
        # per step, apart from how its rollout drifts.
        n = short_len + 1
        noise = torch.randn(videos, n - 1, *latent, generator=rng)
        out = model(frames[:, :n].to(device), poses[:, :n].to(device), True,
                    noise=noise.to(device))
        one_step = psnr(out.pred.float().cpu(), frames[:, 1:n].float())  # [V,n-1]
    finally:
        model.train(was_training)
    scores = [video_scores(p, f.float(), q.float(), short_len)
              for p, f, q in zip(pred, frames, poses, strict=True)]
    return Validation(
        **{name: mean_per_frame([s[name] for s in scores]) for name in scores[0]},
        one_step=one_step.mean(0).tolist(),
        short_len=short_len, pred=pred[0], target=frames[0].float(), videos=videos,
    )


def video_scores(pred: torch.Tensor, frames: torch.Tensor, poses: torch.Tensor,
                 short_len: int) -> dict[str, list[float]]:
    """Every per-frame score of one video's rollout but the one-step PSNR (the Validation
    field names). pred, frames, poses: [T,3,H,W] in [0,1], pred[0] the given frame."""
    return {
        "psnr": psnr(pred[1:], frames[1:]).tolist(),
        "baseline": copy_last_baseline(frames),
        "one_step_baseline": copy_previous_baseline(frames[:short_len + 1]),
        "ssim": ssim(pred[1:], frames[1:]).tolist(),
        "baseline_ssim": copy_last_ssim(frames),
        **box_scores(pred[1:], frames[1:], frames[0], poses[1:]),
    }


def mean_per_frame(per_video: list[list[float]]) -> list[float]:
    """Frame by frame, the mean over the videos of a score (`nanmean`: a frame one video cannot
    score is the mean of the others)."""
    return [nanmean(list(column)) for column in zip(*per_video, strict=True)]


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


# ------------------------------------------------- the dancer's box: a score that sees blur

# The box is the bounding box of the pose's skeleton pixels, padded: the body drawn over a
# skeleton (torso and limb widths, hair, loose clothes, the feet's shadow) reaches past the
# skeleton's lines. On the synthetic 32x64 frames the lines are 2 pixels wide and the widest
# parts (the torso, ~3 pixels; the head with its hair) stand out of them by 1-2 pixels, so the
# pad is 2 pixels there; on taller frames it grows with the height (1/16 of it), as the body does.
BOX_PAD_MIN = 2
BOX_PAD_FRACTION = 1 / 16


def box_pad(height: int) -> int:
    """Pixels added on each side of the skeleton's bounding box in frames `height` rows tall:
    max(2, round(height / 16)), so 2 on the 32-row frames."""
    return max(BOX_PAD_MIN, round(height * BOX_PAD_FRACTION))


def dancer_box(pose: torch.Tensor, pad: int) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), bottom and right exclusive: the bounding box of the pose's
    skeleton pixels (any channel above POSE_ON), `pad` pixels wider on each side and clamped to
    the frame. None when the pose has no skeleton pixel. pose: [3,H,W] in [0,1]."""
    on = pose.amax(0) > POSE_ON  # [H,W]
    rows, cols = on.any(1).nonzero()[:, 0], on.any(0).nonzero()[:, 0]
    if not len(rows):
        return None
    height, width = on.shape
    return (max(0, int(rows[0]) - pad), min(height, int(rows[-1]) + 1 + pad),
            max(0, int(cols[0]) - pad), min(width, int(cols[-1]) + 1 + pad))


def gradient_energy(images: torch.Tensor) -> torch.Tensor:
    """images [...,C,h,w] -> [...]: the squared differences of horizontally adjacent pixels
    plus those of vertically adjacent pixels, summed over channels and positions, divided by
    the h*w pixels. Flat = 0; edges and texture raise it; blur lowers it."""
    dx = images[..., :, 1:] - images[..., :, :-1]  # [...,C,h,w-1]
    dy = images[..., 1:, :] - images[..., :-1, :]  # [...,C,h-1,w]
    pixels = images.shape[-1] * images.shape[-2]
    return (dx.square().sum((-3, -2, -1)) + dy.square().sum((-3, -2, -1))) / pixels


def sharpness_ratio(guesses: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """gradient_energy(guess) / gradient_energy(truth) for each guess [N,C,h,w] of the same
    crop truth [C,h,w] -> [N]. 1: as sharp as the truth; a smear is far below 1; noise or
    extra edges can exceed 1. nan for every guess when the truth is flat (energy 0)."""
    energy = gradient_energy(torch.cat([guesses, truth[None]]).float())  # [N+1], one reduction
    if energy[-1] == 0:
        return torch.full((guesses.shape[0],), math.nan)
    return energy[:-1] / energy[-1]


def box_scores(pred: torch.Tensor, target: torch.Tensor, first: torch.Tensor,
               poses: torch.Tensor, pad: int | None = None) -> dict[str, list[float]]:
    """The dancer-box scores of each frame t (BOX_SCORES): inside the box of poses[t]
    (`dancer_box`, padded by `box_pad` of the frame height unless `pad` is given), the SSIM
    (`ssim`, its window narrowed to the crop) and the sharpness ratio of pred[t] against
    target[t], and the same for `first`, the copy-frame-0 baseline's every frame.

    pred, target, poses: [T,3,H,W] in [0,1]; first: [3,H,W]. A frame whose pose has no
    skeleton pixel scores nan in all four.
    """
    pad = box_pad(target.shape[-2]) if pad is None else pad
    scores: dict[str, list[float]] = {name: [] for name in BOX_SCORES}
    for t in range(target.shape[0]):
        values = _box_frame(pred[t], target[t], first, dancer_box(poses[t], pad))
        for name, value in zip(BOX_SCORES, values, strict=True):
            scores[name].append(value)
    return scores


def _box_frame(pred: torch.Tensor, truth: torch.Tensor, first: torch.Tensor,
               box: tuple[int, int, int, int] | None) -> tuple[float, ...]:
    """(box_ssim, baseline_box_ssim, sharpness, baseline_sharpness) of one frame [3,H,W]."""
    if box is None:
        return (math.nan,) * len(BOX_SCORES)
    rows, cols = slice(box[0], box[1]), slice(box[2], box[3])
    guesses = torch.stack([pred[:, rows, cols], first[:, rows, cols]]).float()  # [2,3,h,w]
    crop = truth[:, rows, cols].float()  # [3,h,w]
    model_ssim, baseline_ssim = ssim(guesses, crop.expand_as(guesses)).tolist()
    model_sharp, baseline_sharp = sharpness_ratio(guesses, crop).tolist()
    return model_ssim, baseline_ssim, model_sharp, baseline_sharp
