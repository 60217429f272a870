"""Open what `data.root` points at: a lab-layout folder or a Parquet pack of clips."""

from __future__ import annotations

from pathlib import Path

import torch

from cvae import parquet
from cvae.config import Config
from cvae.data import ClipDataset, load_video
from cvae.errors import DataError


def is_pack(root: str | Path) -> bool:
    root = Path(root)
    return (root / "meta.json").is_file() or (
        root.name in ("train", "val") and (root.parent / "meta.json").is_file()
    )


def check_root(cfg: Config) -> Path:
    """The data folder, or one clear error (with the command that makes the default data)."""
    root = Path(cfg.data.root)
    if not root.exists():
        hint = f"; make the embedded synthetic set with: cvae-data synth --out {root}"
        raise DataError(f"{root}: data folder not found{hint}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if not any(root.iterdir()):
        raise DataError(f"{root}: data folder is empty")
    return root


def train_dataset(cfg: Config) -> torch.utils.data.Dataset:
    """Training clips (items: frames, poses uint8 [T,3,H,W], clip_id), `data.partial` applied."""
    root = check_root(cfg)
    d = cfg.data
    if is_pack(root):
        parquet.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
        dataset = parquet.ParquetClipDataset(root, "train")
        keep = max(1, int(len(dataset) * d.partial))
        return torch.utils.data.Subset(dataset, range(keep)) if keep < len(dataset) else dataset
    return ClipDataset(root, "train", d.clip_len, d.height, d.width, d.partial)


def val_video(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation video, capped at `validation.val_len`: (frames, poses) uint8 [T,3,H,W]."""
    root = check_root(cfg)
    d = cfg.data
    if is_pack(root):
        parquet.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
        frames, poses = parquet.load_val_video(root)
        n = cfg.validation.val_len
        return frames[:n], poses[:n]
    return load_video(root, "val", d.height, d.width, max_len=cfg.validation.val_len)
