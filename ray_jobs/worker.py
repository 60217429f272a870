"""One Ray Train worker: `cvae.training.fit` on its share of each epoch's clips.

The few Ray lines: the worker's rank, device and dataset iterator come from `ray.train`;
`ray.train.torch.prepare_model` wraps the model in DDP; `ray.train.report` hands each epoch's
metrics (and rank 0's checkpoint) to Ray Train; `ray.train.get_checkpoint` restarts a run from
its latest checkpoint. Everything else is the core's.

Rank 0 writes the run folder into a scratch folder on its node and copies it into the run's
storage after every epoch, so no file stays on a node that may go away; a restarted rank 0
(maybe on another node) first copies it back and continues it.
"""

from __future__ import annotations

import functools
import math
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cvae import datasets, packs, storage
from cvae.config import Config
from cvae.training import Batch, EpochData, epoch_seed

COLUMNS = ["clip_id", "frames", "poses"]


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from cvae.cli import configure_torch
    from cvae.training import fit

    cfg = Config.from_dict(loop_config["config"])
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_torch(cfg)
    device = ray.train.torch.get_device()
    data = epoch_shares(cfg, ray.train.get_dataset_shard("train"), loop_config["num_clips"],
                        rank, world, pin_memory=device.type == "cuda")
    if loop_config.get("wrap_batches") is not None:
        data = data.wrapped(functools.partial(loop_config["wrap_batches"], rank=rank,
                                              out=loop_config["out"]))
    val = datasets.val_video(cfg) if rank == 0 else None
    with tempfile.TemporaryDirectory(prefix="cvae-run-") as scratch:
        if rank == 0:  # a restart continues the run folder the last rank 0 left in storage
            storage.sync_tree(loop_config["run_folder"], scratch)
        cfg.run.out = scratch
        fit(cfg, data=data, val_video=val, device=device, rank=rank,
            prepare_model=ray.train.torch.prepare_model,
            report=Reporter(loop_config["run_folder"], scratch, rank),
            resume_state=latest_checkpoint_state(),
            init_weights=loop_config.get("init_weights"), progress_bar=_ray_progress_bar)


def latest_checkpoint_state() -> dict[str, Any] | None:
    """The state of the run's latest checkpoint (after a worker failure, or when a run is
    continued with --resume), or None for a fresh start."""
    import ray.train

    from cvae.checkpoint import CHECKPOINT_FILE, load_checkpoint

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return load_checkpoint(Path(folder) / CHECKPOINT_FILE)


class Reporter:
    """fit's `report` hook: rank 0 copies the run folder into the run's storage (checkpoints
    excepted: those go through Ray Train), then every rank reports the epoch to Ray Train."""

    def __init__(self, run_folder: str, scratch: str, rank: int):
        self.run_folder, self.scratch, self.rank = run_folder, scratch, rank
        self._seen: dict[str, tuple] = {}

    def __call__(self, metrics: dict, checkpoint_file: Path | None) -> None:
        import ray.train

        from cvae.checkpoint import CHECKPOINT_FILE

        if self.rank == 0:
            self._seen = storage.sync_tree(self.scratch, self.run_folder, skip=("checkpoints",),
                                           seen=self._seen)
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if checkpoint_file is None or "val_psnr" not in metrics:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy2(checkpoint_file, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _quiet_report_log() -> None:
    """Ray Train logs every `ray.train.report` at INFO, hundreds of characters each, on a logger
    named after its source file (so its LoggingConfig level does not reach it); fit prints one
    line per epoch instead."""
    import logging

    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def _ray_progress_bar(total: int | None, desc: str):
    """A bar that Ray draws on the driver's terminal (one per worker, as bars)."""
    from ray.experimental.tqdm_ray import tqdm

    return tqdm(total=total, desc=desc)


def epoch_shares(cfg: Config, dataset, num_clips: int, rank: int, world: int, *,
                 pin_memory: bool = False) -> EpochData:
    """This rank's batches of each epoch, read from the whole dataset (every worker reads it;
    only its own clips are decoded). Each epoch deals the clips to the ranks anew (seeded by
    epoch, the same on every rank), so a rank does not see the same clips every epoch."""
    d, batch = cfg.data, cfg.train.batch_size
    shape = {"height": d.height, "width": d.width, "clip_len": d.clip_len}

    def batches(epoch: int) -> Iterator[Batch]:
        seed = epoch_seed(cfg.run.seed + 2, epoch) if d.shuffle else None
        mine = np.zeros(num_clips, dtype=bool)
        mine[datasets.rank_clips(num_clips, world, rank, seed)] = True
        rows = _rows(dataset, mine)
        if d.shuffle:
            rng = random.Random(epoch_seed(cfg.run.seed + 2, epoch, rank))
            rows = datasets.buffer_shuffle(rows, max(d.shuffle_buffer, batch), rng)
        for group in datasets.batched(rows, batch):
            frames, poses, ids = packs.decode_batch(
                {k: [row[i] for row in group] for i, k in enumerate(COLUMNS)}, **shape)
            if pin_memory:
                frames, poses = frames.pin_memory(), poses.pin_memory()
            yield frames, poses, ids

    return EpochData(batches, math.ceil((num_clips // world) / batch))


def _rows(dataset, mine: np.ndarray) -> Iterator[tuple]:
    """(clip_id, frames bytes, poses bytes) of the clips marked in `mine`, in dataset order."""
    for part in dataset.iter_batches(batch_size=64, batch_format="numpy", prefetch_batches=2):
        ids = np.asarray(part["clip_id"])
        for i in np.flatnonzero(mine[ids]):
            yield int(ids[i]), part["frames"][i], part["poses"][i]
