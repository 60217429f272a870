"""Checkpoints are plain data (state_dicts, the config, counters): loaded with weights_only=True."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from cvae.config import Config, ModelConfig
from cvae.errors import CvaeError
from cvae.storage import atomic_path

FORMAT = "cvae-checkpoint/1"
# A Ray checkpoint is a directory holding this file; cvae-test accepts either.
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


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


def last_checkpoint(out: str | Path) -> Path:
    return Path(out) / "checkpoints" / "last.pt"


def resume_state_for(cfg: Config, resume: bool) -> dict[str, Any] | None:
    """The checkpoint a run continues from (`--resume`), or None for a fresh run.

    A fresh run refuses a folder that already holds one, so nothing is overwritten by accident.
    """
    last = last_checkpoint(cfg.run.out)
    if not resume:
        if last.exists():
            raise CvaeError(f"{cfg.run.out} already holds a run ({last}): pass --resume to "
                            "continue it, or choose another --out")
        return None
    if not last.exists():
        raise CvaeError(f"--resume: {last} not found (nothing to resume in {cfg.run.out})")
    state = load_checkpoint(last)
    check_same_model(state, cfg, f"--resume: {last}")
    return state


def check_same_model(state: dict[str, Any], cfg: Config, source: str) -> None:
    """The checkpoint's model dims are the config's (model.init and the mask's initial bias do
    not matter: the weights come from the checkpoint). A key an older checkpoint lacks counts
    as its default."""
    stored = {**dataclasses.asdict(ModelConfig()), **state["config"].get("model", {})}
    for key, value in cfg.model.__dict__.items():
        if key not in ("init", "blend_mask_init") and stored.get(key) != value:
            raise CvaeError(f"{source} has model.{key} = {stored.get(key)!r}, "
                            f"the config has {value!r}")


def initial_weights(cfg: Config) -> dict[str, Any] | None:
    """The model state_dict `train.init_from` names, checked against the config's model; None
    when it names nothing. Launchers call it before starting workers, so a bad path fails early.
    """
    if not cfg.train.init_from:
        return None
    try:
        path = resolve_checkpoint_path(cfg.train.init_from)
        state = load_checkpoint(path)
    except CvaeError as err:
        raise CvaeError(f"train.init_from: {err}") from None
    check_same_model(state, cfg, f"train.init_from: {path}")
    return state["model"]
