"""Ray-free helpers of the cluster layer (ray_jobs.common): the cluster flags, CPUs per worker,
paths for workers, waiting for a stopped trial's Train actors to exit."""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest
import ray.util.state

from cvae.config import load_config
from cvae.errors import CvaeError
from ray_jobs import common


def actor(class_name: str, state: str, pid: int | None = None, job_id: str = "01000000"):
    return SimpleNamespace(class_name=class_name, state=state, pid=pid, job_id=job_id)


def fake_list_actors(monkeypatch, snapshots):
    """list_actors answers each snapshot in turn, then the last one for ever."""
    calls = []

    def list_actors(**_):
        calls.append(1)
        return snapshots[min(len(calls), len(snapshots)) - 1]

    monkeypatch.setattr(ray.util.state, "list_actors", list_actors)
    monkeypatch.setattr(common.time, "sleep", lambda _s: None)
    return calls


def test_waits_until_train_workers_are_no_longer_alive(monkeypatch):
    calls = fake_list_actors(monkeypatch, [
        [actor("RayTrainWorker", "ALIVE"), actor("_StatsActor", "ALIVE")],
        [actor("RayTrainWorker", "ALIVE")],
        [actor("RayTrainWorker", "DEAD"), actor("_StatsActor", "ALIVE")],
    ])
    assert common.wait_for_train_actors(timeout=30) == 0
    assert len(calls) == 3  # other actors (Ray Data's, Ray's own) are not waited for


def test_another_jobs_train_actors_are_not_waited_for(monkeypatch):
    # another job's training (its own driver) keeps running; the sweep only waits for its own
    other = actor("RayTrainWorker", "ALIVE", job_id="02000000")
    calls = fake_list_actors(monkeypatch, [
        [actor("TrainController", "ALIVE"), other],
        [actor("TrainController", "DEAD"), other, actor("TrainController", "ALIVE", job_id="03")],
    ])
    assert common.wait_for_train_actors(job_id="01000000", timeout=30) == 0
    assert len(calls) == 2
    assert common.wait_for_train_actors(timeout=0) == 2  # without a job: every job's


def test_a_dead_actor_whose_process_still_runs_is_waited_for(monkeypatch):
    # Ray marks a killed actor DEAD before its process exits; that process can still write.
    proc = subprocess.Popen(["bash", "-c", "exec -a ray::RayTrainWorker sleep 30"])
    try:
        for _ in range(100):  # until exec has retitled the process
            if common._process_runs(proc.pid, "RayTrainWorker"):
                break
            time.sleep(0.02)
        dead = [actor("RayTrainWorker", "DEAD", proc.pid)]
        fake_list_actors(monkeypatch, [dead])
        assert common.wait_for_train_actors(timeout=0) == 1
        proc.kill()
        proc.wait()
        assert common.wait_for_train_actors(timeout=0) == 0
    finally:
        proc.kill()


def test_a_pid_of_another_program_is_not_a_running_actor():
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert not common._process_runs(proc.pid, "RayTrainWorker")
    finally:
        proc.kill()


def test_gives_up_after_the_timeout_and_says_so(monkeypatch, capsys):
    fake_list_actors(monkeypatch, [[actor("TrainController", "ALIVE")]])
    assert common.wait_for_train_actors(timeout=0) == 1
    assert "still running" in capsys.readouterr().out


def test_no_state_api_means_no_wait(monkeypatch, capsys):
    def broken(**_):
        raise ConnectionError("no dashboard")

    monkeypatch.setattr(ray.util.state, "list_actors", broken)
    assert common.wait_for_train_actors(timeout=30) == 0
    assert "cannot list Ray actors" in capsys.readouterr().out


def test_absolutize_gives_workers_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    cfg = load_config(overrides=["data.root=d", "run.out=o", "train.init_from=runs/a"])
    common.absolutize(cfg)
    assert (cfg.data.root, cfg.run.out, cfg.train.init_from) == (
        str(tmp_path / "d"), str(tmp_path / "o"), str(tmp_path / "runs" / "a"))
    cfg = load_config(overrides=["data.root=d"])
    common.absolutize(cfg)
    assert cfg.train.init_from == ""  # nothing to start from stays nothing


def test_absolutize_refuses_relative_paths_in_a_submitted_job(monkeypatch):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    cfg = load_config(overrides=["data.root=/d", "run.out=/o", "train.init_from=runs/a"])
    with pytest.raises(CvaeError, match="^train.init_from runs/a: use an absolute path"):
        common.absolutize(cfg)
    common.absolutize(load_config(overrides=["data.root=/d", "run.out=/o"]))  # no init_from: fine


# ---- CPUs per Ray Train worker: sized from the cluster, whole CPUs where a worker gets >= 1


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
    assert common.worker_cpus(args(workers), cluster) == expected


def test_cap_keeps_sweep_trials_narrow():
    assert common.worker_cpus(args(1), 65, cap=1.0) == 1.0
    assert common.worker_cpus(args(4), 3, cap=1.0) == 0.5


def test_flag_and_gpu_win_and_bad_flag_is_named():
    assert common.worker_cpus(args(2, cpus_per_worker=1.5), 3) == 1.5
    assert common.worker_cpus(args(2, use_gpu=True), 64) == 1.0
    with pytest.raises(CvaeError, match="--cpus-per-worker 0"):
        common.worker_cpus(args(2, cpus_per_worker=0), 3)


# ---- the cluster flags and a free port


def test_cluster_args_is_a_parent_with_the_cluster_flags():
    parser = argparse.ArgumentParser(parents=[common.cluster_args()])
    parsed = parser.parse_args([])
    assert parsed.num_workers == 2 and not parsed.use_gpu and parsed.cpus_per_worker is None
    parsed = parser.parse_args(["--num-workers", "3", "--use-gpu", "--cpus-per-worker", "1.5"])
    assert (parsed.num_workers, parsed.use_gpu, parsed.cpus_per_worker) == (3, True, 1.5)
    # a sweep names the worker count per trial, and keeps --num-workers as another spelling
    sweep = argparse.ArgumentParser(parents=[common.cluster_args(
        ("--workers-per-trial", "--num-workers"), "per trial", num_workers=1)])
    assert sweep.parse_args([]).num_workers == 1
    assert sweep.parse_args(["--workers-per-trial", "4"]).num_workers == 4
    assert sweep.parse_args(["--num-workers", "5"]).num_workers == 5


def test_free_port_can_be_listened_on():
    port = common.free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# ---- GPUs per worker: whole or shared GPUs, the resources asked for, the cluster's ceiling


def gpu_args(workers: int = 1, use_gpu: bool = False, gpus: float | None = None, **more):
    return argparse.Namespace(num_workers=workers, use_gpu=use_gpu, gpus_per_worker=gpus,
                              cpus_per_worker=None, **more)


@pytest.mark.parametrize("flags, expected", [
    ([], (False, None)),
    (["--use-gpu"], (True, 1.0)),
    (["--gpus-per-worker", "0.25"], (True, 0.25)),  # a share implies GPU workers
    (["--use-gpu", "--gpus-per-worker", "2"], (True, 2.0)),
    (["--gpus-per-worker", "1"], (True, 1.0)),
])
def test_gpus_per_worker_flag(flags, expected):
    parsed = argparse.ArgumentParser(parents=[common.cluster_args()]).parse_args(flags)
    common.resolve_gpus(parsed)
    assert (parsed.use_gpu, parsed.gpus_per_worker) == expected
    common.resolve_gpus(parsed)  # settled flags stay as they are (a sweep's --resume reuses them)
    assert (parsed.use_gpu, parsed.gpus_per_worker) == expected


@pytest.mark.parametrize("value", [0, -0.5, 1.5, 2.25, float("inf"), float("nan")])
def test_gpus_per_worker_outside_a_share_or_whole_gpus_is_one_error(value):
    with pytest.raises(CvaeError, match=r"^--gpus-per-worker .*: must be a share of one GPU in "
                       r"\(0, 1\] or a whole number of GPUs$"):
        common.resolve_gpus(gpu_args(gpus=value))


def test_worker_resources_and_backend():
    assert common.worker_resources(gpu_args(), 2.0) == {"CPU": 2.0}
    assert common.worker_resources(gpu_args(use_gpu=True), 1.0) == {"CPU": 1.0, "GPU": 1.0}
    assert common.worker_resources(gpu_args(gpus=0.25), 0.5) == {"CPU": 0.5, "GPU": 0.25}
    assert common.torch_backend(gpu_args()) == "gloo"
    assert common.torch_backend(gpu_args(2, use_gpu=True)) == "nccl"
    assert common.torch_backend(gpu_args(1, gpus=0.25)) == "nccl"
    assert common.torch_backend(gpu_args(2, gpus=0.5)) == "gloo"  # two ranks may share a GPU


def test_cluster_ceiling_from_flags_or_the_autoscaler(monkeypatch):
    monkeypatch.setattr(common, "_autoscaler_maximum", lambda: {"CPU": 64.0, "GPU": 8.0})
    flags = gpu_args(max_cluster_cpus=None, max_cluster_gpus=None)
    assert common.cluster_ceiling(flags, attached=True) == {"CPU": 64.0, "GPU": 8.0}
    assert common.cluster_ceiling(flags, attached=False) is None  # an embedded Ray: no scaling
    flags.max_cluster_gpus = 4
    assert common.cluster_ceiling(flags, attached=True) == {"CPU": 64.0, "GPU": 4}
    monkeypatch.setattr(common, "_autoscaler_maximum", lambda: None)
    assert common.cluster_ceiling(flags, attached=True) == {"GPU": 4}
    assert common.reachable({"CPU": 8.0}, {"GPU": 4}) == (8.0, 4)
    assert common.reachable({"CPU": 8.0, "GPU": 1.0}, None) == (8.0, 1.0)


def test_a_request_beyond_the_ceiling_fails_at_once():
    common.check_ceiling(4, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 8.0, "GPU": 1.0})  # fits
    common.check_ceiling(4, {"CPU": 1.0, "GPU": 0.25}, None)  # unknown ceiling: nothing to say
    with pytest.raises(CvaeError, match="need 0.5 GPU, but the cluster can scale up to 0 GPU"):
        common.check_ceiling(2, {"CPU": 1.0, "GPU": 0.25}, {"CPU": 8.0, "GPU": 0.0})


@pytest.mark.parametrize("best_by, path", [("val_psnr", "b"), ("val_psnr_avg3", "c"),
                                           ("epoch", "d")])
def test_best_checkpoint_of_a_result_by_best_by(best_by, path):
    """Among the validated checkpoints Ray kept, the highest `best_by` figure wins."""
    kept = [({"epoch": 1, "val_psnr": 20.0, "val_psnr_avg3": 20.0}, "a"),
            ({"epoch": 2, "val_psnr": 23.0, "val_psnr_avg3": 21.5}, "b"),
            ({"epoch": 3, "val_psnr": 22.5, "val_psnr_avg3": 21.8}, "c"),
            ({"epoch": 4, "val_psnr": 21.0, "val_psnr_avg3": 21.7}, "d"),
            ({"epoch": 5}, "e")]  # not validated: never the best
    result = SimpleNamespace(best_checkpoints=[(SimpleNamespace(path=p), m) for m, p in kept])
    metrics, found = common.best_checkpoint(result, best_by)
    assert found == path and metrics["epoch"] == "abcd".index(path) + 1
    assert common.best_checkpoint(SimpleNamespace(best_checkpoints=[]), best_by) is None
