"""Wiring between the plain-PyTorch core (cvae/) and Ray: nothing here trains.

- `cluster_args`: the flags the cluster layer adds over the core's.
- `prepare_data`: pack a lab-layout folder to Parquet if needed, check it against the config.
- `connect`: attach to RAY_ADDRESS / --address, or start an embedded Ray sized to this machine.
- `check_resources`: fail fast when the request cannot fit, instead of waiting forever.
- `train_loop_per_worker`: one Ray Train worker = `cvae.training.fit` on its Ray Data shard.
- `build_trainer`: the TorchTrainer.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.data.collate_fn import NumpyBatchCollateFn

from cvae import datasets, packs
from cvae.config import Config
from cvae.errors import CvaeError

TRAIN_NAME = "train"


def cluster_args(num_workers_flags: tuple[str, ...] = ("--num-workers",),
                 num_workers_help: str = "Ray Train workers (DDP ranks)",
                 num_workers: int = 2) -> argparse.ArgumentParser:
    """The flags the cluster layer adds over the core's (an argparse parent)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*num_workers_flags, dest="num_workers", type=int, default=num_workers,
                        help=num_workers_help)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, nccl")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs per worker (default: fits the cluster, fractional on a laptop)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local "
                             "Ray sized to this machine)")
    parser.add_argument("--max-failures", type=int, default=1,
                        help="worker-group restarts allowed (each resumes from the last "
                             "checkpoint)")
    parser.add_argument("--storage-path", default=None,
                        help="where Ray keeps checkpoints (default <out>/ray; use shared storage, "
                             "e.g. s3://bucket/prefix, on a multi-node cluster)")
    parser.add_argument("--resource-timeout", type=float, default=None,
                        help="seconds to wait for the cluster to offer the resources (default: 0 "
                             "on an embedded Ray, 600 on a cluster, where an autoscaler may add "
                             "nodes)")
    return parser


def absolutize(cfg: Config) -> None:
    """Workers run in another working directory: give them absolute paths.

    Under `ray job submit` the entrypoint runs in Ray's unpacked copy of the working directory,
    where a relative path would read nothing and write into a temporary folder: refuse it.
    """
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        for key, value in (("--data", cfg.data.root), ("--out", cfg.run.out),
                           ("train.init_from", cfg.train.init_from)):
            if value and not Path(value).is_absolute():
                raise CvaeError(f"{key} {value}: use an absolute path in a `ray job submit` job "
                                "(its working directory is a temporary copy)")
    cfg.data.root = str(Path(cfg.data.root).resolve())
    cfg.run.out = str(Path(cfg.run.out).resolve())
    if cfg.train.init_from:
        cfg.train.init_from = str(Path(cfg.train.init_from).resolve())


def prepare_data(cfg: Config) -> tuple[Path, dict]:
    """A Parquet pack for `data.root` (made under <out>/pack from a lab-layout folder) and its
    train metadata, checked against the config before any worker starts."""
    root = datasets.check_root(cfg)
    d = cfg.data
    if not datasets.is_pack(root):
        pack_dir = Path(cfg.run.out) / "pack"
        if not (pack_dir / "meta.json").is_file():
            print(f"packing {root} into {pack_dir} (Parquet shards for Ray Data)")
            packs.pack(root, pack_dir, clip_len=d.clip_len, height=d.height, width=d.width,
                         progress=cfg.run.progress)
        root = pack_dir
    meta = packs.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
    cfg.data.root = str(root)
    datasets.val_video(cfg)  # a broken validation video fails here, not on rank 0 later
    return root, meta["splits"]["train"]


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Attach to a cluster or start an embedded Ray. Returns True when attached to a cluster.

    An embedded Ray gets a known dashboard port, announced to every Ray process as
    RAY_API_SERVER_ADDRESS: Ray Train's placement-group cleaner (which frees a finished or failed
    worker group) asks the State API for the cluster, and with another Ray running on the same
    machine it cannot tell which is ours ("Found multiple active Ray instances"); the stale
    workers then keep their CPUs and the next worker group never starts.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return address is not None
    if address:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
        return True
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by Ray
    ray.init(log_to_driver=True, logging_level="WARNING",
             # One more logical CPU than cores: Ray Data's read tasks need a whole free CPU
             # beside the train workers, or they wait forever.
             num_cpus=num_cpus or (os.cpu_count() or 1) + 1,
             include_dashboard=True, dashboard_port=port)
    # A fresh embedded Ray turns token auth on and writes its token with the umask's mode
    # (often world-readable); whoever holds it can run code on every Ray this user starts.
    secure_token_file(Path.home() / ".ray" / "auth_token")
    return False


def secure_token_file(path: Path) -> bool:
    """Make an auth-token file readable by its owner only (mode 0600).

    Only a regular file that this user owns is changed (not a link, nor another user's file).
    Returns True when the file now has mode 0600.
    """
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        return False
    if stat.S_IMODE(st.st_mode) != 0o600:
        os.chmod(path, 0o600)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def worker_cpus(args: argparse.Namespace, cluster_cpus: float,
                cap: float | None = None) -> float:
    """CPUs per worker: the flag, or the cluster's CPUs shared among the workers beside one CPU
    kept for Ray Data (at most `cap`). Whole CPUs where a worker gets one or more, because Ray
    gives a worker int(CPUs) torch threads: a lone worker on a 2-core laptop gets both cores,
    as `cvae-train` does (BENCHMARKS.md, section 3); quarters below one."""
    if args.cpus_per_worker is not None:
        if args.cpus_per_worker <= 0:
            raise CvaeError(f"--cpus-per-worker {args.cpus_per_worker}: must be > 0")
        return args.cpus_per_worker
    if args.use_gpu:
        return 1.0
    share = (cluster_cpus - 1) / max(args.num_workers, 1)
    if cap is not None:
        share = min(share, cap)
    if share >= 1:
        return float(math.floor(share))
    return max(0.25, math.floor(share * 4) / 4)


def check_resources(args: argparse.Namespace, cpus_per_worker: float, attached: bool) -> None:
    """Fail fast (or after --resource-timeout) when the request cannot be placed."""
    import ray

    if args.num_workers < 1:
        raise CvaeError(f"--num-workers {args.num_workers}: must be >= 1")
    need_cpu = args.num_workers * cpus_per_worker
    need_gpu = args.num_workers if args.use_gpu else 0
    timeout = args.resource_timeout if args.resource_timeout is not None else (
        600.0 if attached else 0.0)
    if attached and timeout > 0:
        from ray.autoscaler.sdk import request_resources

        bundle = {"CPU": cpus_per_worker, **({"GPU": 1} if args.use_gpu else {})}
        request_resources(bundles=[bundle] * args.num_workers)
    deadline = time.monotonic() + timeout
    while True:
        have = ray.cluster_resources()
        cpu, gpu = have.get("CPU", 0.0), have.get("GPU", 0.0)
        if cpu >= need_cpu and gpu >= need_gpu:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(5)
    raise CvaeError(
        f"the cluster cannot fit {args.num_workers} workers x {cpus_per_worker:g} CPU"
        + (" + 1 GPU" if args.use_gpu else "")
        + f" (it has {cpu:g} CPU, {gpu:g} GPU"
        + (f", waited {timeout:.0f} s" if timeout else "")
        + "); lower --num-workers or --cpus-per-worker"
        + ("" if args.use_gpu else ", or add nodes")
    )


class ClipCollate(NumpyBatchCollateFn):
    """Ray Data numpy batch -> (frames, poses uint8 [B,T,3,H,W], clip ids) on the CPU."""

    def __init__(self, height: int, width: int, clip_len: int):
        self.shape = {"height": height, "width": width, "clip_len": clip_len}

    def __call__(self, batch):
        return packs.decode_batch(batch, **self.shape)


def release_resources(attached: bool) -> None:
    """Drop the standing autoscaler request, so idle GPU nodes can scale down after the run."""
    if attached:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])


def wait_for_train_actors(timeout: float = 60.0) -> int:
    """Wait (bounded) until no Ray Train worker or controller runs; returns how many still do.

    When Tune stops a trial (ASHA, or its last epoch), `Tuner.fit` returns before the trial's
    Train actors have exited: a worker can still finish an epoch and append it to the trial's
    metrics.csv after the sweep has read it. Summarising only after they are gone keeps
    results.csv and the trial folders in step. An actor counts as running while Ray says it is
    alive or, on this machine, while its process still exists (Ray marks a killed actor dead
    before its process has exited).
    """
    from ray.util.state import list_actors

    deadline = time.monotonic() + timeout
    while True:
        try:
            actors = list_actors(limit=10000, detail=True)
        except Exception as err:  # noqa: BLE001 - the State API needs the dashboard
            print(f"warning: cannot list Ray actors ({err}); summarising without waiting")
            return 0
        running = [a for a in actors if (a.class_name or "") in _TRAIN_ACTORS
                   and (a.state == "ALIVE" or _process_runs(a.pid, a.class_name))]
        if not running:
            return 0
        if time.monotonic() >= deadline:
            print(f"warning: {len(running)} Ray Train actor(s) still running after {timeout:g} s;"
                  " their trials' folders may still change")
            return len(running)
        time.sleep(0.5)


_TRAIN_ACTORS = ("RayTrainWorker", "TrainController")


def _process_runs(pid: int | None, class_name: str) -> bool:
    """Whether this machine still has the actor's process (Ray titles it `ray::<Class>...`)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid else b""
    except OSError:  # gone, another node's pid, or no /proc
        return False
    return cmdline.startswith(f"ray::{class_name}".encode())


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: `cvae.training.fit` over this worker's Ray Data shard."""
    import ray.train
    import ray.train.torch

    from cvae.checkpoint import CHECKPOINT_FILE, load_checkpoint, resume_state_for
    from cvae.cli import configure_torch
    from cvae.training import EpochData, epoch_seed, fit

    cfg = Config.from_dict(loop_config["config"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    configure_torch(cfg)
    device = ray.train.torch.get_device()
    shard = ray.train.get_dataset_shard("train")
    clips, batch = loop_config["num_clips"], cfg.train.batch_size
    height, width, clip_len = cfg.data.height, cfg.data.width, cfg.data.clip_len

    def batches(epoch: int):
        shuffle = cfg.data.shuffle
        return iter(shard.iter_torch_batches(
            batch_size=batch, collate_fn=ClipCollate(height, width, clip_len),
            prefetch_batches=2,
            local_shuffle_buffer_size=max(cfg.data.shuffle_buffer, batch) if shuffle else None,
            local_shuffle_seed=epoch_seed(cfg.run.seed + 2, epoch, rank) if shuffle else None,
            pin_memory=device.type == "cuda",
        ))

    # streaming_split(equal=True): every worker gets clips // world clips, the same step count
    # on every rank, which DDP needs.
    data = EpochData(batches, math.ceil((clips // world) / batch))
    if loop_config.get("wrap_batches") is not None:
        data = data.wrapped(functools.partial(loop_config["wrap_batches"], rank=rank,
                                              out=cfg.run.out))
    resume_state = None
    checkpoint = ray.train.get_checkpoint()  # set after a worker failure or a --resume
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume_state = load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    elif loop_config["resume"]:
        resume_state = resume_state_for(cfg, True)

    def report(metrics: dict, checkpoint_file: Path | None) -> None:
        metrics = {k: v for k, v in metrics.items() if v is not None}
        if checkpoint_file is None or "val_psnr" not in metrics:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy2(checkpoint_file, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    val = datasets.val_video(cfg) if rank == 0 else None
    fit(cfg, data=data, val_video=val, device=device, rank=rank,
        prepare_model=ray.train.torch.prepare_model, report=report, resume_state=resume_state)


def build_trainer(cfg: Config, args: argparse.Namespace, *, pack_dir: Path, num_clips: int,
                  cpus_per_worker: float, resume: bool, name: str = TRAIN_NAME,
                  storage_path: str | None = None, callbacks: list | None = None,
                  wrap_batches: Callable[..., Iterator] | None = None):
    """The TorchTrainer: DDP workers over Ray Data shards of the Parquet pack.

    wrap_batches(batches, epoch, *, rank, out): passes each worker's epoch iterator through
    (cvae.training.EpochData.wrapped); tests record or interrupt what a worker trains on."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    context = ray.data.DataContext.get_current()
    # Deterministic sharding: the same clips go to the same worker in the same order.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = cfg.run.progress
    dataset = ray.data.read_parquet(str(pack_dir / "train")).select_columns(
        ["clip_id", "frames", "poses"])
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "num_clips": num_clips, "resume": resume,
                           "wrap_batches": wrap_batches},
        torch_config=TorchConfig(backend="nccl" if args.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.num_workers, use_gpu=args.use_gpu,
            resources_per_worker={"CPU": cpus_per_worker, **({"GPU": 1} if args.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path or args.storage_path or str(Path(cfg.run.out) / "ray"),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute="val_psnr",
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
            callbacks=callbacks,
        ),
        datasets={"train": dataset},
    )


def worker_error(err: Exception) -> Exception:
    """The user error (a CvaeError such as TrainingDiverged, or what the filesystem refused) a
    worker raised inside Ray Train's TrainingFailedError, to print as one line; else `err`."""
    failures = getattr(err, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], (CvaeError, OSError)):
            return failures[rank]
    return err


def check_max_failures(max_failures: int) -> None:
    """Ray Train retries are for lost workers; a deterministic failure (a NaN loss replays from
    the same checkpoint and seeds) would repeat forever under -1 (unlimited)."""
    if max_failures < 0:
        raise CvaeError(f"--max-failures {max_failures}: must be >= 0 (each retry replays the "
                        "run from its last checkpoint; a deterministic failure would repeat "
                        "forever)")


def best_checkpoint(result) -> tuple[float, str] | None:
    """(val_psnr, path) of the best checkpoint a Ray Train result kept."""
    scored = [(m["val_psnr"], c.path) for c, m in (result.best_checkpoints or [])
              if "val_psnr" in m]
    return max(scored) if scored else None
