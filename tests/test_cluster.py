"""The cluster layer's settings and sizing (ray_jobs.cluster), and how a launcher connects to
Ray (ray_jobs.common.connect): all without a Ray start (Ray's own calls are replaced where a
test needs a cluster's answer)."""

from __future__ import annotations

import argparse
import time

import pytest

from cvae.errors import CvaeError
from ray_jobs import cluster, common, runs
from ray_jobs.cluster import ClusterConfig, NodeShapes


def flags(*argv: str, workers: str = "2") -> argparse.Namespace:
    return argparse.ArgumentParser(parents=[cluster.cluster_args(workers=workers)]).parse_args(
        list(argv))


def config(*argv: str) -> ClusterConfig:
    return ClusterConfig.from_args(flags(*argv))


# ---- the flags, typed and checked once


def test_the_flags_become_one_checked_config():
    c = config()
    assert (c.min_workers, c.max_workers, c.gpus_per_worker, c.placement_strategy,
            c.max_failures, c.use_gpu, c.elastic) == (2, 2, 0.0, "PACK", 3, False, False)
    c = config("--num-workers", "4", "--use-gpu", "--placement-strategy", "STRICT_SPREAD",
               "--storage-path", "s3://b/p", "--name", "lab", "--max-failures", "5")
    assert (c.scaling_workers, c.gpus_per_worker, c.placement_strategy, c.storage_path,
            c.name, c.max_failures, c.backend) == (4, 1.0, "STRICT_SPREAD", "s3://b/p", "lab",
                                                   5, "nccl")
    c = config("--num-workers", "1-4")
    assert c.elastic and c.scaling_workers == (1, 4) and c.workers_text == "1-4"


def test_a_sweep_names_its_worker_count_per_trial():
    sweep = argparse.ArgumentParser(parents=[cluster.cluster_args(
        ("--workers-per-trial", "--num-workers"), "per trial", workers="1")])
    assert ClusterConfig.from_args(sweep.parse_args([])).max_workers == 1
    assert sweep.parse_args(["--workers-per-trial", "4"]).num_workers == "4"
    assert sweep.parse_args(["--num-workers", "5"]).num_workers == "5"
    with pytest.raises(CvaeError, match="^--workers-per-trial 0: must be >= 1$"):
        ClusterConfig.from_args(sweep.parse_args(["--num-workers", "0"]), "--workers-per-trial")


@pytest.mark.parametrize("argv, message", [
    (["--num-workers", "0"], "--num-workers 0: must be >= 1"),
    (["--num-workers", "two"], "--num-workers two: a number of workers, or MIN-MAX"),
    (["--num-workers", "4-2"], "--num-workers 4-2: MIN must be <= MAX"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker 0: must be > 0"),
    (["--max-failures", "-1"], "--max-failures -1: must be >= 0"),
    (["--resource-timeout", "-1"], "--resource-timeout -1: must be >= 0"),
])
def test_impossible_flags_are_one_error_naming_the_flag(argv, message):
    with pytest.raises(CvaeError, match=f"^{message}"):
        config(*argv)


@pytest.mark.parametrize("argv, expected", [
    ([], 0.0), (["--use-gpu"], 1.0), (["--gpus-per-worker", "0.25"], 0.25),
    (["--use-gpu", "--gpus-per-worker", "2"], 2.0), (["--gpus-per-worker", "1"], 1.0),
])
def test_gpus_per_worker(argv, expected):
    c = config(*argv)
    assert (c.gpus_per_worker, c.use_gpu) == (expected, expected > 0)


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "2.25", "inf", "nan"])
def test_gpus_per_worker_outside_a_share_or_whole_gpus_is_one_error(value):
    with pytest.raises(CvaeError, match=r"^--gpus-per-worker .*: must be a share of one GPU in "
                       r"\(0, 1\] or a whole number of GPUs$"):
        config("--gpus-per-worker", value)


def test_worker_resources_and_backend():
    assert config().worker_resources(2.0) == {"CPU": 2.0}
    assert config("--use-gpu").worker_resources(1.0) == {"CPU": 1.0, "GPU": 1.0}
    assert config("--gpus-per-worker", "0.25").worker_resources(0.5) == {"CPU": 0.5, "GPU": 0.25}
    assert config().backend == "gloo"
    assert config("--use-gpu").backend == "nccl"
    assert config("--num-workers", "1", "--gpus-per-worker", "0.25").backend == "nccl"
    assert config("--gpus-per-worker", "0.5").backend == "gloo"  # two ranks may share a GPU


def test_the_saved_config_comes_back_whole_and_a_stranger_key_is_refused():
    c = config("--num-workers", "1-3", "--placement-strategy", "SPREAD", "--gpus-per-worker",
               "0.5", "--storage-path", "s3://b/p", "--max-failures", "7")
    assert ClusterConfig.from_dict(c.to_dict()) == c
    with pytest.raises(CvaeError, match="unknown key 'num_gpus'"):
        ClusterConfig.from_dict({**c.to_dict(), "num_gpus": 1})
    with pytest.raises(CvaeError, match="--max-failures -1"):
        ClusterConfig.from_dict({**c.to_dict(), "max_failures": -1})


# ---- CPUs per worker: sized from the cluster, whole CPUs where a worker gets >= 1


@pytest.mark.parametrize("workers, cpus, expected", [
    ("1", 3, 2.0),    # 2-core laptop (embedded Ray: cores + 1): a lone worker gets both cores
    ("2", 3, 1.0),    # two workers, one core each
    ("3", 3, 0.5),    # more workers than cores: fractional, so nothing waits forever
    ("8", 3, 0.25),   # floored at a quarter
    ("4", 65, 16.0),  # a 64-core node: whole CPUs
    ("3", 8, 2.0),    # 7 / 3 = 2.33 -> 2 (Ray gives a worker int(CPUs) threads)
    ("1-3", 8, 2.0),  # an elastic group is sized for its largest size
])
def test_cpu_workers_share_the_cluster_beside_one_cpu_for_ray_data(workers, cpus, expected):
    assert cluster.worker_cpus(config("--num-workers", workers), cpus) == expected


def test_cap_keeps_sweep_trials_narrow():
    assert cluster.worker_cpus(config("--num-workers", "1"), 65, cap=1.0) == 1.0
    assert cluster.worker_cpus(config("--num-workers", "4"), 3, cap=1.0) == 0.5


G5_XLARGE = {"CPU": 4.0, "GPU": 1.0}
G5_12XLARGE = {"CPU": 48.0, "GPU": 4.0}
HEAD = {"CPU": 8.0, cluster.HEAD_RESOURCE: 1.0}


def test_gpu_workers_get_a_fair_share_of_their_nodes_cpus():
    nodes = NodeShapes((HEAD,), (G5_XLARGE, G5_12XLARGE))
    # The smallest GPU node decides: (4 - 1) CPUs for its one GPU.
    assert cluster.worker_cpus(config("--use-gpu"), 60, nodes=nodes) == 3.0
    assert cluster.worker_cpus(config("--use-gpu"), 60,
                               nodes=NodeShapes((HEAD, G5_12XLARGE))) == 11.0  # 47 / 4
    # Eight trials' workers sharing one 16-core GPU: 15 / 8 -> 1 each.
    h200 = NodeShapes(({"CPU": 16.0, "GPU": 1.0},))
    assert cluster.worker_cpus(config("--gpus-per-worker", "0.125"), 16, nodes=h200) == 1.0
    assert cluster.worker_cpus(config("--use-gpu"), 60, nodes=NodeShapes((HEAD,))) == 1.0
    assert cluster.worker_cpus(config("--use-gpu", "--cpus-per-worker", "6"), 60,
                               nodes=nodes) == 6.0


# ---- one node or several: known at start, also on an autoscaling cluster


def test_a_cluster_that_can_add_nodes_counts_as_multi_node():
    assert NodeShapes((HEAD,)).multi_node(config()) is None
    assert "2 nodes" in NodeShapes((HEAD, G5_XLARGE)).multi_node(config())
    # Only the head is up when the job starts, but the autoscaler has GPU worker types.
    assert "autoscaler" in NodeShapes((HEAD,), (G5_XLARGE,)).multi_node(config())
    # No autoscaler known, but the head has no GPU for the GPU workers asked for.
    assert "GPUs" in NodeShapes((HEAD,)).multi_node(config("--use-gpu"))
    assert NodeShapes(({"CPU": 16.0, "GPU": 2.0},)).multi_node(
        config("--num-workers", "2", "--use-gpu")) is None


def test_local_storage_on_an_autoscaling_cluster_with_only_its_head_up_fails_at_start():
    settings = config()
    why = NodeShapes((HEAD,), (G5_XLARGE,) * 4).multi_node(settings)
    with pytest.raises(CvaeError, match="^--storage-path /runs/ray: a local path, but the "
                       "cluster's autoscaler can add worker nodes"):
        runs.check_shared("/runs/ray", "s3://b/d.pack", settings, why)
    with pytest.raises(CvaeError, match="^--data /data/dance: a local path"):
        runs.check_shared("s3://b/runs", "/data/dance", settings, why)
    runs.check_shared("s3://b/runs", "s3://b/d.pack", settings, why)
    runs.check_shared("/mnt/efs/runs", "/mnt/efs/d", config("--shared-storage"), why)
    runs.check_shared("/runs/ray", "/data/dance", settings, None)  # one machine: fine


def test_strict_spread_needs_a_node_per_worker_at_once():
    one = NodeShapes(({"CPU": 3.0},))
    with pytest.raises(CvaeError, match="^--placement-strategy STRICT_SPREAD puts each of the 2 "
                       r"workers on a node of its own, but 1 node\(s\) of this cluster"):
        cluster.check_placement(config("--placement-strategy", "STRICT_SPREAD"), 1.0, one)
    cluster.check_placement(config("--placement-strategy", "PACK"), 1.0, one)
    # The head (no CPU for workers) does not count; an autoscaler's worker nodes do.
    nodes = NodeShapes(({"CPU": 0.0, cluster.HEAD_RESOURCE: 1.0}, {"CPU": 3.0}, {"CPU": 3.0}))
    cluster.check_placement(config("--placement-strategy", "STRICT_SPREAD"), 1.0, nodes)
    with pytest.raises(CvaeError, match="but 2 node"):
        cluster.check_placement(config("--placement-strategy", "STRICT_SPREAD",
                                       "--num-workers", "3"), 1.0, nodes)
    cluster.check_placement(config("--placement-strategy", "STRICT_SPREAD", "--use-gpu"), 1.0,
                            NodeShapes((HEAD,), (G5_XLARGE,) * 2))


# ---- the cluster's ceiling


def test_cluster_ceiling_from_flags_or_the_autoscaler(monkeypatch):
    monkeypatch.setattr(cluster, "_autoscaler_maximum", lambda: {"CPU": 64.0, "GPU": 8.0})
    assert cluster.cluster_ceiling(config(), attached=True) == {"CPU": 64.0, "GPU": 8.0}
    assert cluster.cluster_ceiling(config(), attached=False) is None  # embedded: no scaling
    limited = config("--max-cluster-gpus", "4")
    assert cluster.cluster_ceiling(limited, attached=True) == {"CPU": 64.0, "GPU": 4}
    monkeypatch.setattr(cluster, "_autoscaler_maximum", lambda: None)
    assert cluster.cluster_ceiling(limited, attached=True) == {"GPU": 4}
    assert cluster.reachable({"CPU": 8.0}, {"GPU": 4}) == (8.0, 4)
    assert cluster.reachable({"CPU": 8.0, "GPU": 1.0}, None) == (8.0, 1.0)


def test_a_request_beyond_the_ceiling_fails_at_once():
    cluster.check_ceiling(4, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 8.0, "GPU": 1.0})  # fits
    cluster.check_ceiling(4, {"CPU": 1.0, "GPU": 0.25}, None)  # unknown ceiling: nothing to say
    with pytest.raises(CvaeError, match="need 0.5 GPU, but the cluster can scale up to 0 GPU"):
        cluster.check_ceiling(2, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 8.0, "GPU": 0.0})


def test_an_elastic_run_needs_room_for_its_minimum_only(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 3.0})
    cluster.check_resources(config("--num-workers", "2-6"), 1.0, attached=False)
    with pytest.raises(CvaeError, match="cannot fit 4 workers x 1 CPU"):
        cluster.check_resources(config("--num-workers", "4-6"), 1.0, attached=False)


# ---- connecting: our own embedded Ray, or the cluster the user names


@pytest.fixture
def ray_init(monkeypatch):
    """ray.init recorded instead of run (and no Ray initialised yet)."""
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(common, "secure_token_file", lambda path: True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return calls


def test_the_embedded_ray_is_always_our_own(ray_init):
    assert common.connect(None) is False
    (call,) = ray_init
    # address="local": never whatever Ray /tmp/ray/ray_current_cluster names on this machine
    assert call["address"] == "local" and call["num_cpus"] >= 2


def test_an_address_from_the_flag_or_the_environment_attaches(ray_init, monkeypatch):
    monkeypatch.setattr(common, "attach", lambda address, flag: ray_init.append((address, flag)))
    assert common.connect("10.0.0.5:6379") is True
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert common.connect(None) is True
    assert ray_init == [("10.0.0.5:6379", "--address"), ("auto", "RAY_ADDRESS")]


@pytest.mark.parametrize("prefix", ["", "ray://"])
def test_an_address_where_nothing_answers_is_one_line_within_seconds(ray_init, prefix):
    address = f"{prefix}127.0.0.1:{common.free_port()}"
    start = time.monotonic()
    with pytest.raises(CvaeError, match=f"^--address {address}: no Ray cluster answers there"):
        common.connect(address)
    assert time.monotonic() - start < 15 and ray_init == []


def test_a_refusing_cluster_is_one_line_with_the_token_hint(monkeypatch):
    import ray

    def refuse(**_):
        raise ConnectionError("Authentication failed: the token does not match\nmore")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(CvaeError, match=r"^RAY_ADDRESS auto: cannot attach to a Ray cluster "
                       r"there \(Authentication failed: the token does not match\); the "
                       "cluster uses token authentication"):
        common.attach("auto", "RAY_ADDRESS")
