"""Shared fixtures: tiny lab-layout folders of random PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, size: tuple[int, int] = (20, 10), mode: str = "RGB",
              seed: int = 0) -> Path:
    """A random image of ``size`` (W, H) in ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return path


def build_lab(root: Path, *, train: tuple[int, ...] = (5, 7), val: int = 6,
              test: tuple[int, ...] = (3, 4), manifest: bool = True,
              size: tuple[int, int] = (20, 10)) -> Path:
    """A lab-layout folder: train videos of the given lengths (frame numbers run on across
    videos), one val video, test sequences with the given pose counts; (W, H) images."""
    seed = 0

    def pair(split: str, n: int) -> None:
        nonlocal seed
        for d in ("img", "label"):
            write_png(root / split / f"{split}_{d}" / f"frame{n}.png", size, seed=seed)
            seed += 1

    first, videos = 0, []
    for vid, n in enumerate(train):
        for f in range(first, first + n):
            pair("train", f)
        videos.append({"video_id": vid, "first_frame": first, "num_frames": n})
        first += n
    for f in range(val):
        pair("val", f)
    if manifest:
        w, h = size
        for split, vids in (("train", videos),
                            ("val", [{"video_id": 0, "first_frame": 0, "num_frames": val}])):
            doc = {"format": "cvae-synth/1", "seed": 0, "height": h, "width": w, "videos": vids}
            (root / split / "manifest.json").write_text(json.dumps(doc))
    for k, n in enumerate(test):
        for f in range(2):  # frame1 must be ignored: only frame0 is used
            write_png(root / "test" / "test_img" / str(k) / f"frame{f}.png", size, seed=seed)
            seed += 1
        for f in range(n):
            write_png(root / "test" / "test_label" / str(k) / f"frame{f}.png", size, seed=seed)
            seed += 1
    return root


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Two train videos (5 + 7 frames) with a manifest, 6 val frames, 2 test sequences."""
    return build_lab(tmp_path / "lab")


@pytest.fixture
def make_lab():
    """The ``build_lab`` builder, for tests that need another shape of folder."""
    return build_lab


@pytest.fixture
def png():
    """The ``write_png`` helper."""
    return write_png
