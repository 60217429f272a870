"""Ray Tune sweeps end to end, on tiny data, sharing one local Ray (~30 s to start).

1. The shipped smoke space (4 trials) searched by Optuna's TPE: ASHA stops the clearly worse
   trials early on val_psnr_avg3, results.csv has every trial ranked by it, best/ holds the best
   trial's max-val_psnr checkpoint and cvae-test runs on it.
2. A sweep interrupted (SIGINT) after its first trial finished, resumed with --resume: every trial
   ends done and the finished one is not rerun.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL_SETS, set_flags

from cvae import synth
from ray_jobs import common

ROOT = Path(__file__).resolve().parent.parent
TINY = set_flags(*TINY_MODEL_SETS, "data.clip_len=4", "validation.val_len=6",
                 "run.progress=false", "test.seq_len=6", "run.threads=1")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module. Its dashboard port is announced to every Ray process
    (RAY_API_SERVER_ADDRESS): Ray Train's placement-group cleaner finds the State API through
    it, even when other Ray instances run on this machine."""
    import ray

    port = common.free_port()
    saved = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    context = ray.init(address="local", num_cpus=4, include_dashboard=True, dashboard_port=port,
                       log_to_driver=False)
    try:
        yield context.address_info["gcs_address"]
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = saved


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "lab"
    synth.generate(root, train_videos=2, frames_per_video=16, val_frames=10, test_sequences=2,
                   test_frames=6, height=32, width=64, progress=False)
    return root


def _results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _run_main(argv: list[str]) -> int:
    from ray_jobs import tune

    with pytest.raises(SystemExit) as info:
        tune.main(argv)
    return info.value.code


def test_smoke_sweep_asha_results_best_and_tester(ray_cluster, tiny_lab, tmp_path):
    out = tmp_path / "sweep"
    start = time.monotonic()
    code = _run_main([
        "--space", str(ROOT / "tune_spaces" / "smoke.yaml"), "--data", str(tiny_lab),
        "--out", str(out), "--epochs", "4", "--grace-period", "1", "--reduction-factor", "2",
        "--max-concurrent", "1", "--resource-timeout", "0", "--search", "optuna",
        # (seed 9: Optuna's first seeded draws mix both output activations)
        "--seed", "9", *TINY,
    ])
    print(f"smoke sweep: {time.monotonic() - start:.0f} s")
    assert code == 0
    assert json.loads((out / "sweep.json").read_text())["search"] == "optuna"

    rows = _results(out)
    trials = sorted(p.name for p in (out / "trials").iterdir())
    assert len(rows) == 4 and sorted(r["trial_id"] for r in rows) == trials  # 4 in all
    assert {(r["train.kl_anneal_type"], r["model.output_activation"]) for r in rows} <= {
        ("Monotonic", "sigmoid"), ("Monotonic", "none"), ("None", "sigmoid"), ("None", "none")}
    ranked = [float(r["val_psnr_avg3"]) for r in rows]
    assert ranked == sorted(ranked, reverse=True)  # best first, by the smoothed figure
    for r in rows:  # each row matches its trial's own log
        with open(out / "trials" / r["trial_id"] / "metrics.csv", newline="") as fh:
            metrics = list(csv.DictReader(fh))
        assert int(r["epochs_run"]) == len(metrics) and r["epochs"] == "4"
        assert float(r["val_psnr"]) == pytest.approx(max(float(m["val_psnr"]) for m in metrics))
        assert float(r["val_psnr_avg3"]) == pytest.approx(
            max(float(m["val_psnr_avg3"]) for m in metrics))
        assert r["stopped_early"] == str(len(metrics) < 4)
        assert Path(r["checkpoint"]).is_file()
    # ASHA (grace 1, factor 2) stopped the trials that fell behind at epoch 1.
    stopped = [r for r in rows if r["stopped_early"] == "True"]
    assert stopped and all(r["status"] == "stopped" for r in stopped)
    assert any(r["status"] == "completed" for r in rows)

    # best/: the first-ranked trial's max-val_psnr checkpoint, ready for the Tester.
    best = out / "best"
    info = json.loads((best / "trial.json").read_text())
    assert info["trial_id"] == rows[0]["trial_id"]
    assert (best / "checkpoint.pt").read_bytes() == Path(rows[0]["checkpoint"]).read_bytes()
    state = torch.load(best / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["best_val_psnr"] == pytest.approx(float(rows[0]["val_psnr"]), abs=1e-3)
    assert (best / "config.yaml").is_file()
    # The report was written from the trials' logs.
    for name in ("report.md", "loss_by_kl_strategy.png", "beta_by_kl_strategy.png",
                 "kl_by_kl_strategy.png", "tfr_vs_loss.png", "best_psnr_per_frame.png",
                 "report_data.json"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "report_data.json").read_text())["best"] == rows[0]["trial_id"]

    from cvae import test_cli

    with pytest.raises(SystemExit) as tester:
        test_cli.main(["--checkpoint", str(best), "--data", str(tiny_lab),
                       "--out", str(tmp_path / "test"), "--set", "test.seq_len=6",
                       "--set", "run.progress=false"])
    assert tester.value.code == 0
    assert (tmp_path / "test" / "submission.csv").is_file()


def _trial_folders(out: Path) -> list[Path]:
    return sorted(p for p in (out / "trials").glob("*") if p.is_dir()) \
        if (out / "trials").is_dir() else []


def _epochs_done(folder: Path) -> int:
    file = folder / "metrics.csv"
    if not file.is_file():
        return 0
    with open(file, newline="") as fh:
        return len(list(csv.DictReader(fh)))


def test_interrupted_sweep_resumes_without_rerunning_finished_trials(
        ray_cluster, tiny_lab, tmp_path):
    space = tmp_path / "two.yaml"
    space.write_text("train.kl_anneal_type: {grid: [Monotonic, None]}\n"
                     "model.output_activation: sigmoid\n")
    out = tmp_path / "sweep"
    common = ["--out", str(out), "--resource-timeout", "0"]
    log = open(tmp_path / "first.log", "w")  # closed below
    # The first run is its own driver process (attached to this module's Ray), interrupted
    # with SIGINT (Ctrl-C) once trial 1 has all its epochs and trial 2's trainer started.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_jobs.tune", "--space", str(space), "--data", str(tiny_lab),
         "--epochs", "2", "--grace-period", "2", "--max-concurrent", "1",
         "--address", ray_cluster, *common, *TINY],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")},
    )
    start = time.monotonic()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            folders = _trial_folders(out)
            if len(folders) == 2 and _epochs_done(folders[0]) == 2 \
                    and (folders[1] / "sweep_events.log").is_file():
                break
            time.sleep(1)
        assert proc.poll() is None, "the sweep ended before it could be interrupted:\n" + \
            (tmp_path / "first.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "trial 1 did not finish in time"
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:  # a graceful stop that hangs: a hard kill is fine too
            proc.kill()
            code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
        log.close()
    print(f"first run interrupted after {time.monotonic() - start:.0f} s (exit {code})")
    first, second = _trial_folders(out)
    assert _epochs_done(first) == 2
    second_interrupted = _epochs_done(second) < 2  # (it may have just finished: that is fine)
    assert not (out / "results.csv").exists()  # an interrupted sweep writes no results
    # (its checkpoints live in its run's storage, which run.json names)
    stored = Path(json.loads((first / "run.json").read_text())["storage"])
    files = [first / "metrics.csv", first / "run.json", first / "sweep_events.log",
             *sorted(stored.glob("checkpoint_*/checkpoint.pt"))]
    assert len(files) > 3, stored
    before = {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files}

    start = time.monotonic()
    assert _run_main([*common, "--resume"]) == 0
    print(f"resumed sweep: {time.monotonic() - start:.0f} s")
    rows = _results(out)
    assert sorted(r["trial_id"] for r in rows) == [first.name, second.name]
    assert all(r["status"] == "completed" and r["epochs_run"] == "2" for r in rows)
    # The finished trial was not rerun: its files are untouched, its trainer started once.
    assert {f: (f.stat().st_mtime_ns, f.read_bytes()) for f in files} == before
    assert (first / "sweep_events.log").read_text().count("trainer started") == 1
    if second_interrupted:  # the unfinished trial ran again (from its last checkpoint)
        assert (second / "sweep_events.log").read_text().count("trainer started") == 2
    assert (out / "best" / "checkpoint.pt").is_file()
