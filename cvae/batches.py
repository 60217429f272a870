"""What the training loop consumes, whoever makes it: a batch of clips, each epoch's batches, and
the per-epoch seeds that make a resumed run replay the same draws.

The data sources (`cvae.datasets` for one process, `cvae.shares` for a DDP rank) produce these;
`cvae.training.fit` consumes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

# (frames uint8 [B,T,3,H,W], poses uint8 [B,T,3,H,W], clip ids int64 [B])
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Every epoch (and worker) gets its own seed, so a resumed run replays the same draws."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31 - 1)


@dataclass
class EpochData:
    """What a worker trains on: `batches(epoch)` gives that epoch's batches (already sharded and
    shuffled), `steps_per_epoch` how many it yields (for progress bars and step caps)."""

    batches: Callable[[int], Iterator[Batch]]
    steps_per_epoch: int

    def wrapped(self, wrap: Callable[[Iterator[Batch], int], Iterator[Batch]]) -> EpochData:
        """The same data with each epoch's iterator passed through `wrap(batches, epoch)`:
        the seam where tests and benchmarks watch, time or interrupt what a worker trains on."""
        return EpochData(lambda epoch: wrap(self.batches(epoch), epoch), self.steps_per_epoch)
