"""Ray-free helpers of the wiring to Ray (ray_jobs.common): paths for workers, the best
checkpoint of a result, waiting for a stopped trial's Train actors to exit. The cluster flags
and sizing are tests/test_cluster.py."""

from __future__ import annotations

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


# ---- a free port


def test_free_port_can_be_listened_on():
    port = common.free_port()
    assert 0 < port < 65536
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


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
