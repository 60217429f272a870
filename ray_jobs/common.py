"""Wiring between the plain-PyTorch core (cvae/) and Ray: nothing here trains.

- `cluster_args`: the flags the cluster layer adds over the core's.
- `prepare_data`: pack a lab-layout folder to Parquet if needed, check it against the config.
- `connect`: attach to RAY_ADDRESS / --address, or start an embedded Ray sized to this machine.
- `check_resources`: fail fast when the request cannot fit, instead of waiting forever.
- `build_trainer`: the TorchTrainer running `ray_jobs.worker.train_loop_per_worker` (one Ray
  Train worker = `cvae.training.fit` on its share of the Ray Dataset).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cvae import datasets, packs, storage
from cvae.config import Config
from cvae.errors import CvaeError
from ray_jobs.runs import Mirror, MirrorAfterReport, RunStorage


def cluster_args(num_workers_flags: tuple[str, ...] = ("--num-workers",),
                 num_workers_help: str = "Ray Train workers (DDP ranks)",
                 num_workers: int = 2) -> argparse.ArgumentParser:
    """The flags the cluster layer adds over the core's (an argparse parent)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*num_workers_flags, dest="num_workers", type=int, default=num_workers,
                        help=num_workers_help)
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, nccl")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="GPUs per worker: a share in (0, 1] (0.25: four workers on one GPU) "
                             "or a whole number; implies --use-gpu (default 1 with --use-gpu)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs per worker (default: fits the cluster, fractional on a laptop)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: $RAY_ADDRESS, else an embedded local "
                             "Ray sized to this machine)")
    parser.add_argument("--max-failures", type=int, default=1,
                        help="worker-group restarts allowed (each resumes from the last "
                             "checkpoint)")
    parser.add_argument("--storage-path", default=None,
                        help="the run's storage: checkpoints, the run folder as it is written, "
                             "the packed data (default <out>/ray; on a multi-node cluster a URI "
                             "such as s3://bucket/prefix, or a mount every node shares)")
    parser.add_argument("--shared-storage", action="store_true",
                        help="the local --storage-path and --data are mounts every node of the "
                             "cluster shares (NFS, EFS); without it a multi-node run refuses "
                             "local paths")
    parser.add_argument("--placement-strategy", default="PACK",
                        choices=["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"],
                        help="how the workers are placed on the nodes (Ray placement groups; "
                             "STRICT_SPREAD: one worker per node)")
    parser.add_argument("--name", default=None,
                        help="the run's name in its storage (default: made from --out); a new "
                             "run refuses a name that exists, --resume continues it")
    parser.add_argument("--resource-timeout", type=float, default=None,
                        help="seconds to wait for the cluster to offer the resources (default: 0 "
                             "on an embedded Ray, 600 on a cluster, where an autoscaler may add "
                             "nodes)")
    parser.add_argument("--max-cluster-cpus", type=float, default=None,
                        help="CPUs the cluster can scale up to (default: the autoscaler's "
                             "configured maximum where Ray exposes it, else what it has now)")
    parser.add_argument("--max-cluster-gpus", type=float, default=None,
                        help="GPUs the cluster can scale up to (as --max-cluster-cpus)")
    return parser


def gpus_per_worker(args: argparse.Namespace) -> float:
    """The GPUs each worker asks for: --gpus-per-worker, else 1 with --use-gpu, else 0."""
    value = getattr(args, "gpus_per_worker", None)
    if value is None:
        return 1.0 if args.use_gpu else 0.0
    whole = math.isfinite(value) and value >= 1 and value == int(value)
    if not (0 < value <= 1 or whole):
        raise CvaeError(f"--gpus-per-worker {value:g}: must be a share of one GPU in (0, 1] "
                        "or a whole number of GPUs")
    return float(value)


def resolve_gpus(args: argparse.Namespace) -> None:
    """Check --gpus-per-worker and settle both GPU flags: a GPU share > 0 means GPU workers;
    CPU workers keep no share (None)."""
    gpus = gpus_per_worker(args)
    args.gpus_per_worker, args.use_gpu = (gpus or None), gpus > 0


def worker_resources(args: argparse.Namespace, cpus_per_worker: float) -> dict[str, float]:
    """One worker's Ray resources: its CPUs and its (possibly fractional) GPUs."""
    gpus = gpus_per_worker(args)
    return {"CPU": cpus_per_worker, **({"GPU": gpus} if gpus else {})}


def torch_backend(args: argparse.Namespace) -> str:
    """nccl on GPUs, except when workers share GPUs: NCCL refuses two ranks on one device, so
    fractional GPU workers of one trial talk through gloo."""
    gpus = gpus_per_worker(args)
    return "nccl" if gpus and (gpus >= 1 or args.num_workers == 1) else "gloo"


def cluster_ceiling(args: argparse.Namespace, attached: bool) -> dict[str, float] | None:
    """What the cluster can scale up to: --max-cluster-cpus/--max-cluster-gpus, else the
    autoscaler's configured maximum (autoscaler v2 publishes its node groups' limits to the
    GCS), else None (unknown: only what it has now counts)."""
    given = {k: v for k, v in (("CPU", getattr(args, "max_cluster_cpus", None)),
                               ("GPU", getattr(args, "max_cluster_gpus", None))) if v is not None}
    config = _autoscaler_maximum() if attached else None
    if not given and not config:
        return None
    return {**(config or {}), **given}


def _autoscaler_maximum() -> dict[str, float] | None:
    try:
        from ray._private.state import state

        limits = state.get_max_resources_from_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: absent or changed means unknown
        return None
    if not limits:
        return None
    return {k: (math.inf if v >= sys.maxsize else float(v)) for k, v in limits.items()
            if k in ("CPU", "GPU")}


def reachable(have: dict[str, float], ceiling: dict[str, float] | None) -> tuple[float, float]:
    """(CPUs, GPUs) the cluster has or can scale up to."""
    ceiling = ceiling or {}
    return tuple(max(have.get(k, 0.0), ceiling.get(k, 0.0)) for k in ("CPU", "GPU"))


def absolutize(cfg: Config) -> None:
    """Workers run in another working directory: give them absolute paths.

    Under `ray job submit` the entrypoint runs in Ray's unpacked copy of the working directory,
    where a relative path would read nothing and write into a temporary folder: refuse it.
    """
    values = {"--data": cfg.data.root, "--out": cfg.run.out,
              "train.init_from": cfg.train.init_from}
    if os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        for key, value in values.items():
            if value and not storage.is_uri(value) and not Path(value).is_absolute():
                raise CvaeError(f"{key} {value}: use an absolute path in a `ray job submit` job "
                                "(its working directory is a temporary copy)")
    if storage.is_uri(cfg.run.out):
        raise CvaeError(f"--out {cfg.run.out}: a folder on this machine (the run's storage is "
                        "--storage-path)")
    cfg.run.out = str(Path(cfg.run.out).resolve())
    if not storage.is_uri(cfg.data.root):
        cfg.data.root = str(Path(cfg.data.root).resolve())
    if cfg.train.init_from and not storage.is_uri(cfg.train.init_from):
        cfg.train.init_from = str(Path(cfg.train.init_from).resolve())


def check_data(cfg: Config) -> None:
    """Open the training clips and the validation video once: bad data fails in the driver,
    before Ray starts, with the file named."""
    datasets.train_dataset(cfg)
    datasets.val_video(cfg)


def prepare_data(cfg: Config, pack: str) -> tuple[str, dict]:
    """The Parquet pack the workers read and its train metadata, checked against the config
    before any worker starts. A lab-layout folder is packed into `pack` (in the run's storage,
    where every node reads it) unless a pack is already there."""
    root = datasets.check_root(cfg)
    d = cfg.data
    if not datasets.is_pack(root):
        if not datasets.is_pack(pack):
            print(f"packing {root} into {pack} (Parquet shards for Ray Data)")
            packs.pack_to(root, pack, clip_len=d.clip_len, height=d.height, width=d.width,
                          progress=cfg.run.progress)
        root = pack
    meta = packs.check_pack(root, height=d.height, width=d.width, clip_len=d.clip_len)
    cfg.data.root = str(root)
    datasets.val_video(cfg)  # a broken validation video fails here, not on rank 0 later
    return str(root), meta["splits"]["train"]


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


def check_resources(args: argparse.Namespace, cpus_per_worker: float, attached: bool,
                    ceiling: dict[str, float] | None = None) -> None:
    """Fail fast (or after --resource-timeout) when the request cannot be placed; at once when
    it is beyond what the cluster can scale up to (`ceiling`, see cluster_ceiling)."""
    import ray

    if args.num_workers < 1:
        raise CvaeError(f"--num-workers {args.num_workers}: must be >= 1")
    gpus = gpus_per_worker(args)
    need_cpu = args.num_workers * cpus_per_worker
    need_gpu = args.num_workers * gpus
    check_ceiling(args.num_workers, worker_resources(args, cpus_per_worker), ceiling)
    timeout = args.resource_timeout if args.resource_timeout is not None else (
        600.0 if attached else 0.0)
    if attached and timeout > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[worker_resources(args, cpus_per_worker)] * args.num_workers)
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
        + (f" + {gpus:g} GPU" if gpus else "")
        + f" (it has {cpu:g} CPU, {gpu:g} GPU"
        + (f", waited {timeout:.0f} s" if timeout else "")
        + "); lower --num-workers or --cpus-per-worker"
        + ("" if gpus else ", or add nodes")
    )


def check_ceiling(workers: int, per_worker: dict[str, float],
                  ceiling: dict[str, float] | None) -> None:
    """Refuse at once a request larger than the cluster can ever offer."""
    for key, amount in per_worker.items():
        need = workers * amount
        if ceiling is not None and key in ceiling and need > ceiling[key] + 1e-9:
            raise CvaeError(f"{workers} workers x {amount:g} {key} need {need:g} {key}, but the "
                            f"cluster can scale up to {ceiling[key]:g} {key} at most; lower "
                            "--num-workers, --cpus-per-worker or --gpus-per-worker")


def release_resources(attached: bool) -> None:
    """Drop the standing autoscaler request, so idle GPU nodes can scale down after the run."""
    if attached:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[])


def wait_for_train_actors(job_id: str | None = None, timeout: float = 60.0) -> int:
    """Wait (bounded) until no Ray Train worker or controller of the Ray job `job_id` (hex; a
    sweep passes its own driver's) runs; returns how many still do. Other jobs' actors never
    hold it up; job_id None waits for every job's.

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
                   and (job_id is None or getattr(a, "job_id", None) == job_id)
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


def build_trainer(cfg: Config, args: argparse.Namespace, *, run: RunStorage, pack: str,
                  num_clips: int, cpus_per_worker: float, out: str,
                  init_weights: dict[str, Any] | None = None, callbacks: list | None = None,
                  wrap_batches: Callable[..., Iterator] | None = None):
    """The TorchTrainer: DDP workers (ray_jobs.worker) over the Parquet pack at `pack`, its
    checkpoints and run folder in `run`'s storage, the run folder mirrored into `out` after
    every epoch.

    init_weights: the state_dict `train.init_from` names, read here (the driver) so that no
    worker needs that path. wrap_batches(batches, epoch, *, rank, out): passes each worker's
    epoch iterator through (cvae.training.EpochData.wrapped); tests record or interrupt what a
    worker trains on."""
    import ray.data
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from ray_jobs.worker import COLUMNS, train_loop_per_worker

    context = ray.data.DataContext.get_current()
    # Deterministic reading: every worker sees the clips in the pack's order (and keeps its
    # own share of each epoch, ray_jobs.worker.epoch_shares).
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the workers' epoch bars are what a user watches
    fs, path = storage.open_location(storage.join(pack, "train"))
    dataset = ray.data.read_parquet(path, filesystem=fs).select_columns(COLUMNS)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "num_clips": num_clips, "out": out,
                           "run_folder": run.folder, "init_weights": init_weights,
                           "wrap_batches": wrap_batches},
        torch_config=TorchConfig(backend=torch_backend(args)),
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.num_workers, use_gpu=gpus_per_worker(args) > 0,
            resources_per_worker=worker_resources(args, cpus_per_worker),
            placement_strategy=getattr(args, "placement_strategy", "PACK"),
        ),
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=run.storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=2, checkpoint_score_attribute=cfg.validation.best_by,
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
            # Ray Train logs every report at INFO (hundreds of characters, twice an epoch);
            # fit prints one line per epoch.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[MirrorAfterReport(Mirror(run, out)), *(callbacks or [])],
        ),
        # Every worker reads the whole dataset and keeps its share of each epoch.
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
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


def best_checkpoint(result, best_by: str = "val_psnr") -> tuple[dict, str] | None:
    """(metrics, path) of the validated checkpoint a Ray Train result kept with the highest
    `best_by` figure (validation.best_by)."""
    scored = [(m[best_by], i) for i, (_, m) in enumerate(result.best_checkpoints or [])
              if "val_psnr" in m and best_by in m]
    if not scored:
        return None
    checkpoint, metrics = result.best_checkpoints[max(scored)[1]]
    return metrics, checkpoint.path
