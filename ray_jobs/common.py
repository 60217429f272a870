"""Wiring between the plain-PyTorch core (cvae/) and Ray: nothing here trains.

- `prepare_data`: pack a lab-layout folder to Parquet if needed, check it against the config.
- `connect`: attach to --address / RAY_ADDRESS, or start an embedded Ray of our own.
- `build_trainer`: the TorchTrainer running `ray_jobs.worker.train_loop_per_worker` (one Ray
  Train worker = `cvae.training.fit` on its share of the Ray Dataset); `run_trainer` runs it.
The cluster flags and sizing are `ray_jobs.cluster`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cvae import datasets, packs, shares, storage
from cvae.config import Config
from cvae.errors import CvaeError
from ray_jobs.cluster import ClusterConfig
from ray_jobs.runs import Mirror, MirrorAfterReport, RunStorage

# What Ray Train ranks the checkpoints by: validation.best_by's figure on a validated epoch,
# -inf on the others (ray_jobs.worker.Reporter), so Ray keeps the best validated checkpoint
# beside the latest one.
CHECKPOINT_SCORE = "checkpoint_score"


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
    """Open the training clips and the validation videos once: bad data fails in the driver,
    before Ray starts, with the file named."""
    datasets.train_dataset(cfg)
    datasets.val_videos(cfg)


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
    datasets.val_videos(cfg)  # broken validation videos fail here, not on rank 0 later
    return str(root), meta["splits"]["train"]


def connect(address: str | None, *, num_cpus: int | None = None) -> bool:
    """Attach to the cluster at `address` (--address, else $RAY_ADDRESS), or start an embedded
    Ray of this process's own. Returns True when attached to a cluster.

    Never another user's Ray by accident: without an address Ray would attach to any Ray alive
    on this machine (the one named in /tmp/ray/ray_current_cluster), so the embedded Ray is
    started with address="local". It gets a known dashboard port, announced to every Ray
    process as RAY_API_SERVER_ADDRESS: Ray Train's placement-group cleaner (which frees a
    finished or failed worker group) asks the State API for the cluster, and with another Ray
    running on the same machine it cannot tell which is ours ("Found multiple active Ray
    instances"); the stale workers then keep their CPUs and the next worker group never starts.
    """
    import ray

    given = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return given is not None
    if given:
        attach(given, "--address" if address else "RAY_ADDRESS")
        return True
    port = free_port()
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"  # inherited by Ray
    ray.init(address="local", log_to_driver=True, logging_level="WARNING",
             # One more logical CPU than cores: Ray Data's read tasks need a whole free CPU
             # beside the train workers, or they wait forever.
             num_cpus=num_cpus or (os.cpu_count() or 1) + 1,
             include_dashboard=True, dashboard_port=port)
    # A fresh embedded Ray turns token auth on and writes its token with the umask's mode
    # (often world-readable); whoever holds it can run code on every Ray this user starts.
    secure_token_file(Path.home() / ".ray" / "auth_token")
    return False


ATTACH_TIMEOUT = 10.0  # seconds for the cluster's port to answer before the address is refused


def attach(address: str, flag: str = "--address") -> None:
    """Connect this process to the Ray cluster at `address` ("host:port", "ray://host:port"
    or "auto"); an address where no cluster answers, or that refuses us, is one CvaeError
    naming it (`flag`: where the address came from), within seconds."""
    import socket

    import ray

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host.strip("[]"), int(port)), ATTACH_TIMEOUT).close()
        except OSError as err:
            raise CvaeError(f"{flag} {address}: no Ray cluster answers there "
                            f"({_first_line(err)})") from None
    try:
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    except Exception as err:  # noqa: BLE001 - ray.init raises many types for one refusal
        text = _first_line(err)
        hint = "; the cluster uses token authentication: set RAY_AUTH_MODE=token and its " \
               "token (~/.ray/auth_token)" if "auth" in text.lower() else ""
        raise CvaeError(f"{flag} {address}: cannot attach to a Ray cluster there "
                        f"({text[:200]}){hint}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


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


def build_trainer(cfg: Config, cluster: ClusterConfig, *, run: RunStorage, pack: str,
                  num_clips: int, cpus_per_worker: float, out: str,
                  init_weights: dict[str, Any] | None = None, callbacks: list | None = None,
                  wrap_batches: Callable[..., Iterator] | None = None):
    """The TorchTrainer: DDP workers (ray_jobs.worker) over the Parquet pack at `pack`, placed
    and restarted as `cluster` says, its checkpoints and run folder in `run`'s storage, the run
    folder mirrored into `out` after every epoch.

    init_weights: the state_dict `train.init_from` names, read here (the driver) so that no
    worker needs that path. wrap_batches(batches, epoch, *, rank, out): passes each worker's
    epoch iterator through (cvae.batches.EpochData.wrapped); tests record or interrupt what a
    worker trains on."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from ray_jobs.worker import train_loop_per_worker

    resident = shares.fits_resident(num_clips, cfg)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "out": out, "pack": pack,
                           "resident": resident, "run_folder": run.folder,
                           "init_weights": init_weights, "wrap_batches": wrap_batches,
                           "max_workers": cluster.max_workers},
        torch_config=TorchConfig(backend=cluster.backend),
        scaling_config=ray.train.ScalingConfig(
            num_workers=cluster.scaling_workers, use_gpu=cluster.use_gpu,
            resources_per_worker=cluster.worker_resources(cpus_per_worker),
            placement_strategy=cluster.placement_strategy,
            elastic_resize_monitor_interval_s=ELASTIC_RESIZE_INTERVAL,
        ),
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=run.storage,
            checkpoint_config=ray.train.CheckpointConfig(
                # Every epoch reports a checkpoint (a restart loses no epoch); Ray keeps the
                # latest and the best validated one.
                num_to_keep=2, checkpoint_score_attribute=CHECKPOINT_SCORE,
                checkpoint_score_order="max",
            ),
            failure_config=ray.train.FailureConfig(max_failures=cluster.max_failures),
            # Ray Train logs every report at INFO (hundreds of characters, twice an epoch);
            # fit prints one line per epoch.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            callbacks=[MirrorAfterReport(Mirror(run, out)), *(callbacks or [])],
        ),
        # A pack that fits data.resident_mb: every worker reads it whole, once, and keeps its
        # clips on its device (ray_jobs.worker.epoch_data). A larger one: each worker streams
        # the Parquet files dealt to it each epoch, without Ray Data.
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
        datasets={"train": _pack_dataset(pack)} if resident else {},
    )


def _pack_dataset(pack: str):
    """The pack's training clips as a Ray Dataset, read in the pack's order."""
    import ray.data

    from ray_jobs.worker import COLUMNS

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the workers' epoch bars are what a user watches
    fs, path = storage.open_location(storage.join(pack, "train"))
    return ray.data.read_parquet(path, filesystem=fs).select_columns(COLUMNS)


# An elastic run looks for returned nodes this often (Ray's default is 60 s); growing restarts
# the worker group from the last checkpoint, so not more often than an epoch or so.
ELASTIC_RESIZE_INTERVAL = 60.0


def run_trainer(trainer):
    """trainer.fit(), with the error a worker raised for a user's reason (a CvaeError such as
    TrainingDiverged, or what the filesystem refused) raised as itself: one line, not Ray
    Train's wrapper. The one driver of a run (ray_jobs.train) and of a sweep's trial."""
    import ray.train

    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        failure = worker_error(err)
        if failure is err:
            raise
        raise failure from None


def worker_error(err: Exception) -> Exception:
    """The user error (a CvaeError such as TrainingDiverged, or what the filesystem refused) a
    worker raised inside Ray Train's TrainingFailedError, to print as one line; else `err`."""
    failures = getattr(err, "worker_failures", None) or {}
    for rank in sorted(failures):
        if isinstance(failures[rank], (CvaeError, OSError)):
            return failures[rank]
    return err


def best_checkpoint(result, best_by: str = "val_psnr") -> tuple[dict, str] | None:
    """(metrics, path) of the validated checkpoint a Ray Train result kept with the highest
    `best_by` figure (validation.best_by)."""
    scored = [(m[best_by], i) for i, (_, m) in enumerate(result.best_checkpoints or [])
              if "val_psnr" in m and best_by in m]
    if not scored:
        return None
    checkpoint, metrics = result.best_checkpoints[max(scored)[1]]
    return metrics, checkpoint.path
