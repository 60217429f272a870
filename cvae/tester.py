"""The Tester: roll out every test sequence from its first frame and write submission.csv.

Beside it, per sequence: pred_seq<k>.gif (the rollout), compare_seq<k>.gif and strip_seq<k>.png
(truth | prediction | copy-frame-0 baseline where the data set keeps the true test frames, else
prediction | poses). With the true frames, the held-out score too (cvae.heldout: PSNR, SSIM,
and SSIM and sharpness inside the dancer's box, over all frames and over the last 130; with
test.samples > 1, the mean and the best of that many rollouts per sequence: cvae.samples).

submission.csv: header `id,0,1,...,3*H*W-1`; one row per generated frame,
sequences stacked in order (id = k * T + t); values = frame in C,H,W order x 255, rounded to ints;
frame 0 of each sequence is the given first frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cvae import montage, plots, storage
from cvae.checkpoint import (
    checkpoint_config,
    load_checkpoint,
    load_weights,
    resolve_checkpoint_path,
)
from cvae.config import Config
from cvae.errors import CvaeError, DataError
from cvae.evaluate import REGION_COLUMNS, Validation, region_errors, validate
from cvae.heldout import load_truth, score_sequence, write_scores
from cvae.lab_folder import TestSequence, load_test_sequences, load_videos
from cvae.model import CVAE
from cvae.rundir import CHECKPOINTS, METRICS_FILE, write_psnr_csv
from cvae.samples import draw_more, score_samples, write_samples


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[CVAE, Config]:
    """Rebuild the model from the config stored in the checkpoint and load its weights."""
    path = resolve_checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    cfg = checkpoint_config(state, path)
    model = CVAE(cfg.model)
    load_weights(model, state["model"], str(path), "the stored model config")
    if cfg.train.channels_last:  # the layout it trained in: faster rollouts on CPU and GPU
        model = model.to(memory_format=torch.channels_last)
    return model.to(device).eval(), cfg


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float [...] in [0,1] -> uint8 [...] (x 255, rounded)."""
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def write_submission(sequences: list[np.ndarray], path: str | Path) -> Path:
    """sequences: uint8 [T,3,H,W] each, all the same T. Written to a temp file, then renamed."""
    path = Path(path)
    lengths = {s.shape for s in sequences}
    if len(lengths) != 1:
        raise CvaeError(f"test sequences differ in shape: {sorted(lengths)}")
    rows = np.concatenate([s.reshape(s.shape[0], -1) for s in sequences])  # [K*T, 3*H*W]
    with storage.atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.write("id," + ",".join(map(str, range(rows.shape[1]))) + "\n")
        for i, row in enumerate(rows):
            fh.write(f"{i}," + ",".join(map(str, row.tolist())) + "\n")
    return path


def check_sequences(sequences: list[TestSequence], seq_len: int, root: str | Path) -> int:
    """All sequences must have the same number of poses (>= 2); returns the frames to generate."""
    counts = {s.index: s.poses.shape[0] for s in sequences}
    n = min(counts.values())
    if n != max(counts.values()):
        detail = ", ".join(f"{k}: {c}" for k, c in counts.items())
        raise DataError(f"{root}/test/test_label: sequences have different pose counts ({detail})")
    if n < 2:
        raise DataError(f"{root}/test/test_label: {n} pose per sequence, need at least 2")
    return min(n, seq_len)


def check_out(out: str | Path, into_run: bool) -> None:
    """The Tester's files (psnr_per_frame.*, GIFs) would overwrite a training run's own: its
    folder (metrics.csv or checkpoints/ in it) is refused unless asked for."""
    out = Path(out)
    if not into_run and ((out / METRICS_FILE).is_file() or (out / CHECKPOINTS).is_dir()):
        raise CvaeError(f"--out {out} is a training run folder (its psnr_per_frame.* would be "
                        "overwritten); choose another --out, or pass --into-run")


def run_tester(cfg: Config, checkpoint: str | Path, device: torch.device) -> dict:
    """Generate every test sequence; write submission.csv, GIFs, side-by-side views, the
    held-out score (where the true test frames exist) and the validation scores."""
    model, trained = load_model(checkpoint, device)
    if cfg.run.compile:
        model.compile_frames()
    height, width = trained.data.height, trained.data.width
    root = Path(cfg.data.root)
    sequences = load_test_sequences(root, height, width, max_len=cfg.test.seq_len)
    length = check_sequences(sequences, cfg.test.seq_len, root)
    truth = load_truth(root, [s.index for s in sequences], height, width, length)  # or None
    if cfg.test.samples > 1 and truth is None:
        raise DataError(f"test.samples = {cfg.test.samples}: scoring samples needs the true "
                        f"test frames ({root}/test/test_truth), which this data set lacks")
    val = None  # every input is read and checked before the first file is written
    if (root / "val" / "val_img").is_dir():
        val = load_videos(root, "val", height, width, max_len=cfg.test.seq_len)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(cfg.test.seed)
    # All sequences roll out as one batch: on a CPU a small model's step costs about the same
    # for 1 frame as for 5, so this is ~len(sequences) times faster than one at a time.
    first = torch.stack([s.first_frame for s in sequences]).float().div(255).to(device)
    poses = torch.stack([s.poses[:length] for s in sequences]).float().div(255).to(device)
    bar = tqdm(total=len(sequences) * (length - 1), desc="generating", unit="frame",
               disable=not cfg.run.progress, dynamic_ncols=True)
    with bar:
        pred = to_uint8(model.generate(first, poses, rng=rng, progress=bar))  # [K,T,3,H,W]
    generated = []
    for seq, frames in zip(sequences, pred, strict=True):
        frames[0] = seq.first_frame.numpy()  # frame 0 is the given frame, exactly
        generated.append(frames)
        montage.write_gif(frames, out / f"pred_seq{seq.index}.gif", cfg.test.gif_fps)
    submission = write_submission(generated, out / "submission.csv")
    result = {"submission": str(submission), "sequences": len(sequences), "frames": length,
              "gifs": [str(out / f"pred_seq{s.index}.gif") for s in sequences],
              **write_views(sequences, generated, truth, out, cfg.test.gif_fps)}
    if truth is not None:
        scores = [score_sequence(s.index, frames, s.first_frame, true, s.poses[:length])
                  for s, frames, true in zip(sequences, generated, truth, strict=True)]
        result.update(write_scores(scores, out))
        if cfg.test.samples > 1:
            result.update(more_samples(model, first, poses, sequences, generated, truth,
                                       cfg, rng, out))
    if val is not None:
        validation = validate(model, val[0].float() / 255, val[1].float() / 255,
                              short_len=trained.validation.short_horizon(trained.data.clip_len),
                              device=device, seed=cfg.test.seed)
        result.update(write_validation(validation, out))
    return result


def more_samples(model: CVAE, first: torch.Tensor, poses: torch.Tensor,
                 sequences: list[TestSequence], generated: list[np.ndarray],
                 truth: list[torch.Tensor], cfg: Config, rng: torch.Generator, out: Path) -> dict:
    """test.samples - 1 more rollouts of every sequence (rng goes on from the submitted one's
    draws), all scored with the submitted one: test_samples.csv and its summary."""
    extra = cfg.test.samples - 1
    bar = tqdm(total=extra * len(sequences) * (poses.shape[1] - 1),
               desc="more samples", unit="frame", disable=not cfg.run.progress,
               dynamic_ncols=True)
    with bar:
        more = draw_more(model, first, poses, extra, rng, progress=bar)  # [extra,K,T,3,H,W]
    rows = {seq.index: score_samples([frames, *more[:, i].numpy()], true)
            for i, (seq, frames, true) in enumerate(zip(sequences, generated, truth, strict=True))}
    return write_samples(rows, out)


def write_views(sequences: list[TestSequence], generated: list[np.ndarray],
                truth: list[torch.Tensor] | None, out: Path, fps: int) -> dict:
    """compare_seq<k>.gif and strip_seq<k>.png for every sequence: truth | prediction | the
    copy-frame-0 baseline when the true frames are known, else prediction | poses.
    generated: uint8 [T,3,H,W] each; truth: uint8 [T,3,H,W] each."""
    gifs, strips = [], []
    for i, (seq, frames) in enumerate(zip(sequences, generated, strict=True)):
        if truth is None:
            sources = {"prediction": frames, "poses": seq.poses[:len(frames)].numpy()}
        else:
            baseline = np.broadcast_to(seq.first_frame.numpy()[None], frames.shape)
            sources = {"truth": truth[i].numpy(), "prediction": frames, "copy frame 0": baseline}
        gifs.append(str(montage.write_compare_gif(sources, out / f"compare_seq{seq.index}.gif",
                                                  fps)))
        strips.append(str(montage.write_strip(sources, out / f"strip_seq{seq.index}.png")))
    return {"compare_gifs": gifs, "strips": strips}


def write_validation(validation: Validation, out: Path) -> dict:
    write_psnr_csv(out / "psnr_per_frame.csv", validation)
    write_region_csv(out / "rollout_regions.csv", validation)
    m = validation.metrics()
    plots.psnr_per_frame(validation.psnr, out / "psnr_per_frame.png", baseline=validation.baseline,
                         title=f"{validation.source().capitalize()}: mean PSNR "
                               f"{m['val_psnr']:.2f} dB",
                         **validation.figure_scores())
    return {**m, "val_source": validation.source(), "psnr_csv": str(out / "psnr_per_frame.csv"),
            "psnr_png": str(out / "psnr_per_frame.png"),
            "regions_csv": str(out / "rollout_regions.csv")}


def write_region_csv(path: Path, validation: Validation) -> None:
    """rollout_regions.csv: the rollout's and the baseline's error per 70 frames, background and
    dancer apart (cvae.evaluate.region_errors), written atomically."""
    rows = region_errors(validation.pred, validation.target)
    lines = [",".join(REGION_COLUMNS)] + [
        ",".join(str(r[c]) if c.endswith("frame") else f"{r[c]:.6f}" for c in REGION_COLUMNS)
        for r in rows
    ]
    storage.write_text(path, "\n".join(lines) + "\n")
