"""Deterministic synthetic "dance" dataset in the lab layout: `generate` writes it.

Every command of the project can train on this embedded default data set, so it mimics the
real lab data: an RGB video of one dancing person in front of a static background, plus an
OpenPose-style skeleton image per frame.  Layout written under ``out``::

    train/train_img/frameN.png   train/train_label/frameN.png   train/manifest.json
    val/val_img/frameN.png       val/val_label/frameN.png       val/manifest.json
        (VAL_VIDEOS validation videos, numbered on: video v is frames v*val_frames...)
    test/test_img/<k>/frame0.png test/test_label/<k>/frameN.png test/manifest.json
    test/test_truth/<k>/frameN.png   (every true frame of test sequence k, for scoring)

The test split keeps only frame 0 and the poses in test_img/test_label, as the Tester's input;
test_truth holds the frames a rollout should produce, and the test manifest names that folder
(``"truth_dir": "test_truth"``).

The figure is a small 3-D kinematic skeleton (orthographic camera) whose joint angles come
from a timeline of dance "moves" (sums of sinusoids) blended with cosine cross-fades. By
default each frame is a function of the pose and the video's fixed look; ``stochastic=LEVEL``
adds events the pose cannot foretell (shirt colour changes, light flickers, objects that
appear; rates in `cvae.synth_events`), listed per video in the manifests.

The parts: `cvae.synth_moves` (the dance moves), `cvae.synth_motion` (a video's plan and its
poses), `cvae.synth_look` (colours and the room), `cvae.synth_render` (drawing a frame and its
label), `cvae.synth_events` (the events); this module writes the folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cvae import storage
from cvae.errors import DataError
from cvae.storage import atomic_path
from cvae.synth_events import KINDS, RATES, check_level, counts, sample_events
from cvae.synth_motion import IDX, KEYPOINT_NAMES, VideoPlan, plan_video
from cvae.synth_moves import MOVES, PARAMS
from cvae.synth_render import LIMBS, PALETTE, render_label, render_rgb

__all__ = [
    "FORMAT", "IDX", "KEYPOINT_NAMES", "LIMBS", "MOVES", "PALETTE", "PARAMS", "TRUTH_DIR",
    "VideoPlan", "generate", "plan_video", "render_label", "render_rgb",
]  # fmt: skip

FORMAT = "cvae-synth/1"
# Validation videos (of val_frames each, numbered on in one folder as the training videos
# are): validation scores their mean, which follows the held-out score where one video's luck
# did not (validation moved 0.4-0.6 dB between epochs where the held-out score moved 0.05).
# Video 0 is the one a single-video set has.
VAL_VIDEOS = 4
_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}  # seed stream per split (see _Job.rng)
TRUTH_DIR = "test_truth"  # under test/: the true frames of the test sequences
_IDX = IDX  # keypoint (and render point) name -> index into VideoPlan.xy
_PNG_OPTS = {"format": "PNG", "optimize": False, "compress_level": 6}


# --------------------------------------------------------------------------- public API


def generate(
    out: str | Path,
    *,
    seed: int = 0,
    train_videos: int = 16,
    frames_per_video: int = 160,
    val_frames: int = 630,
    val_videos: int = VAL_VIDEOS,
    test_sequences: int = 5,
    test_frames: int = 630,
    height: int = 64,
    width: int = 128,
    stochastic: float = 0.0,
    progress: bool = True,
) -> dict:
    """Write the synthetic data set under ``out`` atomically and return a summary dict.

    ``stochastic`` (0 to 1) is the level of events the pose cannot foretell: per 100 frames
    2 x level shirt colour changes, 4 x level light flickers, 1 x level objects that stay
    (`cvae.synth_events`), listed per video in the manifests. At 0 (the default) nothing is
    drawn and every file is what it was before the option existed.

    Everything is written into a temporary sibling folder that is renamed to ``out`` at the
    end, so an interrupted run leaves neither ``out`` nor the temporary folder behind.
    """
    sizes = {
        "train_videos": train_videos,
        "frames_per_video": frames_per_video,
        "val_frames": val_frames,
        "val_videos": val_videos,
        "test_sequences": test_sequences,
        "test_frames": test_frames,
    }
    _check_args(sizes, seed, height, width)
    level = check_level(stochastic)
    out = Path(out)
    _check_out(out)
    jobs = _jobs(seed, train_videos, frames_per_video, val_frames, val_videos, test_sequences,
                 test_frames)
    start = time.perf_counter()
    events = _write_all(out, jobs, seed, height, width, level, progress)
    return {
        "out": str(out),
        "seed": seed,
        "height": height,
        "width": width,
        "stochastic": level,
        "train_frames": train_videos * frames_per_video,
        "val_frames": val_frames,
        "val_videos": val_videos,
        "test_sequences": test_sequences,
        "test_label_frames": test_sequences * test_frames,
        "test_truth_frames": test_sequences * test_frames,
        "events": counts(tuple(e for evs in events.values() for e in evs)),
        "files": _count_files(out),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _write_all(out: Path, jobs: list[_Job], seed: int, height: int, width: int, level: float,
               progress: bool) -> dict:
    """Write every video and the manifests into a temporary sibling renamed to ``out`` at the
    end; return each job's events."""
    events = {}
    with atomic_path(out.resolve()) as tmp:
        storage.remove(tmp)  # a stale folder of an earlier run with our pid
        total = sum(job.num_frames for job in jobs)
        with tqdm(total=total, desc="synth", unit="frame", disable=not progress) as bar:
            for job in jobs:
                events[job] = _write_video(tmp, job, height, width, bar.update, level)
        _write_manifests(tmp, jobs, seed, height, width, level, events)
    return events


# ------------------------------------------------------------------------ argument checks


def _check_args(counts: dict[str, int], seed: int, height: int, width: int) -> None:
    """Raise DataError naming the first argument that cannot be used."""
    for name, value in counts.items():
        if not _is_int(value) or value < 1:
            raise DataError(f"{name}={value!r}: must be an integer >= 1")
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value) or value < 16:
            raise DataError(f"{name}={value!r}: must be an integer >= 16")
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed={seed!r}: must be an integer >= 0")


def _is_int(value: object) -> bool:
    """True for real integers (numpy ints too), False for bools and floats."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_out(out: Path) -> None:
    """Refuse an existing file or a non-empty folder as output."""
    if out.is_dir():
        if any(out.iterdir()):
            raise DataError(
                f"{out}: already exists and is not empty; choose another --out or delete it"
            )
    elif out.exists():
        raise DataError(f"{out}: already exists and is not a folder; choose another --out")


def _count_files(root: Path) -> int:
    """Number of regular files below root."""
    return sum(len(files) for _, _, files in os.walk(root))


# -------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class _Job:
    """One video to write: where its frames go, how they are numbered, its random stream."""

    split: str
    video_id: int
    first_frame: int  # number N of its first frameN.png
    num_frames: int
    img_dir: str  # relative to the output root
    label_dir: str
    rgb_frames: int  # how many leading frames get an RGB image (test: only frame0)
    seed: int
    truth_dir: str | None = None  # where every RGB frame goes as well (test sequences)

    def _seed_sequence(self) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(_SPLIT_KEYS[self.split], self.video_id))

    def rng(self) -> np.random.Generator:
        """Independent stream per (seed, split, video): test video k ignores the train count."""
        return np.random.default_rng(self._seed_sequence())

    def event_rng(self) -> np.random.Generator:
        """The video's own child stream for its events: drawing them leaves rng() as it is."""
        return np.random.default_rng(self._seed_sequence().spawn(1)[0])


def _jobs(seed, train_videos, frames_per_video, val_frames, val_videos, test_sequences,
          test_frames):
    """The list of videos of all splits, in writing order."""
    jobs = [
        _Job("train", v, v * frames_per_video, frames_per_video,
             "train/train_img", "train/train_label", frames_per_video, seed)
        for v in range(train_videos)
    ]  # fmt: skip
    jobs += [
        _Job("val", v, v * val_frames, val_frames, "val/val_img", "val/val_label", val_frames,
             seed)
        for v in range(val_videos)
    ]  # fmt: skip
    jobs += [
        _Job("test", k, 0, test_frames, f"test/test_img/{k}", f"test/test_label/{k}", 1, seed,
             f"test/{TRUTH_DIR}/{k}")
        for k in range(test_sequences)
    ]  # fmt: skip
    return jobs



def _write_video(root: Path, job: _Job, height: int, width: int, tick, level: float) -> tuple:
    """Plan one video and write its RGB and label frames (and its true frames, if kept);
    return its events (() at level 0)."""
    video = plan_video(job.rng(), job.num_frames, height, width)
    if level > 0.0:
        video = replace(video, events=sample_events(job.event_rng(), video, level))
    img_dir, label_dir = root / job.img_dir, root / job.label_dir
    truth_dir = root / job.truth_dir if job.truth_dir else None
    for folder in (img_dir, label_dir, truth_dir):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    for i in range(job.num_frames):
        name = f"frame{job.first_frame + i}.png"
        rgb = render_rgb(video, i) if i < job.rgb_frames or truth_dir else None
        if i < job.rgb_frames:
            _save_png(rgb, img_dir / name)
        if truth_dir is not None:
            _save_png(rgb, truth_dir / name)
        _save_png(render_label(video, i), label_dir / name)
        tick(1)
    return video.events


def _save_png(img: Image.Image, path: Path) -> None:
    """Save with fixed options: no metadata, so equal pixels give equal bytes."""
    img.save(path, **_PNG_OPTS)


def _write_manifests(root: Path, jobs: list[_Job], seed: int, h: int, w: int, level: float,
                     events: dict) -> None:  # fmt: skip
    """One manifest.json per split recording where each video starts and ends; with events
    (level > 0) also the level, the expected events per 100 frames and each video's events.
    At level 0 the manifests carry no event fields at all (the files are as they were)."""
    for split in _SPLIT_KEYS:
        videos = []
        for job in (j for j in jobs if j.split == split):
            entry = {"video_id": job.video_id, "first_frame": job.first_frame,
                     "num_frames": job.num_frames}  # fmt: skip
            if split == "test":
                entry["subdir"] = str(job.video_id)
            if level > 0.0:
                entry["events"] = [e.record(job.first_frame) for e in events[job]]
            videos.append(entry)
        manifest = {"format": FORMAT, "seed": int(seed), "height": h, "width": w}
        if level > 0.0:
            manifest["stochastic"] = level
            manifest["events_per_100_frames"] = {k: RATES[k] * level for k in KINDS}
        manifest["videos"] = videos
        if split == "test":
            manifest["truth_dir"] = TRUTH_DIR
        text = json.dumps(manifest, indent=2) + "\n"
        (root / split / "manifest.json").write_text(text, encoding="utf-8")
