"""A DDP rank's share of each epoch's training clips, from a Parquet pack (`cvae.packs`).

Two ways, chosen by the size of the decoded training split against `data.resident_mb`:

- resident (`ResidentClips`): the clips are decoded once per run and kept on the rank's device
  (GPU memory, or RAM on a CPU worker). Each epoch deals clip positions to the ranks (a seeded
  permutation dealt round-robin, anew every epoch, the same on every rank) and gathers each
  batch by index on the device: nothing is read, decoded or copied from the host between
  epochs. The uint8 frames of the default synthetic set are ~25 MB; a pack of 10,000 clips of
  16 frames at 32x64 is ~1.9 GB with its poses.
- streamed (`streamed_epochs`): each epoch deals the pack's Parquet files to the ranks (seeded,
  anew every epoch) and a rank reads and decodes only its own files, so no rank reads what it
  throws away; every rank trains the same number of clips (the fewest any deal can give).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cvae.batches import Batch, EpochData, epoch_seed
from cvae.config import Config
from cvae.errors import DataError

MB = 2**20


def decoded_bytes(num_clips: int, cfg: Config) -> int:
    """Bytes of `num_clips` training clips decoded: frames and poses, uint8 [T,3,H,W] each."""
    d = cfg.data
    return 2 * num_clips * d.clip_len * 3 * d.height * d.width


def fits_resident(num_clips: int, cfg: Config) -> bool:
    """Whether the decoded clips fit the budget `data.resident_mb` (0: never resident)."""
    return decoded_bytes(num_clips, cfg) <= cfg.data.resident_mb * MB


def deal(num_items: int, world: int, rank: int, seed: int | None) -> np.ndarray:
    """The items (0..num_items-1) rank `rank` of `world` takes in one epoch: a seeded
    permutation dealt round-robin (a new seed each epoch deals anew), or the items in order
    without a seed. Every rank gets num_items // world (DDP needs the same step count on every
    rank); the few left over sit this epoch out."""
    order = np.arange(num_items) if seed is None else \
        np.random.default_rng(seed).permutation(num_items)
    return order[rank::world][: num_items // world]


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


@dataclass
class ResidentClips:
    """The decoded training clips of a pack, in clip-id order, kept on one device."""

    frames: torch.Tensor  # uint8 [N,T,3,H,W] on the device
    poses: torch.Tensor  # uint8 [N,T,3,H,W] on the device
    ids: torch.Tensor  # int64 [N] on the CPU, ascending

    @classmethod
    def gather(cls, batches: Iterable[Batch], device: torch.device) -> ResidentClips:
        """Every batch of a pass over the pack, in clip-id order, moved to `device` once."""
        parts = list(batches)
        if not parts:
            raise DataError("the training data gave no clip")
        ids = torch.cat([p[2] for p in parts])
        order = torch.argsort(ids)
        if bool((ids[order][1:] == ids[order][:-1]).any()):
            raise DataError("the training data holds a clip id twice")
        frames, poses = (torch.cat([p[k] for p in parts])[order] for k in (0, 1))
        return cls(frames.to(device), poses.to(device), ids[order])

    @property
    def nbytes(self) -> int:
        return self.frames.nbytes + self.poses.nbytes

    def epochs(self, cfg: Config, rank: int, world: int) -> EpochData:
        """This rank's batches of each epoch: its dealt clips, in a seeded order (per epoch and
        rank) when data.shuffle, gathered by index on the device."""
        n, batch, shuffle = len(self.ids), cfg.train.batch_size, cfg.data.shuffle

        def batches(epoch: int) -> Iterator[Batch]:
            seed = epoch_seed(cfg.run.seed + 2, epoch) if shuffle else None
            mine = deal(n, world, rank, seed).tolist()
            if shuffle:
                random.Random(epoch_seed(cfg.run.seed + 2, epoch, rank)).shuffle(mine)
            for group in batched(mine, batch):
                index = torch.tensor(group)
                on_device = index.to(self.frames.device)
                yield self.frames[on_device], self.poses[on_device], self.ids[index]

        return EpochData(batches, math.ceil((n // world) / batch))


def streamed_epochs(dataset, cfg: Config, rank: int, world: int, *,
                    pin_memory: bool = False) -> EpochData:
    """This rank's batches of each epoch, read from its own Parquet files of the pack.

    dataset: a `cvae.packs.ParquetClipDataset`. Each epoch the files are dealt to the ranks
    anew (seeded when data.shuffle); a rank reads its files in turn, shuffles their clips
    through a buffer of data.shuffle_buffer clips and trains on as many clips as the smallest
    share any deal can give, so every rank takes the same number of steps."""
    files = dataset.shard_ranges()
    if len(files) < world:
        raise DataError(f"{dataset.root}: {len(files)} Parquet file(s) for {world} workers: "
                        "repack with fewer rows per file (cvae-data pack --rows-per-file), or "
                        "raise data.resident_mb so the clips are kept in memory")
    sizes = sorted(len(r) for r in files)
    clips = sum(sizes[: len(files) // world])  # the smallest share of any deal
    batch = cfg.train.batch_size

    def batches(epoch: int) -> Iterator[Batch]:
        seed = epoch_seed(cfg.run.seed + 2, epoch) if cfg.data.shuffle else None
        mine = (i for f in deal(len(files), world, rank, seed) for i in files[f])
        if cfg.data.shuffle:
            rng = random.Random(epoch_seed(cfg.run.seed + 2, epoch, rank))
            mine = buffer_shuffle(mine, max(cfg.data.shuffle_buffer, batch), rng)
        for group in batched(itertools.islice(mine, clips), batch):
            items = [dataset[i] for i in group]
            frames, poses = (torch.stack([item[k] for item in items]) for k in (0, 1))
            if pin_memory:
                frames, poses = frames.pin_memory(), poses.pin_memory()
            yield frames, poses, torch.tensor([item[2] for item in items])

    return EpochData(batches, math.ceil(clips / batch))


def buffer_shuffle(items: Iterable[int], size: int, rng: random.Random) -> Iterator[int]:
    """Shuffle a stream through a buffer of `size` items (memory stays bounded)."""
    buffer: list[int] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer
