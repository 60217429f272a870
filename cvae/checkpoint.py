"""Checkpoints are plain data (state_dicts, the config, counters): loaded with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cvae.config import Config
from cvae.errors import CvaeError

FORMAT = "cvae-checkpoint/1"
# A Ray checkpoint is a directory holding this file; cvae-test accepts either.
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)
    return path


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A .pt file, a Ray checkpoint directory, a run directory or a sweep's `best/` folder."""
    path = Path(path)
    if path.is_dir():
        for candidate in (CHECKPOINT_FILE, "best.pt", "checkpoints/best.pt"):
            if (path / candidate).is_file():
                return path / candidate
        raise CvaeError(f"{path}: no {CHECKPOINT_FILE}, best.pt or checkpoints/best.pt in it")
    if not path.is_file():
        raise CvaeError(f"{path}: checkpoint not found")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint; any problem is one CvaeError naming the file."""
    path = resolve_checkpoint_path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CvaeError(f"{path}: not a readable checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CvaeError(f"{path}: not a cvae checkpoint (no '{FORMAT}' format tag)")
    for key in ("model", "config", "epoch"):
        if key not in state:
            raise CvaeError(f"{path}: checkpoint has no '{key}' entry")
    return state


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    return Config.from_dict(state["config"], source=f"{path} (stored config)")
