"""The data entry point: open what `data.root` points at, a lab-layout folder
(`cvae.lab_folder`) or a Parquet pack of clips (`cvae.packs`), as training clips, the validation
video, and each epoch's shuffled batches for a single process.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from cvae import packs, storage
from cvae.config import Config
from cvae.errors import DataError
from cvae.lab_folder import ClipDataset, load_video
from cvae.training import EpochData, epoch_seed

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


def val_video(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation video, capped at `validation.val_len`: (frames, poses) uint8 [T,3,H,W]."""
    root = check_root(cfg)
    d = cfg.data
    if is_pack(root):
        packs.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
        frames, poses = packs.load_val_video(root)
        n = cfg.validation.val_len
        return frames[:n], poses[:n]
    return load_video(root, "val", d.height, d.width, max_len=cfg.validation.val_len)


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


# ---- one worker's share of an epoch (DDP): which clips, in which order ----

def rank_clips(num_clips: int, world: int, rank: int, seed: int | None) -> np.ndarray:
    """The clip ids (0..num_clips-1) rank `rank` of `world` trains on in one epoch: a seeded
    permutation dealt round-robin (pass a new seed each epoch, so every epoch deals the clips
    anew), or the clips in order without a seed. Every rank gets num_clips // world clips (DDP
    needs the same step count on every rank); the few left over sit this epoch out."""
    order = np.arange(num_clips) if seed is None else \
        np.random.default_rng(seed).permutation(num_clips)
    return order[rank::world][: num_clips // world]


def buffer_shuffle(items: Iterable[T], size: int, rng: random.Random) -> Iterator[T]:
    """Shuffle a stream through a buffer of `size` items (memory stays bounded)."""
    buffer: list[T] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
