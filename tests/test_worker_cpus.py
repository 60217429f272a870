"""CPUs per Ray Train worker: sized from the cluster, whole CPUs where a worker gets one or more."""

from __future__ import annotations

import argparse

import pytest

from cvae.errors import CvaeError
from ray_jobs.common import worker_cpus


def args(workers: int, cpus_per_worker: float | None = None, use_gpu: bool = False):
    return argparse.Namespace(num_workers=workers, cpus_per_worker=cpus_per_worker,
                              use_gpu=use_gpu)


@pytest.mark.parametrize("workers, cluster, expected", [
    (1, 3, 2.0),    # 2-core laptop (embedded Ray: cores + 1): a lone worker gets both cores
    (2, 3, 1.0),    # two workers, one core each
    (3, 3, 0.5),    # more workers than cores: fractional, so nothing waits forever
    (8, 3, 0.25),   # floored at a quarter
    (4, 65, 16.0),  # a 64-core node: whole CPUs
    (3, 8, 2.0),    # 7 / 3 = 2.33 -> 2 (Ray gives a worker int(CPUs) threads)
])
def test_cpu_workers_share_the_cluster_beside_one_cpu_for_ray_data(workers, cluster, expected):
    assert worker_cpus(args(workers), cluster) == expected


def test_cap_keeps_sweep_trials_narrow():
    assert worker_cpus(args(1), 65, cap=1.0) == 1.0
    assert worker_cpus(args(4), 3, cap=1.0) == 0.5


def test_flag_and_gpu_win_and_bad_flag_is_named():
    assert worker_cpus(args(2, cpus_per_worker=1.5), 3) == 1.5
    assert worker_cpus(args(2, use_gpu=True), 64) == 1.0
    with pytest.raises(CvaeError, match="--cpus-per-worker 0"):
        worker_cpus(args(2, cpus_per_worker=0), 3)
