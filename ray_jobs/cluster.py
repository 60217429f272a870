"""The cluster layer's settings and sizing: nothing here trains.

- `cluster_args`: the flags the cluster layer adds over the core's (an argparse parent).
- `ClusterConfig`: those flags, typed and checked once, carried whole to the trainer (a sweep
  saves it in sweep.json and hands it to every trial).
- `NodeShapes`: the nodes the cluster has, and those its autoscaler can add.
- sizing: the CPUs a worker gets, and a request that cannot fit refused at once (or after
  --resource-timeout) instead of waiting forever.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import time
from dataclasses import dataclass

from cvae.errors import CvaeError

PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
# Each lost node (a spot instance taken back, a crashed machine) restarts the worker group from
# the last epoch's checkpoint and costs at most that epoch: 3 lets a run ride out a few spot
# preemptions. A deterministic error (a diverged loss) is not replayed by the restarts
# (ray_jobs.worker ends it at once), so the limit costs no time when the code is at fault.
DEFAULT_MAX_FAILURES = 3
RAY_DATA_CPUS = 1.0  # kept free on a node for Ray Data's read tasks, or they wait forever


def cluster_args(workers_flags: tuple[str, ...] = ("--num-workers",),
                 workers_help: str = "Ray Train workers (DDP ranks)",
                 workers: str = "2") -> argparse.ArgumentParser:
    """The flags the cluster layer adds over the core's (an argparse parent)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*workers_flags, dest="num_workers", default=workers, metavar="N|MIN-MAX",
                        help=f"{workers_help}: a number, or MIN-MAX for an elastic run that "
                             "trains on with fewer workers when nodes go and grows when they "
                             f"come back (default {workers})")
    parser.add_argument("--use-gpu", action="store_true", help="one GPU per worker, nccl")
    parser.add_argument("--gpus-per-worker", type=float, default=None,
                        help="GPUs per worker: a share in (0, 1] (0.25: four workers on one GPU) "
                             "or a whole number; implies --use-gpu (default 1 with --use-gpu)")
    parser.add_argument("--cpus-per-worker", type=float, default=None,
                        help="CPUs per worker (default: a fair share of a node, beside one CPU "
                             "for Ray Data; fractional on a laptop)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to attach to (default: $RAY_ADDRESS, else an embedded "
                             "Ray of this process's own, sized to this machine)")
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES,
                        help="restarts after a lost worker or node, each from the last epoch's "
                             f"checkpoint (default {DEFAULT_MAX_FAILURES}: a few spot "
                             "preemptions; nodes the cloud announces before taking them back "
                             "are not counted)")
    parser.add_argument("--storage-path", default=None,
                        help="the run's storage: checkpoints, the run folder as it is written, "
                             "the packed data (default <out>/ray; on a multi-node cluster a URI "
                             "such as s3://bucket/prefix, or a mount every node shares)")
    parser.add_argument("--shared-storage", action="store_true",
                        help="the local --storage-path and --data are mounts every node of the "
                             "cluster shares (NFS, EFS); without it a multi-node run refuses "
                             "local paths")
    parser.add_argument("--placement-strategy", default="PACK", choices=PLACEMENTS,
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


@dataclass(frozen=True)
class ClusterConfig:
    """How a run (or each trial of a sweep) uses the cluster: built once from the flags
    (`from_args`), checked there, and passed whole to the trainer."""

    min_workers: int = 2
    max_workers: int = 2  # == min_workers: a fixed worker group; more: elastic
    gpus_per_worker: float = 0.0  # 0: CPU workers; a share in (0, 1] or whole GPUs
    cpus_per_worker: float | None = None  # None: sized from the cluster (worker_cpus)
    placement_strategy: str = "PACK"
    max_failures: int = DEFAULT_MAX_FAILURES
    storage_path: str | None = None
    shared_storage: bool = False
    name: str | None = None
    address: str | None = None
    resource_timeout: float | None = None
    max_cluster_cpus: float | None = None
    max_cluster_gpus: float | None = None
    workers_flag: str = "--num-workers"  # how the user named the worker count, for messages

    @classmethod
    def from_args(cls, args: argparse.Namespace,
                  workers_flag: str = "--num-workers") -> ClusterConfig:
        low, high = parse_workers(args.num_workers, workers_flag)
        gpus = args.gpus_per_worker
        if gpus is None:
            gpus = 1.0 if args.use_gpu else 0.0
        elif gpus <= 0 or not math.isfinite(gpus):
            raise CvaeError(f"--gpus-per-worker {gpus:g}: must be a share of one GPU in (0, 1] "
                            "or a whole number of GPUs")
        cluster = cls(low, high, float(gpus), args.cpus_per_worker, args.placement_strategy,
                      args.max_failures, args.storage_path, args.shared_storage, args.name,
                      args.address, args.resource_timeout, args.max_cluster_cpus,
                      args.max_cluster_gpus, workers_flag)
        cluster.check()
        return cluster

    @classmethod
    def from_dict(cls, doc: dict) -> ClusterConfig:
        """A saved ClusterConfig (sweep.json); keys it does not know are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CvaeError(f"cluster settings: unknown key {unknown[0]!r}")
        cluster = cls(**doc)
        cluster.check()
        return cluster

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Refuse impossible settings, naming the flag."""
        if self.min_workers < 1:
            raise CvaeError(f"{self.workers_flag} {self.workers_text}: must be >= 1")
        if self.min_workers > self.max_workers:
            raise CvaeError(f"{self.workers_flag} {self.workers_text}: MIN must be <= MAX")
        g = self.gpus_per_worker
        if g and not (0 < g <= 1 or (g == int(g) and math.isfinite(g))):
            raise CvaeError(f"--gpus-per-worker {g:g}: must be a share of one GPU in (0, 1] or "
                            "a whole number of GPUs")
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise CvaeError(f"--cpus-per-worker {self.cpus_per_worker:g}: must be > 0")
        if self.placement_strategy not in PLACEMENTS:
            raise CvaeError(f"--placement-strategy {self.placement_strategy}: must be one of "
                            f"{', '.join(PLACEMENTS)}")
        if self.max_failures < 0:
            raise CvaeError(f"--max-failures {self.max_failures}: must be >= 0 (each retry "
                            "replays the run from its last checkpoint; a deterministic failure "
                            "would repeat forever)")
        if self.resource_timeout is not None and not self.resource_timeout >= 0:
            raise CvaeError(f"--resource-timeout {self.resource_timeout:g}: must be >= 0")

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    @property
    def elastic(self) -> bool:
        return self.max_workers > self.min_workers

    @property
    def workers_text(self) -> str:
        return f"{self.min_workers}-{self.max_workers}" \
            if self.min_workers != self.max_workers else f"{self.min_workers}"

    @property
    def scaling_workers(self) -> int | tuple[int, int]:
        """ScalingConfig's num_workers: a number, or (min, max) for an elastic group."""
        return (self.min_workers, self.max_workers) if self.elastic else self.max_workers

    @property
    def backend(self) -> str:
        """nccl on GPUs, except when workers share GPUs: NCCL refuses two ranks on one device,
        so fractional GPU workers of one run talk through gloo."""
        g = self.gpus_per_worker
        return "nccl" if g and (g >= 1 or self.max_workers == 1) else "gloo"

    def worker_resources(self, cpus_per_worker: float) -> dict[str, float]:
        """One worker's Ray resources: its CPUs and its (possibly fractional) GPUs."""
        return {"CPU": cpus_per_worker,
                **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}

    def replace(self, **changes) -> ClusterConfig:
        return dataclasses.replace(self, **changes)


def parse_workers(text: str | int, flag: str = "--num-workers") -> tuple[int, int]:
    """'4' -> (4, 4); '1-4' -> (1, 4) (an elastic group of 1 to 4 workers)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", str(text))
    if not match:
        raise CvaeError(f"{flag} {text}: a number of workers, or MIN-MAX (e.g. 1-4)")
    low = int(match.group(1))
    return low, int(match.group(2) or low)


# ---- the nodes: alive now, and what the autoscaler can add ----

HEAD_RESOURCE = "node:__internal_head__"  # Ray's marker resource of the head node


@dataclass(frozen=True)
class NodeShapes:
    """The resources of each node the cluster has now (`alive`) and of each worker node its
    autoscaler may have at most (`worker_types`: every node type repeated up to its maximum
    count; empty on an embedded Ray or where Ray does not expose the autoscaler's
    configuration)."""

    alive: tuple[dict[str, float], ...]
    worker_types: tuple[dict[str, float], ...] = ()

    @classmethod
    def read(cls, attached: bool) -> NodeShapes:
        import ray

        alive = tuple(dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive"))
        return cls(alive, _autoscaler_worker_nodes() if attached else ())

    @property
    def possible(self) -> tuple[dict[str, float], ...]:
        """Every node the cluster can have at once: the head and the autoscaler's worker nodes
        at their maximum counts, or the nodes alive now where no autoscaler is known."""
        if not self.worker_types:
            return self.alive
        return tuple(s for s in self.alive if HEAD_RESOURCE in s) + self.worker_types

    def fitting(self, per_worker: dict[str, float]) -> int:
        """How many of the possible nodes can each hold one such worker."""
        return sum(all(shape.get(k, 0.0) >= v for k, v in per_worker.items() if v)
                   for shape in self.possible)

    def multi_node(self, cluster: ClusterConfig) -> str | None:
        """Why a run on this cluster may span several nodes (so every worker must reach the
        storage and the data through shared storage), or None on a single node for good."""
        if len(self.alive) > 1:
            return f"the cluster has {len(self.alive)} nodes"
        if self.worker_types:
            return "the cluster's autoscaler can add worker nodes"
        need = cluster.max_workers * cluster.gpus_per_worker
        have = sum(shape.get("GPU", 0.0) for shape in self.alive)
        if need > have + 1e-9:
            return (f"the run asks for {need:g} GPUs and the nodes up now have {have:g}: the "
                    "workers will run on other nodes")
        return None


_MANY_NODES = 1000  # a node type without a maximum count: counted as this many


def _autoscaler_worker_nodes() -> tuple[dict[str, float], ...]:
    """One resource dict per worker node the autoscaler may run at most (autoscaler v2
    publishes its node types to the GCS; a private API: absent or changed means none)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        groups = list(config.node_group_configs) if config is not None else []
    except Exception:  # noqa: BLE001 - a private API
        return ()
    shapes: list[dict[str, float]] = []
    for group in groups:
        count = group.max_count if 0 <= group.max_count < sys.maxsize else _MANY_NODES
        shapes += [{k: float(v) for k, v in group.resources.items()}] * min(count, _MANY_NODES)
    return tuple(shapes)


# ---- sizing ----

def worker_cpus(cluster: ClusterConfig, cluster_cpus: float, cap: float | None = None,
                nodes: NodeShapes | None = None) -> float:
    """CPUs per worker: the flag, or a fair share: a GPU worker gets its GPU share of the CPUs
    of the smallest GPU node (beside one CPU for Ray Data), a CPU worker its share of the
    cluster's CPUs (beside the same one), at most `cap`. Whole CPUs where a worker gets one or
    more, because Ray gives a worker int(CPUs) torch threads: a lone worker on a 2-core laptop
    gets both cores, as `cvae-train` does; quarters below one."""
    if cluster.cpus_per_worker is not None:
        return cluster.cpus_per_worker
    if cluster.use_gpu:
        gpu_nodes = [s for s in (nodes.possible if nodes else ()) if s.get("GPU", 0) > 0]
        if not gpu_nodes:
            return 1.0
        share = min((s.get("CPU", 0.0) - RAY_DATA_CPUS) * min(cluster.gpus_per_worker, s["GPU"])
                    / s["GPU"] for s in gpu_nodes)
    else:
        share = (cluster_cpus - RAY_DATA_CPUS) / cluster.max_workers
    if cap is not None:
        share = min(share, cap)
    if share >= 1:
        return float(math.floor(share))
    return max(0.25, math.floor(share * 4) / 4)


def cluster_ceiling(cluster: ClusterConfig, attached: bool) -> dict[str, float] | None:
    """What the cluster can scale up to: --max-cluster-cpus/--max-cluster-gpus, else the
    autoscaler's configured maximum (autoscaler v2 publishes its node groups' limits to the
    GCS), else None (unknown: only what it has now counts)."""
    given = {k: v for k, v in (("CPU", cluster.max_cluster_cpus),
                               ("GPU", cluster.max_cluster_gpus)) if v is not None}
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


def check_placement(cluster: ClusterConfig, cpus_per_worker: float, nodes: NodeShapes) -> None:
    """STRICT_SPREAD puts each worker on a node of its own: refuse at once more workers than
    nodes that can hold one (now, or once the autoscaler has added them)."""
    if cluster.placement_strategy != "STRICT_SPREAD":
        return
    fitting = nodes.fitting(cluster.worker_resources(cpus_per_worker))
    if fitting < cluster.min_workers:
        raise CvaeError(
            f"--placement-strategy STRICT_SPREAD puts each of the {cluster.min_workers} workers "
            f"on a node of its own, but {fitting} node(s) of this cluster can hold one "
            f"({cpus_per_worker:g} CPU" + (f" + {cluster.gpus_per_worker:g} GPU"
                                             if cluster.use_gpu else "")
            + "); use PACK or SPREAD, fewer workers, or add nodes")


def check_resources(cluster: ClusterConfig, cpus_per_worker: float, attached: bool,
                    ceiling: dict[str, float] | None = None) -> None:
    """Fail fast (or after --resource-timeout) when the request cannot be placed; at once when
    it is beyond what the cluster can scale up to (`ceiling`, see cluster_ceiling). An elastic
    run needs room for its minimum."""
    import ray

    workers = cluster.min_workers
    per_worker = cluster.worker_resources(cpus_per_worker)
    check_ceiling(workers, per_worker, ceiling)
    timeout = cluster.resource_timeout if cluster.resource_timeout is not None else (
        600.0 if attached else 0.0)
    if attached and timeout > 0:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=[per_worker] * cluster.max_workers)
    deadline = time.monotonic() + timeout
    while True:
        have = ray.cluster_resources()
        if all(have.get(k, 0.0) >= workers * v - 1e-9 for k, v in per_worker.items()):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(5)
    gpus = cluster.gpus_per_worker
    raise CvaeError(
        f"the cluster cannot fit {workers} workers x {cpus_per_worker:g} CPU"
        + (f" + {gpus:g} GPU" if gpus else "")
        + f" (it has {have.get('CPU', 0.0):g} CPU, {have.get('GPU', 0.0):g} GPU"
        + (f", waited {timeout:.0f} s" if timeout else "")
        + f"); lower {cluster.workers_flag} or --cpus-per-worker"
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
