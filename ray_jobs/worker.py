"""One Ray Train worker: `cvae.training.fit` on its share of each epoch's clips.

The few Ray lines: the worker's rank, device and dataset iterator come from `ray.train`;
`ray.train.torch.prepare_model` wraps the model in DDP; `ray.train.report` hands each epoch's
metrics (and rank 0's checkpoint) to Ray Train; `ray.train.get_checkpoint` restarts a run from
its latest checkpoint. Everything else is the core's: the worker's share of each epoch is
`cvae.shares` (the pack read once through Ray Data and kept on the device, or, for a pack
larger than data.resident_mb, the worker's own Parquet files streamed every epoch).

Rank 0 writes the run folder into a scratch folder on its node and copies it into the run's
storage after every epoch, so no file stays on a node that may go away; a restarted rank 0
(maybe on another node) first copies it back and continues it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cvae import datasets, packs, shares, storage
from cvae.batches import Batch, EpochData
from cvae.config import Config
from cvae.training import TrainingDiverged

COLUMNS = ["clip_id", "frames", "poses"]


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from cvae.cli import configure_torch
    from cvae.train_state import lr_scale_for
    from cvae.training import fit

    cfg = Config.from_dict(loop_config["config"])
    run_folder = loop_config["run_folder"]
    refuse_replay(run_folder)
    _quiet_report_log()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_torch(cfg)
    device = ray.train.torch.get_device()
    data = epoch_data(cfg, loop_config["pack"], loop_config["resident"], rank, world, device)
    if loop_config.get("wrap_batches") is not None:
        data = data.wrapped(functools.partial(loop_config["wrap_batches"], rank=rank,
                                              out=loop_config["out"]))
    val = datasets.val_videos(cfg) if rank == 0 else None
    with tempfile.TemporaryDirectory(prefix="cvae-run-") as scratch, \
            remember_failure(run_folder):
        if rank == 0:  # a restart continues the run folder the last rank 0 left in storage
            storage.sync_tree(run_folder, scratch)
        cfg.run.out = scratch
        fit(cfg, data=data, val_videos=val, device=device, rank=rank,
            prepare_model=ray.train.torch.prepare_model,
            report=Reporter(run_folder, scratch, rank, cfg.validation.best_by),
            resume_state=latest_checkpoint_state(),
            init_weights=loop_config.get("init_weights"), progress_bar=_ray_progress_bar,
            # An elastic run may train on fewer workers than its largest size for a while.
            world=world, lr_scale=lr_scale_for(world, loop_config.get("max_workers", world)),
            val_threads=validation_threads(
                cfg.validation.threads, device, ctx.get_local_world_size(),
                ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)))


def validation_threads(setting: int, device, local_workers: int, worker_cpus: float) -> int:
    """Rank 0's CPU threads while it validates (validation.threads): n >= 0 as set; -1: on a
    CPU the CPUs reserved for every worker on its node (at least 1), since they wait for it
    meanwhile (~1.5x faster with 2 workers of 1 CPU on a quiet machine); 0 (unchanged) on a
    GPU. Workers of a fraction of a CPU (trials sharing a node) add up to what they reserved."""
    if setting >= 0:
        return setting
    return max(1, math.floor(worker_cpus * local_workers + 1e-9)) if device.type == "cpu" else 0


# In the run folder when training diverged: a replay from the last checkpoint, with the same
# seeds, would diverge again, so the restarts Ray Train makes after a worker error end at once.
FAILED_FILE = "diverged.txt"


def refuse_replay(run_folder: str) -> None:
    """Raise the recorded TrainingDiverged again when the run already diverged."""
    marker = storage.join(run_folder, FAILED_FILE)
    if storage.exists(marker):
        raise TrainingDiverged(storage.read_location(marker).decode().strip())


@contextlib.contextmanager
def remember_failure(run_folder: str) -> Iterator[None]:
    """Record a TrainingDiverged in the run folder (see FAILED_FILE) before it ends the
    worker."""
    try:
        yield
    except TrainingDiverged as err:
        storage.write_location(storage.join(run_folder, FAILED_FILE), f"{err}\n".encode())
        raise


def latest_checkpoint_state() -> dict[str, Any] | None:
    """The state of the run's latest checkpoint (after a worker failure, or when a run is
    continued with --resume), or None for a fresh start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    return None if checkpoint is None else checkpoint_state(checkpoint)


def checkpoint_state(checkpoint) -> dict[str, Any]:
    """A Ray checkpoint's state, read straight from its storage into this process's memory.

    Not through `Checkpoint.as_directory()`: that downloads into one folder per checkpoint per
    node, shared by every rank of the node, and a rank that comes after the first download
    downloads again over it while another rank is still reading the file (a truncated read).
    Ray registers a checkpoint only once its upload is complete, so the bytes read here are
    whole, and every rank reads the same checkpoint: they resume at the same epoch."""
    from cvae.checkpoint import CHECKPOINT_FILE, parse_checkpoint

    path = f"{checkpoint.path.rstrip('/')}/{CHECKPOINT_FILE}"
    data = storage.read_file(checkpoint.filesystem, path)
    return parse_checkpoint(io.BytesIO(data), path)


class Reporter:
    """fit's `report` hook: rank 0 copies the run folder into the run's storage (checkpoints
    excepted: those go through Ray Train), then every rank reports the epoch to Ray Train,
    rank 0 with its checkpoint: every epoch, validated or not, so that a restart after a lost
    node loses no finished epoch. The checkpoint's CHECKPOINT_SCORE is validation.best_by's
    figure (`best_by`) on a validated epoch, -inf on the others: Ray keeps the best validated
    checkpoint beside the latest."""

    def __init__(self, run_folder: str, scratch: str, rank: int, best_by: str = "val_psnr"):
        self.run_folder, self.scratch, self.rank, self.best_by = run_folder, scratch, rank, best_by
        self._seen: dict[str, tuple] = {}

    def __call__(self, metrics: dict, checkpoint_file: Path | None) -> None:
        import ray.train

        from cvae.checkpoint import CHECKPOINT_FILE
        from ray_jobs.common import CHECKPOINT_SCORE

        if self.rank == 0:
            self._seen = storage.sync_tree(self.scratch, self.run_folder, skip=("checkpoints",),
                                           seen=self._seen)
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if checkpoint_file is None:
            ray.train.report(metrics)
            return
        metrics[CHECKPOINT_SCORE] = float(metrics[self.best_by]) if "val_psnr" in metrics \
            else -math.inf
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


def epoch_data(cfg: Config, pack: str, resident: bool, rank: int, world: int,
               device: torch.device) -> EpochData:
    """This rank's batches of each epoch (cvae.shares). `resident` (the pack fits
    data.resident_mb): the rank reads the pack through Ray Data once, decodes every clip and
    keeps them on its device; else it streams its own Parquet files of the pack every epoch."""
    import ray.train

    if not resident:
        return shares.streamed_epochs(packs.ParquetClipDataset(pack), cfg, rank, world,
                                      pin_memory=device.type == "cuda")
    batches = _decoded(cfg, ray.train.get_dataset_shard("train"))
    return shares.ResidentClips.gather(batches, device).epochs(cfg, rank, world)


def _decoded(cfg: Config, dataset) -> Iterator[Batch]:
    """Every clip of a Ray Dataset of the pack, decoded: (frames, poses, clip ids) batches."""
    d = cfg.data
    for part in dataset.iter_batches(batch_size=64, batch_format="numpy", prefetch_batches=2):
        yield packs.decode_batch({k: part[k] for k in COLUMNS}, height=d.height, width=d.width,
                                 clip_len=d.clip_len)
