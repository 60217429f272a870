"""The data entry point: open what `data.root` points at, a lab-layout folder
(`cvae.lab_folder`) or a Parquet pack of clips (`cvae.packs`), as training clips, the validation
video, and each epoch's shuffled batches for a single process.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypeVar

import torch

from cvae import packs, storage
from cvae.batches import EpochData, epoch_seed
from cvae.config import Config
from cvae.errors import DataError
from cvae.lab_folder import ClipDataset, load_videos

T = TypeVar("T")


def is_pack(root: str | Path) -> bool:
    """Whether `root` (a path or a URI) is a Parquet pack or one of its split folders."""
    return storage.exists(storage.join(packs.pack_root(root), "meta.json"))


def check_root(cfg: Config) -> str | Path:
    """The data folder, or one clear error (with the command that makes the default data).
    A URI must name a pack: lab-layout folders are read from a local disk."""
    if storage.is_uri(cfg.data.root):
        if not is_pack(cfg.data.root):
            raise DataError(f"{cfg.data.root}: no clip pack there (make one with: cvae-data "
                            f"pack --root DATA --out {cfg.data.root})")
        return cfg.data.root
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
        packs.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
        dataset = packs.ParquetClipDataset(root, "train")
        keep = max(1, int(len(dataset) * d.partial))
        return torch.utils.data.Subset(dataset, range(keep)) if keep < len(dataset) else dataset
    return ClipDataset(root, "train", d.clip_len, d.height, d.width, d.partial)


def val_videos(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation videos, capped at `validation.val_len` frames: (frames, poses) uint8
    [V,T,3,H,W]."""
    root = check_root(cfg)
    d = cfg.data
    if is_pack(root):
        packs.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
        frames, poses = packs.load_val_videos(root)
        n = cfg.validation.val_len
        return frames[:, :n], poses[:, :n]
    return load_videos(root, "val", d.height, d.width, max_len=cfg.validation.val_len)


def describe_videos(frames: torch.Tensor) -> str:
    """'validation video 630 frames' or 'validation videos 4 x 630 frames' for [V,T,3,H,W]."""
    count, length = frames.shape[:2]
    if count == 1:
        return f"validation video {length} frames"
    return f"validation videos {count} x {length} frames"


def loader_epochs(dataset: torch.utils.data.Dataset, cfg: Config,
                  device: torch.device) -> EpochData:
    """Shuffled DataLoader batches, reseeded per epoch so a resumed run sees the same order."""
    batch = cfg.train.batch_size

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(epoch_seed(cfg.run.seed + 2, epoch))
        shards = _shard_ranges(dataset) if cfg.data.shuffle else None
        sampler = packs.ShardShuffleSampler(shards, generator) if shards else None
        return iter(torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=cfg.data.shuffle and sampler is None,
            sampler=sampler, generator=generator,
            num_workers=cfg.data.loader_workers, pin_memory=device.type == "cuda",
            persistent_workers=False,
        ))

    return EpochData(batches, math.ceil(len(dataset) / batch))


def _shard_ranges(dataset) -> list[range] | None:
    """A Parquet dataset's (or its leading `data.partial` subset's) shard index ranges: shuffled
    shard by shard, each shard is decoded once per epoch."""
    if isinstance(dataset, packs.ParquetClipDataset):
        return dataset.shard_ranges()
    subset = isinstance(dataset, torch.utils.data.Subset)
    if subset and isinstance(dataset.dataset, packs.ParquetClipDataset) and \
            dataset.indices == range(len(dataset.indices)):
        n = len(dataset.indices)
        return [range(r.start, min(r.stop, n)) for r in dataset.dataset.shard_ranges()
                if r.start < n]
    return None
