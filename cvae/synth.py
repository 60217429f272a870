"""Deterministic synthetic "dance" dataset in the lab layout.

Every command of the project can train on this embedded default data set, so it mimics the
real lab data: an RGB video of one dancing person in front of a static background, plus an
OpenPose-style skeleton image per frame.  Layout written under ``out``::

    train/train_img/frameN.png   train/train_label/frameN.png   train/manifest.json
    val/val_img/frameN.png       val/val_label/frameN.png       val/manifest.json
    test/test_img/<k>/frame0.png test/test_label/<k>/frameN.png test/manifest.json
    test/test_truth/<k>/frameN.png   (every true frame of test sequence k, for scoring)

The test split keeps only frame 0 and the poses in test_img/test_label, as the Tester's input;
test_truth holds the frames a rollout should produce, and the test manifest names that folder
(``"truth_dir": "test_truth"``).

The figure is a small 3-D kinematic skeleton (orthographic camera) whose joint angles come
from a timeline of dance "moves" (sums of sinusoids) blended with cosine cross-fades.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from cvae import storage
from cvae.errors import DataError
from cvae.storage import atomic_path

FORMAT = "cvae-synth/1"

# OpenPose COCO-18 keypoint order.
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear",
    "l_ear",
)  # fmt: skip
# The 17 limb pairs OpenPose draws for COCO-18 (0-based), in its drawing order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# The usual OpenPose palette: colour i for limb i and for keypoint i.
PALETTE = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

_SS = 2  # supersampling factor: draw at 2x, then Image.reduce(2) for anti-aliased edges
_SPLIT_KEYS = {"train": 0, "val": 1, "test": 2}  # seed stream per split (see _video_rng)
TRUTH_DIR = "test_truth"  # under test/: the true frames of the test sequences

# Joint-angle parameters a move produces (angles in radians, lengths in body heights).
PARAMS = (
    "root_dx", "lean", "twist", "jump", "head_tilt",
    "r_sh_a", "r_sh_b", "r_el", "l_sh_a", "l_sh_b", "l_el",
    "r_hip_a", "r_hip_b", "r_knee", "l_hip_a", "l_hip_b", "l_knee",
)  # fmt: skip
_NEUTRAL = {
    "r_sh_a": 0.25, "l_sh_a": 0.25, "r_el": 0.3, "l_el": 0.3,
    "r_hip_a": 0.08, "l_hip_a": 0.08, "r_knee": 0.1, "l_knee": 0.1,
}  # fmt: skip
_PNG_OPTS = {"format": "PNG", "optimize": False, "compress_level": 6}


# --------------------------------------------------------------------------- public API


def generate(
    out: str | Path,
    *,
    seed: int = 0,
    train_videos: int = 16,
    frames_per_video: int = 160,
    val_frames: int = 630,
    test_sequences: int = 5,
    test_frames: int = 630,
    height: int = 64,
    width: int = 128,
    progress: bool = True,
) -> dict:
    """Write the synthetic data set under ``out`` atomically and return a summary dict.

    Everything is written into a temporary sibling folder that is renamed to ``out`` at the
    end, so an interrupted run leaves neither ``out`` nor the temporary folder behind.
    """
    counts = {
        "train_videos": train_videos,
        "frames_per_video": frames_per_video,
        "val_frames": val_frames,
        "test_sequences": test_sequences,
        "test_frames": test_frames,
    }
    _check_args(counts, seed, height, width)
    out = Path(out)
    _check_out(out)
    jobs = _jobs(seed, train_videos, frames_per_video, val_frames, test_sequences, test_frames)
    total = sum(job.num_frames for job in jobs)
    start = time.perf_counter()
    with atomic_path(out.resolve()) as tmp:
        storage.remove(tmp)  # a stale folder of an earlier run with our pid
        with tqdm(total=total, desc="synth", unit="frame", disable=not progress) as bar:
            for job in jobs:
                _write_video(tmp, job, height, width, bar.update)
        _write_manifests(tmp, jobs, seed, height, width)
    return {
        "out": str(out),
        "seed": seed,
        "height": height,
        "width": width,
        "train_frames": train_videos * frames_per_video,
        "val_frames": val_frames,
        "test_sequences": test_sequences,
        "test_label_frames": test_sequences * test_frames,
        "test_truth_frames": test_sequences * test_frames,
        "files": _count_files(out),
        "seconds": round(time.perf_counter() - start, 3),
    }


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

    def rng(self) -> np.random.Generator:
        """Independent stream per (seed, split, video): test video k ignores the train count."""
        seq = np.random.SeedSequence(self.seed, spawn_key=(_SPLIT_KEYS[self.split], self.video_id))
        return np.random.default_rng(seq)


def _jobs(seed, train_videos, frames_per_video, val_frames, test_sequences, test_frames):
    """The list of videos of all splits, in writing order."""
    jobs = [
        _Job("train", v, v * frames_per_video, frames_per_video,
             "train/train_img", "train/train_label", frames_per_video, seed)
        for v in range(train_videos)
    ]  # fmt: skip
    jobs.append(_Job("val", 0, 0, val_frames, "val/val_img", "val/val_label", val_frames, seed))
    jobs += [
        _Job("test", k, 0, test_frames, f"test/test_img/{k}", f"test/test_label/{k}", 1, seed,
             f"test/{TRUTH_DIR}/{k}")
        for k in range(test_sequences)
    ]
    return jobs


def _write_video(root: Path, job: _Job, height: int, width: int, tick) -> None:
    """Plan one video and write its RGB and label frames (and its true frames, if kept)."""
    video = plan_video(job.rng(), job.num_frames, height, width)
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


def _save_png(img: Image.Image, path: Path) -> None:
    """Save with fixed options: no metadata, so equal pixels give equal bytes."""
    img.save(path, **_PNG_OPTS)


def _write_manifests(root: Path, jobs: list[_Job], seed: int, h: int, w: int) -> None:
    """One manifest.json per split recording where each video starts and ends."""
    for split in _SPLIT_KEYS:
        videos = []
        for job in (j for j in jobs if j.split == split):
            entry = {"video_id": job.video_id, "first_frame": job.first_frame,
                     "num_frames": job.num_frames}  # fmt: skip
            if split == "test":
                entry["subdir"] = str(job.video_id)
            videos.append(entry)
        manifest = {"format": FORMAT, "seed": int(seed), "height": h, "width": w,
                    "videos": videos}  # fmt: skip
        if split == "test":
            manifest["truth_dir"] = TRUTH_DIR
        text = json.dumps(manifest, indent=2) + "\n"
        (root / split / "manifest.json").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------- moves

# A move maps the dance phase t (T,) (radians, 2*pi per beat cycle) and its own random
# parameters to {param: (T,) array}; missing params take their neutral value.
Move = Callable[[np.ndarray, dict], dict]


def _up(x: np.ndarray, p: float = 2.0) -> np.ndarray:
    """Smooth one-sided pulse in [0, 1] that peaks where x = 1 (x in [-1, 1])."""
    return ((1.0 + x) / 2.0) ** p


def _move_wave(t, r):
    """Both arms raised, waving in alternation, with a knee bounce."""
    j, p = r["amp"], r["phase"]
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 2.0 + 0.55 * j * np.sin(t + p), "l_sh_a": 2.0 + 0.55 * j * np.sin(t + p + np.pi),
        "r_el": 0.5 + 0.6 * np.sin(2 * t), "l_el": 0.5 - 0.6 * np.sin(2 * t),
        "r_knee": 0.1 + 0.35 * bounce, "l_knee": 0.1 + 0.35 * bounce,
        "r_hip_b": 0.18 * bounce, "l_hip_b": 0.18 * bounce,
        "twist": 0.25 * np.sin(0.5 * t), "head_tilt": 0.15 * np.sin(t), "lean": 0.08 * np.sin(t),
    }  # fmt: skip


def _move_squat(t, r):
    """Deep knee bends with the arms opening as the body goes down."""
    s = _up(-np.cos(t), 1.0) * r["amp"]
    return {
        "r_hip_a": 0.1 + 0.35 * s, "l_hip_a": 0.1 + 0.35 * s, "r_hip_b": 1.0 * s,
        "l_hip_b": 1.0 * s, "r_knee": 0.1 + 2.0 * s, "l_knee": 0.1 + 2.0 * s,
        "r_sh_a": 0.3 + 1.2 * s, "l_sh_a": 0.3 + 1.2 * s, "r_el": 0.3 + 0.5 * s,
        "l_el": 0.3 + 0.5 * s, "head_tilt": 0.1 * np.sin(2 * t),
    }  # fmt: skip


def _move_side_step(t, r):
    """Stepping side to side: hip sway, alternating leg spread and arm swing."""
    j = r["amp"]
    return {
        "root_dx": 0.22 * j * np.sin(t), "lean": -0.1 * np.sin(t),
        "r_hip_a": 0.08 + 0.3 * _up(np.sin(t)), "l_hip_a": 0.08 + 0.3 * _up(-np.sin(t)),
        "r_knee": 0.15 + 0.3 * _up(-np.cos(2 * t)), "l_knee": 0.15 + 0.3 * _up(-np.cos(2 * t)),
        "r_sh_a": 0.7 + 0.5 * np.sin(t), "l_sh_a": 0.7 - 0.5 * np.sin(t),
        "r_el": 0.9 + 0.3 * np.cos(t), "l_el": 0.9 - 0.3 * np.cos(t),
        "twist": 0.3 * np.sin(t + r["phase"]),
    }  # fmt: skip


def _move_kick(t, r):
    """Alternating kicks, mostly to the side, with arms out for balance."""
    kr, kl = _up(np.sin(t), 3.0) * r["amp"], _up(-np.sin(t), 3.0) * r["amp"]
    side = r["mix"]  # 1 = pure side kick, 0 = pure front kick (foreshortened)
    return {
        "r_hip_a": 0.08 + 1.1 * side * kr, "r_hip_b": 1.2 * (1 - side) * kr + 0.2 * kr,
        "r_knee": 0.1 + 0.5 * kr * (1 - kr),
        "l_hip_a": 0.08 + 1.1 * side * kl, "l_hip_b": 1.2 * (1 - side) * kl + 0.2 * kl,
        "l_knee": 0.1 + 0.5 * kl * (1 - kl),
        "lean": 0.25 * (kl - kr), "root_dx": 0.06 * (kl - kr),
        "r_sh_a": 1.3 + 0.3 * np.sin(t), "l_sh_a": 1.3 - 0.3 * np.sin(t),
        "r_el": 0.3, "l_el": 0.3,
    }  # fmt: skip


def _move_arm_circles(t, r):
    """Big arm circles (in the frontal plane and towards the camera) with a bounce."""
    j, p = r["amp"], r["phase"]
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 1.6 + 1.15 * j * np.cos(t), "r_sh_b": 0.6 * np.sin(t),
        "l_sh_a": 1.6 + 1.15 * j * np.cos(t + p), "l_sh_b": 0.6 * np.sin(t + p),
        "r_el": 0.15, "l_el": 0.15,
        "r_knee": 0.1 + 0.3 * bounce, "l_knee": 0.1 + 0.3 * bounce,
        "r_hip_b": 0.15 * bounce, "l_hip_b": 0.15 * bounce,
    }  # fmt: skip


def _move_jump(t, r):
    """Crouch, jump with the arms thrown up, land."""
    air, crouch = _up(np.sin(t), 4.0), _up(-np.sin(t), 2.0)
    up = _up(np.sin(t - 0.4), 2.0)
    return {
        "jump": 0.12 * r["amp"] * air,
        "r_knee": 0.1 + 1.3 * crouch, "l_knee": 0.1 + 1.3 * crouch,
        "r_hip_b": 0.65 * crouch, "l_hip_b": 0.65 * crouch,
        "r_hip_a": 0.08 + 0.2 * air, "l_hip_a": 0.08 + 0.2 * air,
        "r_sh_a": 0.3 + 2.3 * up, "l_sh_a": 0.3 + 2.3 * up,
        "r_el": 0.6 * (1 - up), "l_el": 0.6 * (1 - up),
    }  # fmt: skip


def _move_spin(t, r):
    """Arms out while turning (the turn itself is added by _facing)."""
    return {
        "r_sh_a": 1.35 + 0.2 * np.sin(2 * t), "l_sh_a": 1.35 + 0.2 * np.sin(2 * t + 1.0),
        "r_el": 0.3 + 0.3 * np.sin(t), "l_el": 0.3 - 0.3 * np.sin(t),
        "r_knee": 0.2 + 0.3 * _up(np.sin(2 * t)), "l_knee": 0.2 + 0.3 * _up(-np.sin(2 * t)),
        "r_hip_b": 0.15 * _up(np.sin(2 * t)), "l_hip_b": 0.15 * _up(-np.sin(2 * t)),
    }  # fmt: skip


def _move_travel(t, r):
    """Walking/strutting across the floor, body turned towards the travel direction."""
    s = np.sin(t)
    return {
        "twist": 0.75 * r["direction"],
        "r_hip_b": 0.5 * s, "l_hip_b": -0.5 * s,
        "r_knee": 0.1 + 0.7 * _up(-s, 2.0), "l_knee": 0.1 + 0.7 * _up(s, 2.0),
        "r_sh_b": -0.55 * s, "l_sh_b": 0.55 * s, "r_sh_a": 0.2, "l_sh_a": 0.2,
        "r_el": 0.5, "l_el": 0.5, "head_tilt": 0.06 * np.sin(2 * t),
    }  # fmt: skip


def _move_point(t, r):
    """Disco point: one arm up to the sky, then down across, with the hips swaying."""
    sq = np.tanh(2.5 * np.sin(t + r["phase"]))  # smooth square wave in [-1, 1]
    hi = (1 + sq) / 2
    return {
        "r_sh_a": 0.5 + 2.0 * hi, "r_el": 0.1,
        "l_sh_a": 0.35 + 0.3 * hi, "l_el": 1.6,
        "lean": -0.12 * sq, "root_dx": 0.07 * sq, "head_tilt": -0.12 * sq,
        "r_hip_a": 0.15 + 0.1 * hi, "l_hip_a": 0.15 + 0.1 * (1 - hi),
        "r_knee": 0.15 + 0.4 * (1 - hi), "l_knee": 0.15 + 0.4 * hi,
    }  # fmt: skip


def _move_groove(t, r):
    """Relaxed groove: bent arms pumping, knees bouncing, torso twisting."""
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 0.6 + 0.35 * np.sin(t), "l_sh_a": 0.6 - 0.35 * np.sin(t),
        "r_sh_b": 0.4 + 0.3 * np.sin(t), "l_sh_b": 0.4 - 0.3 * np.sin(t),
        "r_el": 1.3 + 0.4 * np.sin(t), "l_el": 1.3 - 0.4 * np.sin(t),
        "r_knee": 0.15 + 0.45 * bounce, "l_knee": 0.15 + 0.45 * bounce,
        "r_hip_b": 0.22 * bounce, "l_hip_b": 0.22 * bounce,
        "twist": 0.4 * np.sin(0.5 * t + r["phase"]), "lean": 0.1 * np.sin(t),
        "root_dx": 0.05 * np.sin(t),
    }  # fmt: skip


# name: (function, selection weight, tempo multiplier)
MOVES: dict[str, tuple[Move, float, float]] = {
    "wave": (_move_wave, 1.0, 1.0),
    "squat": (_move_squat, 0.8, 0.75),
    "side_step": (_move_side_step, 1.0, 1.0),
    "kick": (_move_kick, 0.9, 0.9),
    "arm_circles": (_move_arm_circles, 0.9, 0.9),
    "jump": (_move_jump, 0.7, 0.8),
    "spin": (_move_spin, 0.7, 1.0),
    "travel": (_move_travel, 1.0, 1.1),
    "point": (_move_point, 0.8, 0.8),
    "groove": (_move_groove, 1.0, 1.2),
}


# ------------------------------------------------------------------------- video plan


@dataclass
class VideoPlan:
    """Everything needed to render one video's frames.

    xy: (T, 18+6, 2) image coordinates (pixels) of the keypoints followed by the extra
    render points (pelvis, head, hands, toes); depth: (T, 24) towards-camera depth (pixels);
    visible: (T, 18) whether OpenPose would report the keypoint (face points hide when the
    head turns away); facing: (T,) body rotation about the vertical axis (radians).
    """

    height: int
    width: int
    xy: np.ndarray
    depth: np.ndarray
    visible: np.ndarray
    facing: np.ndarray
    body: dict  # segment lengths/widths in pixels
    look: dict  # RGB colours of the person
    floor_y: float
    background: Image.Image  # (2H, 2W) RGB, static for the whole video
    moves: list  # [(name, first_frame, num_frames)]


_EXTRA = ("pelvis", "head", "r_hand", "l_hand", "r_toe", "l_toe")
_POINTS = KEYPOINT_NAMES + _EXTRA
_IDX = {name: i for i, name in enumerate(_POINTS)}


def plan_video(rng: np.random.Generator, n: int, height: int, width: int) -> VideoPlan:
    """Draw a person, a room and a dance for n frames (all randomness happens here)."""
    body = _sample_body(rng, height)
    look = _sample_look(rng)
    floor_y = height * rng.uniform(0.88, 0.94)
    background = _make_background(rng, height, width, floor_y)
    moves = _sample_timeline(rng, n)
    weights = _blend_weights(moves, n)  # (K, T)
    phase = _phase(rng, moves, weights, n)  # (T,)
    params = _blend_params(rng, moves, weights, phase, n)
    root_x = _root_path(rng, moves, n, width, body["h"])
    facing = _facing(rng, moves, params["twist"], n)
    xy, depth, visible = _pose(body, params, facing, root_x, floor_y)
    return VideoPlan(height, width, xy, depth, visible, facing, body, look, floor_y, background,
                 moves)  # fmt: skip


def _sample_body(rng: np.random.Generator, height: int) -> dict:
    """Per-video proportions; lengths in pixels at 1x (h = standing height)."""
    h = height * rng.uniform(0.6, 0.72)

    def jit(v: float, spread: float = 0.08) -> float:
        return float(v * h * rng.uniform(1 - spread, 1 + spread))

    return {
        "h": h, "head_r": jit(0.068), "neck": jit(0.04), "torso": jit(0.29),
        "shoulder": jit(0.115, 0.15), "hip": jit(0.075, 0.15), "upper_arm": jit(0.165),
        "forearm": jit(0.145), "hand": jit(0.045), "thigh": jit(0.245), "shin": jit(0.235),
        "foot": jit(0.065), "w_torso": jit(0.15, 0.2), "w_upper_arm": jit(0.07, 0.15),
        "w_forearm": jit(0.058, 0.15), "w_thigh": jit(0.095, 0.15), "w_shin": jit(0.075, 0.15),
        "w_neck": jit(0.06),
    }  # fmt: skip


def _sample_timeline(rng: np.random.Generator, n: int) -> list:
    """Consecutive moves covering n frames: [(name, start, length, params)]."""
    names = list(MOVES)
    prob = np.array([MOVES[k][1] for k in names])
    moves, start, last = [], 0, None
    while start < n:
        p = prob.copy()
        if last is not None:
            p[names.index(last)] = 0.0  # never the same move twice in a row
        name = names[rng.choice(len(names), p=p / p.sum())]
        length = int(rng.integers(40, 76) if name == "spin" else rng.integers(30, 66))
        if n - (start + length) < 20:  # avoid a tiny last move
            length = n - start
        params = {"amp": rng.uniform(0.75, 1.2), "phase": rng.uniform(0, 2 * np.pi),
                  "mix": rng.uniform(0.55, 1.0), "mirror": bool(rng.integers(2)),
                  "direction": 1.0, "turns": float(rng.choice([-1, 1]))}  # fmt: skip
        moves.append((name, start, length, params))
        start, last = start + length, name
    return moves


def _blend_weights(moves: list, n: int) -> np.ndarray:
    """(K, T) partition of unity: cosine cross-fades of +-blend frames at move boundaries."""
    f = np.arange(n, dtype=np.float64)
    w = np.zeros((len(moves), n))
    for k, (_, start, length, _) in enumerate(moves):
        rise = _ramp(f, start, k > 0, length)
        fall = _ramp(f, start + length, k < len(moves) - 1, length)
        w[k] = rise * (1.0 - fall)
    return w / w.sum(axis=0, keepdims=True)


def _ramp(f: np.ndarray, at: float, smooth: bool, length: int) -> np.ndarray:
    """0 -> 1 around frame `at`, a cosine over +-blend frames (a hard step if not smooth)."""
    if not smooth:
        return (f >= at).astype(np.float64)
    blend = min(10.0, length / 3.0)
    u = np.clip((f - at + blend) / (2 * blend), 0.0, 1.0)
    return (1.0 - np.cos(np.pi * u)) / 2.0


def _phase(rng: np.random.Generator, moves: list, weights: np.ndarray, n: int) -> np.ndarray:
    """(T,) dance phase: integral of a tempo that varies smoothly and per move."""
    period = rng.uniform(10.0, 16.0)  # frames per beat cycle: ~120-180 BPM at 30 fps
    f = np.arange(n)
    wobble = 0.2 * np.sin(2 * np.pi * f / rng.uniform(90, 200) + rng.uniform(0, 2 * np.pi))
    wobble += 0.1 * np.sin(2 * np.pi * f / rng.uniform(35, 70) + rng.uniform(0, 2 * np.pi))
    tempo = np.array([MOVES[name][2] for name, *_ in moves])  # (K,)
    per_move = (tempo[:, None] * weights).sum(axis=0)  # (T,); no BLAS, so bit-stable
    omega = 2 * np.pi / period * np.exp(wobble) * per_move
    return rng.uniform(0, 2 * np.pi) + np.cumsum(omega)


def _blend_params(rng, moves: list, weights: np.ndarray, phase: np.ndarray, n: int) -> dict:
    """{param: (T,)}: each move evaluated over the whole video, mixed by its weight."""
    out = {name: np.zeros(n) for name in PARAMS}
    for k, (name, _, _, params) in enumerate(moves):
        values = MOVES[name][0](phase, params)
        if params["mirror"]:
            values = _mirror(values)
        for key in PARAMS:
            out[key] += weights[k] * np.broadcast_to(values.get(key, _NEUTRAL.get(key, 0.0)), n)
    # Asymmetric idle jitter so the two sides never move in perfect lockstep.
    for key in ("r_sh_a", "l_sh_a", "r_el", "l_el"):
        out[key] += 0.08 * np.sin(phase * rng.uniform(0.3, 0.7) + rng.uniform(0, 2 * np.pi))
    return out


def _mirror(values: dict) -> dict:
    """Swap the left and right sides of a move (and flip the sideways quantities)."""
    out = {}
    for key, v in values.items():
        if key.startswith("r_"):
            out["l_" + key[2:]] = v
        elif key.startswith("l_"):
            out["r_" + key[2:]] = v
        elif key in ("root_dx", "lean", "twist", "head_tilt"):
            out[key] = -v
        else:
            out[key] = v
    return out


def _root_path(rng, moves: list, n: int, width: int, h: float) -> np.ndarray:
    """(T,) horizontal pelvis position: travel moves cross the floor, others drift slightly."""
    margin = min(0.4 * h, width / 2)
    lo, hi = margin, width - margin
    x = np.empty(n)
    pos = rng.uniform(lo, hi)
    for name, start, length, params in moves:
        if name == "travel":
            far = hi if pos < (lo + hi) / 2 else lo
            target = pos + (far - pos) * rng.uniform(0.6, 1.0)
            params["direction"] = 1.0 if target >= pos else -1.0  # turn towards where it goes
        else:
            target = float(np.clip(pos + rng.normal(0, 0.06 * width), lo, hi))
        u = (np.arange(length) + 0.5) / length
        x[start : start + length] = pos + (target - pos) * (1 - np.cos(np.pi * u)) / 2
        pos = target
    return x


def _facing(rng, moves: list, twist: np.ndarray, n: int) -> np.ndarray:
    """(T,) rotation about the vertical axis: a per-video bias, the moves' twist and spins.

    A spin move adds one full turn eased over its frames, so the figure faces the camera
    again after it and the turn never blends with the other moves' angles.
    """
    phi = rng.uniform(-0.25, 0.25) + twist
    f = np.arange(n)
    for name, start, length, params in moves:
        if name == "spin":
            u = np.clip((f - start) / length, 0.0, 1.0)
            phi = phi + params["turns"] * 2 * np.pi * (1 - np.cos(np.pi * u)) / 2
    return phi


# ----------------------------------------------------------------------------- kinematics


def _dirs(a: np.ndarray, b: np.ndarray, side: float) -> np.ndarray:
    """(T, 3) unit vectors: a = frontal angle from hanging down (outwards positive), b = angle
    towards the camera. Axes: x right in the image, y down, z towards the camera."""
    a, b = np.broadcast_arrays(a, b)
    return np.stack([side * np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)], -1)


def _pose(body: dict, p: dict, facing: np.ndarray, root_x: np.ndarray, floor_y: float):
    """Forward kinematics + orthographic camera -> (xy (T,24,2), depth (T,24), visible (T,18))."""
    n = len(facing)
    pts = {k: np.zeros((n, 3)) for k in _POINTS}
    neck = np.array([0.0, -body["torso"], 0.0])
    pts["neck"][:] = neck
    for side, s in (("r", -1.0), ("l", 1.0)):  # the person's right is image-left (facing us)
        sh = neck + np.array([s * body["shoulder"], 0.02 * body["h"], 0.0])
        upper = _dirs(p[f"{side}_sh_a"], p[f"{side}_sh_b"], s)
        lower = _dirs(p[f"{side}_sh_a"] + p[f"{side}_el"], p[f"{side}_sh_b"], s)
        pts[f"{side}_shoulder"][:] = sh
        pts[f"{side}_elbow"] = sh + body["upper_arm"] * upper
        pts[f"{side}_wrist"] = pts[f"{side}_elbow"] + body["forearm"] * lower
        pts[f"{side}_hand"] = pts[f"{side}_wrist"] + body["hand"] * lower
        hip = np.array([s * body["hip"], 0.0, 0.0])
        thigh = _dirs(p[f"{side}_hip_a"], p[f"{side}_hip_b"], s)
        shin = _dirs(0.6 * p[f"{side}_hip_a"], p[f"{side}_hip_b"] - p[f"{side}_knee"], s)
        pts[f"{side}_hip"][:] = hip
        pts[f"{side}_knee"] = hip + body["thigh"] * thigh
        pts[f"{side}_ankle"] = pts[f"{side}_knee"] + body["shin"] * shin
        pts[f"{side}_toe"] = pts[f"{side}_ankle"] + body["foot"] * np.array([0.0, 0.35, 0.94])
    _place_head(pts, body, p["head_tilt"])
    upper_body = [k for k in _POINTS if k not in _LOWER_BODY]
    for k in upper_body:  # lean the upper body about the pelvis (frontal plane)
        pts[k] = _rotate_xy(pts[k], p["lean"])
    local = np.stack([pts[k] for k in _POINTS], axis=1)  # (T, 24, 3)
    c, s_ = np.cos(facing)[:, None], np.sin(facing)[:, None]
    x = local[..., 0] * c + local[..., 2] * s_  # (T, 24)
    depth = -local[..., 0] * s_ + local[..., 2] * c
    y = local[..., 1]
    feet = [_IDX[k] for k in ("r_ankle", "l_ankle", "r_toe", "l_toe")]
    lowest = y[:, feet].max(axis=1) + 0.5 * body["w_shin"]  # sole of the lowest foot
    pelvis_y = floor_y - lowest - p["jump"] * body["h"]  # (T,) feet on the floor
    pelvis_x = root_x + p["root_dx"] * body["h"]
    xy = np.stack([x + pelvis_x[:, None], y + pelvis_y[:, None]], axis=-1)
    return xy, depth, _visibility(depth, body["head_r"])


_LOWER_BODY = ("pelvis", "r_hip", "l_hip", "r_knee", "l_knee", "r_ankle", "l_ankle",
               "r_toe", "l_toe")  # fmt: skip


def _rotate_xy(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(T, 3) points rotated in the image plane by (T,) angles (positive leans to +x)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([v[:, 0] * c - v[:, 1] * s, v[:, 0] * s + v[:, 1] * c, v[:, 2]], -1)


def _place_head(pts: dict, body: dict, tilt: np.ndarray) -> None:
    """Head centre above the neck (tilted sideways) and the face keypoints on it."""
    r = body["head_r"]
    centre = np.array([0.0, -(body["neck"] + r), 0.0])
    pts["head"] = pts["neck"] + _rotate_xy(np.broadcast_to(centre, pts["neck"].shape), tilt)
    face = {  # offsets on a head looking at the camera (+z)
        "nose": (0.0, 0.3, 0.95), "r_eye": (-0.38, -0.08, 0.85), "l_eye": (0.38, -0.08, 0.85),
        "r_ear": (-0.95, 0.0, -0.1), "l_ear": (0.95, 0.0, -0.1),
    }  # fmt: skip
    for name, off in face.items():
        off3 = np.broadcast_to(np.array(off) * r, pts["neck"].shape)
        pts[name] = pts["head"] + _rotate_xy(off3, tilt)


def _visibility(depth: np.ndarray, head_r: float) -> np.ndarray:
    """(T, 18) OpenPose-like detection: face points vanish when turned away from the camera."""
    vis = np.ones(depth.shape[:1] + (len(KEYPOINT_NAMES),), dtype=bool)
    rel = depth - depth[:, [_IDX["head"]]]  # (T, 24) depth relative to the head centre
    for name, limit in (("nose", -0.2), ("r_eye", 0.1), ("l_eye", 0.1), ("r_ear", -0.5),
                        ("l_ear", -0.5)):  # fmt: skip
        vis[:, _IDX[name]] = rel[:, _IDX[name]] > limit * head_r
    return vis


# ----------------------------------------------------------------------------- appearance


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> RGB bytes."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)


_SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
         (92, 58, 30), (234, 192, 160))  # fmt: skip


def _sample_look(rng: np.random.Generator) -> dict:
    """Per-video colours of the person (and the room hues, kept apart from the shirt)."""
    shirt_h = rng.uniform()
    wall_h = (shirt_h + rng.uniform(0.25, 0.75)) % 1.0  # the shirt stands out from the wall
    skin = np.array(_SKIN[rng.integers(len(_SKIN))]) * rng.uniform(0.92, 1.05)
    hair = _hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.5))
    return {
        "shirt": _hsv(shirt_h, rng.uniform(0.55, 0.95), rng.uniform(0.6, 0.95)),
        "trousers": _hsv(rng.uniform(), rng.uniform(0.3, 0.8), rng.uniform(0.18, 0.5)),
        "skin": tuple(int(c) for c in np.clip(skin, 0, 255)),
        "hair": hair,
        "shoes": _hsv(rng.uniform(), rng.uniform(0, 0.3), float(rng.choice([0.1, 0.9]))),
        "wall_h": wall_h,
    }


def _make_background(rng, height: int, width: int, floor_y: float) -> Image.Image:
    """(2H, 2W) static room: textured wall with a few panels, perspective floor."""
    hh, ww = height * _SS, width * _SS
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64) / _SS  # (2H, 2W) 1x pixel coords
    horizon = floor_y - height * rng.uniform(0.1, 0.2)
    hue = rng.uniform()
    wall = _gradient(rng, yy / height, xx / width, hue, sat=(0.1, 0.45), val=(0.45, 0.9))
    wall += _texture(rng, yy, xx, height)[..., None]
    _add_panels(rng, wall, height, width, horizon)
    floor = _floor(rng, yy, xx, horizon, height, width)
    img = np.where((yy < horizon)[..., None], wall, floor)
    board = (yy >= horizon) & (yy < horizon + max(1.0, 0.03 * height))  # skirting board
    img[board] = np.array(_hsv(hue, 0.2, rng.uniform(0.2, 0.95))) * 1.0
    img += rng.normal(0.0, 2.5, img.shape)  # fine grain, so no region is perfectly flat
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _gradient(rng, v: np.ndarray, u: np.ndarray, hue: float, sat, val) -> np.ndarray:
    """(2H, 2W, 3) blend of two related colours along a random, mostly vertical direction."""
    c0 = np.array(_hsv(hue, rng.uniform(*sat), rng.uniform(*val)), dtype=np.float64)
    c1 = np.array(_hsv((hue + rng.uniform(-0.08, 0.08)) % 1, rng.uniform(*sat),
                       rng.uniform(*val)), dtype=np.float64)  # fmt: skip
    angle = rng.uniform(-0.9, 0.9)
    s = v * math.cos(angle) + u * math.sin(angle)  # (2H, 2W)
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-9)
    return c0 * (1 - s[..., None]) + c1 * s[..., None]


def _texture(rng, yy: np.ndarray, xx: np.ndarray, height: int) -> np.ndarray:
    """(2H, 2W) brightness offsets: stripes, tiles, diagonal stripes or soft blobs."""
    kind = rng.integers(4)
    period = height * rng.uniform(0.1, 0.3)
    amp = rng.uniform(8, 20)
    if kind == 0:  # wallpaper stripes
        return amp * np.sin(2 * np.pi * xx / period)
    if kind == 1:  # tiles with grout lines
        gy, gx = (yy % period) < 1.0, (xx % period) < 1.0
        return np.where(gy | gx, -2.0 * amp, amp * 0.2 * np.sin(xx // period + yy // period))
    if kind == 2:  # diagonal stripes
        return amp * np.sign(np.sin(2 * np.pi * (xx + yy) / period)) * 0.6
    return amp * 1.5 * _smooth_noise(rng, yy.shape, cells=rng.integers(4, 9))


def _smooth_noise(rng, shape: tuple, cells: int) -> np.ndarray:
    """(shape) low-frequency noise in about [-1, 1]: a random grid upsampled bicubically."""
    grid = rng.uniform(0, 255, (cells, cells * 2)).astype(np.uint8)
    up = Image.fromarray(grid, "L").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64) / 127.5 - 1.0


def _add_panels(rng, wall: np.ndarray, height: int, width: int, horizon: float) -> None:
    """Paint 1-3 framed rectangles (windows/posters) onto the wall in place."""
    for _ in range(int(rng.integers(1, 4))):
        w, h = width * rng.uniform(0.08, 0.22), height * rng.uniform(0.12, 0.35)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0.05 * height, max(1, horizon - h))
        x0, y0, x1, y1 = (int(_SS * c) for c in (x0, y0, x0 + w, min(y0 + h, horizon - 1)))
        if y1 <= y0 + 2 or x1 <= x0 + 2:
            continue
        frame = np.array(_hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.1, 0.9)))
        fill = np.array(_hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 1.0)))
        wall[y0:y1, x0:x1] = frame
        b = max(1, _SS * height // 64)
        wall[y0 + b : y1 - b, x0 + b : x1 - b] = fill + 12 * np.sin(
            np.arange(y1 - y0 - 2 * b)[:, None, None] / 3.0
        )  # a little shading inside


def _floor(rng, yy, xx, horizon: float, height: int, width: int) -> np.ndarray:
    """(2H, 2W, 3) floor with planks: rows getting wider towards the camera, converging seams."""
    hue = rng.uniform()
    base = _gradient(rng, yy / height, xx / width, hue, sat=(0.2, 0.55), val=(0.3, 0.65))
    depth = np.maximum(yy - horizon, 0.0) + 1.0  # grows towards the viewer
    rows = np.sin(np.log(depth) * rng.uniform(5, 9))
    vanishing = width * rng.uniform(0.3, 0.7)
    seams = np.sin((xx - vanishing) / depth * rng.uniform(2.0, 4.0))
    pattern = rng.uniform(6, 14) * (0.6 * rows + 0.4 * np.sign(seams))
    if rng.integers(2):  # checker instead of planks
        pattern = rng.uniform(10, 22) * np.sign(rows * seams)
    return base + pattern[..., None]


# ------------------------------------------------------------------------------ rendering


def render_label(video: VideoPlan, i: int) -> Image.Image:
    """(H, W) RGB OpenPose-style skeleton of frame i on black."""
    size = (video.width * _SS, video.height * _SS)
    img = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(img)
    xy, vis = video.xy[i] * _SS, video.visible[i]
    stick = _SS * max(2, round(0.045 * video.height))
    radius = _SS * max(1.5, 0.03 * video.height)
    for k, (a, b) in enumerate(LIMBS):
        if vis[a] and vis[b]:
            _capsule(draw, xy[a], xy[b], stick, PALETTE[k])
    for k in range(len(KEYPOINT_NAMES)):
        if vis[k]:
            _disc(draw, xy[k], radius, PALETTE[k])
    return img.reduce(_SS)


def render_rgb(video: VideoPlan, i: int) -> Image.Image:
    """(H, W) RGB frame i: the static room, a floor shadow and the person, far parts first."""
    img = video.background.copy()
    draw = ImageDraw.Draw(img)
    xy, depth = video.xy[i] * _SS, video.depth[i] * _SS
    _shadow(draw, video, xy)
    for _, paint in sorted(_parts(video, xy, depth, i), key=lambda part: part[0]):
        paint(draw)
    return img.reduce(_SS)


def _shadow(draw: ImageDraw.ImageDraw, video: VideoPlan, xy: np.ndarray) -> None:
    """A dark ellipse on the floor under the person, smaller when in the air."""
    feet_y = xy[[_IDX["r_toe"], _IDX["l_toe"]], 1].max() / _SS
    lift = max(0.0, video.floor_y - feet_y - 0.5 * video.body["w_shin"])
    rx = _SS * video.body["h"] * 0.22 / (1 + lift / video.body["h"] * 4)
    ry = _SS * video.body["h"] * 0.035
    cx, cy = xy[_IDX["pelvis"], 0], _SS * video.floor_y
    shade = video.background.getpixel((int(min(max(cx, 0), _SS * video.width - 1)),
                                       int(min(cy, _SS * video.height - 1))))  # fmt: skip
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(c * 0.6) for c in shade))


def _parts(video: VideoPlan, xy: np.ndarray, depth: np.ndarray, i: int) -> list:
    """[(depth, paint(draw))] for torso, head, arms and legs of frame i (2x coordinates)."""
    body, look, s = video.body, video.look, _SS
    p = {name: xy[_IDX[name]] for name in _POINTS}
    d = {name: depth[_IDX[name]] for name in _POINTS}
    parts = []
    for side in ("r", "l"):
        arm = [(p[f"{side}_shoulder"], p[f"{side}_elbow"], s * body["w_upper_arm"], look["shirt"]),
               (p[f"{side}_elbow"], p[f"{side}_wrist"], s * body["w_forearm"], look["skin"]),
               (p[f"{side}_wrist"], p[f"{side}_hand"], s * body["w_forearm"] * 1.15,
                look["skin"])]  # fmt: skip
        leg = [
            (p[f"{side}_hip"], p[f"{side}_knee"], s * body["w_thigh"], look["trousers"]),
            (p[f"{side}_knee"], p[f"{side}_ankle"], s * body["w_shin"], look["trousers"]),
            (p[f"{side}_ankle"], p[f"{side}_toe"], s * body["w_shin"], look["shoes"]),
        ]
        arm_d = (d[f"{side}_elbow"] + d[f"{side}_wrist"]) / 2 + 0.02 * s * body["h"]
        leg_d = (d[f"{side}_knee"] + d[f"{side}_ankle"]) / 2 - 0.06 * s * body["h"]
        parts.append((arm_d, _chain_painter(arm)))
        parts.append((leg_d, _chain_painter(leg)))
    parts.append((0.0, lambda draw: _paint_torso(draw, p, s * body["w_torso"], look["shirt"])))
    head_d = d["head"] + 0.01 * s * body["h"]
    parts.append((head_d, lambda draw: _paint_head(draw, p, video, i)))
    return parts


def _chain_painter(segments: list) -> Callable:
    """A painter drawing connected rounded segments [(a, b, width, colour)] in order."""

    def paint(draw: ImageDraw.ImageDraw) -> None:
        for a, b, w, colour in segments:
            _capsule(draw, a, b, w, colour)

    return paint


def _paint_torso(draw, p: dict, width: float, colour) -> None:
    """Torso: the shoulder-hip quad plus a thick spine so it keeps volume when side-on."""
    quad = [p["r_shoulder"], p["l_shoulder"], p["l_hip"], p["r_hip"]]
    draw.polygon([tuple(map(float, q)) for q in quad], fill=colour)
    _capsule(draw, p["neck"] + (p["pelvis"] - p["neck"]) * 0.1, p["pelvis"], width, colour)
    for q in quad:
        _disc(draw, q, width * 0.35, colour)


def _paint_head(draw, p: dict, video: VideoPlan, i: int) -> None:
    """Neck, hair-coloured head, and a skin face that slides sideways as the head turns."""
    body, look = video.body, video.look
    r = _SS * body["head_r"]
    _capsule(draw, p["neck"], p["head"], _SS * body["w_neck"], look["skin"])
    cx, cy = p["head"]
    draw.ellipse([cx - 0.88 * r, cy - 1.05 * r, cx + 0.88 * r, cy + r], fill=look["hair"])
    c, s = math.cos(video.facing[i]), math.sin(video.facing[i])
    if c > -0.15:  # the face is visible unless the head looks away
        fx, fy = cx + 0.3 * r * s, cy + 0.22 * r
        rx, ry = 0.7 * r * (0.45 + 0.55 * abs(c)), 0.78 * r
        draw.ellipse([fx - rx, fy - ry, fx + rx, fy + ry], fill=look["skin"])


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, colour) -> None:
    """A thick line with round caps from a to b."""
    draw.line([(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))], fill=colour,
              width=max(1, int(round(width))))  # fmt: skip
    _disc(draw, a, width / 2, colour)
    _disc(draw, b, width / 2, colour)


def _disc(draw: ImageDraw.ImageDraw, c, radius: float, colour) -> None:
    """A filled circle of the given radius around c."""
    x, y = float(c[0]), float(c[1])
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
