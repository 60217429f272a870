"""KL-weight (beta) annealing and teacher-forcing ratio: pure functions of the epoch.

Epochs count from 0. The objects only remember the epoch, so saving and restoring them with a
checkpoint is saving one integer.
"""

from __future__ import annotations

from dataclasses import dataclass

from cvae.config import KL_ANNEAL_TYPES


def kl_beta(epoch: int, anneal_type: str, cycle: int, ratio: float, warmup: int = 0) -> float:
    """The KL weight at `epoch`.

    The first `warmup` epochs are at 0 whatever the type; the schedule starts after them, its
    epoch 0 being epoch `warmup`:
    Monotonic: rises linearly from 0 to 1 over the first cycle*ratio epochs, then stays 1.
    Cyclical: in each cycle of `cycle` epochs, rises over the first ratio*cycle epochs, then 1.
    None: always 1. A ramp of length 0 (ratio 0) means beta is 1 from the start.
    """
    if anneal_type not in KL_ANNEAL_TYPES:
        raise ValueError(f"unknown kl_anneal_type {anneal_type!r}")
    if epoch < warmup:
        return 0.0
    epoch -= warmup
    if anneal_type == "None":
        return 1.0
    if anneal_type == "Monotonic":
        position = epoch
    elif anneal_type == "Cyclical":
        position = epoch % cycle
    ramp = cycle * ratio
    if ramp <= 0:
        return 1.0
    return min(1.0, position / ramp)


def teacher_forcing_ratio(epoch: int, start: float, decay_start: int, decay_step: float) -> float:
    """tfr at (0-based) `epoch`, updated after each epoch: once `decay_start`
    epochs are done (and at least one), each further epoch starts `decay_step` lower; >= 0.
    With the defaults (1.0, 10, 0.1): epochs 0..9 use 1.0, epoch 10 uses 0.9, epoch 19 uses 0.0."""
    decayed_epochs = max(0, epoch - max(decay_start, 1) + 1)
    return max(0.0, start - decay_step * decayed_epochs)


class EpochCounter:
    """The only state a schedule has: the epoch. Saved and restored with a checkpoint."""

    epoch: int

    def update(self) -> None:
        self.epoch += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])


@dataclass
class KLAnnealing(EpochCounter):
    anneal_type: str
    cycle: int
    ratio: float
    weight: float = 1.0  # beta's top value (train.kl_weight)
    warmup: int = 0  # epochs at beta 0 before the schedule starts (train.kl_warmup)
    epoch: int = 0

    @property
    def beta(self) -> float:
        return self.weight * kl_beta(self.epoch, self.anneal_type, self.cycle, self.ratio,
                                     self.warmup)


# The same shape as KLAnnealing on purpose: each schedule names its own parameters.
@dataclass
class TeacherForcing(EpochCounter):
    start: float
    decay_start: int
    decay_step: float
    epoch: int = 0

    @property
    def ratio(self) -> float:
        return teacher_forcing_ratio(self.epoch, self.start, self.decay_start, self.decay_step)
