"""Ray-free helpers of the cluster layer: paths for workers, waiting for a stopped trial's Train
actors to exit."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

import pytest
import ray.util.state

from cvae.config import load_config
from cvae.errors import CvaeError
from ray_jobs import common


def actor(class_name: str, state: str, pid: int | None = None):
    return SimpleNamespace(class_name=class_name, state=state, pid=pid)


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
