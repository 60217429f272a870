"""Smoke tests of the benchmark scripts at their smallest size (--tiny).

They check that each script runs and prints its figures (labels and JSON keys), never the
values: timings on a shared machine are not test material. The Ray-based benchmarks share one
Ray start in a single test (marked `ray`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cvae.config import load_config
from cvae.model import CVAE

ROOT = Path(__file__).resolve().parent.parent


def train_step_module():
    """benchmarks.train_step (`benchmarks` is a folder of the checkout, not an installed
    package: plain `pytest` does not put the checkout on sys.path)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import benchmarks.train_step

    return benchmarks.train_step


def run(*args: str, cache: Path, timeout: int = 300) -> str:
    env = {**os.environ, "CVAE_BENCH_CACHE": str(cache), "RAY_AUTH_MODE": "token"}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-cache")


@pytest.mark.slow  # the benchmark's command in a subprocess, end to end (~20 s)
def test_train_step_prints_its_figures(cache, tmp_path):
    figures_file = tmp_path / "train_step.json"
    out = run("benchmarks.train_step", "--tiny", "--explore", "layout,chunk", "--chunks", "1",
              "--bf16", "--json-out", str(figures_file), cache=cache)
    for label in ("ours teacher-forced", "lab teacher-forced", "ours free-running",
                  "lab free-running", "ours tf NCHW", "ours tf chunk 1", "ours tf one pass",
                  "ours tf bf16", "ours fr bf16",
                  "teacher_forced:", "free_running:", "ratio", "step_gflop", "achieved_gflops",
                  "matmul_gflops", "efficiency", "machine:"):
        assert label in out
    figures = json.loads(figures_file.read_text())
    for kind in ("teacher_forced", "free_running"):
        assert {"ours_fps", "lab_loop_fps", "ratio"} <= set(figures[kind])
    assert {"step_gflop", "achieved_gflops", "matmul_gflops"} <= set(figures)


@pytest.mark.slow  # benchmarks.ddp_fit and cvae-train, each end to end
def test_ddp_fit_on_one_rank_trains_as_cvae_train_does(cli, tiny_train_argv, tmp_path):
    """benchmarks.ddp_fit (DDP without Ray; gloo here, nccl on a GPU): one rank = cvae-train."""
    import csv

    from cvae.train_cli import main as train_main

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from benchmarks.ddp_fit import main as ddp_main

    assert cli(ddp_main, tiny_train_argv(tmp_path / "ddp", "--epochs", "2")) == 0
    assert cli(train_main, tiny_train_argv(tmp_path / "plain", "--epochs", "2")) == 0
    rows = [list(csv.DictReader(open(tmp_path / name / "metrics.csv")))
            for name in ("ddp", "plain")]
    assert len(rows[0]) == len(rows[1]) == 2
    for ddp, plain in zip(*rows, strict=True):
        assert float(ddp["loss"]) == pytest.approx(float(plain["loss"]), rel=1e-4)
        assert float(ddp["val_psnr"]) == pytest.approx(float(plain["val_psnr"]), abs=1e-3)


def test_lab_loop_trains_the_model():
    """The lab loop is a real training step: finite loss, every step changes the weights."""
    bench = train_step_module()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: two threads only spin-wait on a busy machine
    try:
        cfg = load_config(None, preset="small")
        torch.manual_seed(0)
        model = CVAE(cfg.model).train()
        frames, poses = torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64)
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = bench.lab_loop_step(model, opt, frames, poses, beta=1.0, teacher_forced=False,
                                   grad_clip=1.0)
        assert torch.isfinite(loss)
        assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # the benchmark's command in a subprocess, end to end
def test_tester_prints_its_figures(cache, tmp_path):
    figures_file = tmp_path / "tester.json"
    out = run("benchmarks.tester", "--tiny", "--json-out", str(figures_file), cache=cache)
    for label in ("lab", "small", "frames/s", "630 frames", "machine:"):
        assert label in out
    figures = json.loads(figures_file.read_text())
    assert {"fps", "frames"} <= set(figures["lab"]) and "fps" in figures["small"]


@pytest.mark.slow  # the benchmark's command in a subprocess, end to end
def test_run_all_summarises(cache, tmp_path):
    results = tmp_path / "results.json"
    out = run("benchmarks.run_all", "--tiny", "--in-process", "--only", "tester", "--out",
              str(results), cache=cache)
    assert "benchmark summary" in out and "[tester]" in out and "generate, lab preset" in out
    assert "fps" in json.loads(results.read_text())["tester"]["figures"]["lab"]


@pytest.mark.ray
def test_ray_benchmarks_print_their_figures(cache, tmp_path):
    """data_pipeline, ray_overhead and memory at --tiny, in one process sharing one Ray."""
    results = tmp_path / "results.json"
    out = run("benchmarks.run_all", "--tiny", "--in-process", "--only",
              "data_pipeline,ray_overhead,memory", "--out", str(results), cache=cache,
              timeout=600)
    for label in ("worker waits for its next batch", "read clips/s", "Ray start-up",
                  "Ray epoch / cvae-train epoch", "peak RSS 4x / 1x set", "not primed"):
        assert label in out
    figures = {k: v["figures"] for k, v in json.loads(results.read_text()).items()}
    assert {"wait_fraction", "wait_fraction_unprimed", "read_clips_per_s"} <= set(
        figures["data_pipeline"])
    assert {"parquet_dataset", "parquet_dataset_shard_shuffled", "png_folder",
            "ray_data_iter_batches"} <= set(
        figures["data_pipeline"]["read_clips_per_s"])
    assert {"ray_start_seconds", "cvae_train", "ray_default"} <= set(figures["ray_overhead"])
    assert {"driver_ratio", "worker_ratio"} <= set(figures["memory"])
    for name in ("1x", "4x"):
        assert {"driver_peak_rss_mb", "worker_peak_rss_mb"} <= set(figures["memory"]["sets"][name])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_gpu_check_runs_on_a_cpu_at_its_smallest_size(tmp_path):
    """benchmarks/gpu_check.sh with QUICK=1: every step of the device check (cold start, two
    Ray Train runs, two sweeps) runs here and prints its figure, so the one prepared call on a
    lent GPU machine does not fail on a typo."""
    out = tmp_path / "out"
    env = {**os.environ, "QUICK": "1", "PYTHON": sys.executable, "WORK": str(tmp_path / "work"),
           "RAY_AUTH_MODE": "token"}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out)], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=880)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = (out / "figures.txt").read_text()
    for label in ("train_step: rc 0", "tf: rc 0", "tf_fp32: rc 0", "fr: rc 0", "sweep1: rc 0",
                  "sweep2: rc 0, wall"):
        assert label in figures, figures
    assert figures.count("training frames/s: epoch 1") == 3, figures
    assert "validation rollout" in figures, figures
    assert figures.rstrip().endswith("2 trial folders"), figures
    assert len(list(out.iterdir())) <= 8  # what a device run brings back
