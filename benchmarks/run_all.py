"""Run every benchmark (each in its own process) and print a summary.

    python -m benchmarks.run_all --quick      # what `make bench` runs: under 10 minutes here
    python -m benchmarks.run_all              # full sizes (much longer: see BENCHMARKS.md)
    python -m benchmarks.run_all --quick --only train_step,tester

Each benchmark runs as `python -m benchmarks.<name> [--quick] --json`; its JSON figures are
collected into one summary table (and, with --out, a JSON file). A benchmark that fails is
reported and the others still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common

BENCHMARKS = ("train_step", "tester", "data_pipeline", "ray_overhead", "memory")
USES_RAY = ("data_pipeline", "ray_overhead", "memory")


def run_subprocess(name: str, size: list[str]) -> tuple[int, dict[str, Any] | None]:
    """`python -m benchmarks.<name> <size> --json`: (exit status, its figures)."""
    cmd = [sys.executable, "-m", f"benchmarks.{name}", *size, "--json"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=common.REPO_ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return proc.returncode, json.loads(line)
    return proc.returncode, None


def run_in_process(name: str, size: list[str]) -> tuple[int, dict[str, Any] | None]:
    """The benchmark's main() in this process (the smoke test: one Ray shared by all)."""
    module = importlib.import_module(f"benchmarks.{name}")
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return 0, module.main([*size, "--json"])
        except Exception as err:  # reported; the others still run
            common.stderr(f"   {name}: {type(err).__name__}: {err}")
            return 1, None


def summary_rows(name: str, f: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(figure, value, goal) rows for one benchmark's JSON figures."""
    if name == "train_step":
        tf, fr = f["teacher_forced"], f["free_running"]
        return [
            ("teacher-forced ours / lab loop",
             f"{tf['ours_fps']:.2f} / {tf['lab_loop_fps']:.2f} frames/s = {tf['ratio']:.2f}x "
             f"(cpu-time {tf['ratio_cpu_time']:.2f}x)", ">= 1.5x"),
            ("free-running ours / lab loop",
             f"{fr['ours_fps']:.2f} / {fr['lab_loop_fps']:.2f} frames/s = {fr['ratio']:.2f}x "
             f"(cpu-time {fr['ratio_cpu_time']:.2f}x)", ">= 1.0x"),
            ("achieved / matmul GFLOP/s",
             f"{f['achieved_gflops']:.1f} / {f['matmul_gflops']:.1f} = {f['efficiency']:.0%}",
             ">= 60%"),
        ]
    if name == "tester":
        return [(f"generate, {p} preset", f"{f[p]['fps']:.2f} frames/s ({f[p]['frames']} frames;"
                 f" 630 frames in {f[p]['seconds_per_630_frames']:.0f} s)", "") for p in
                ("lab", "small")]
    if name == "data_pipeline":
        r = f["read_clips_per_s"]
        return [
            ("worker waits for its next batch",
             f"{f['wait_fraction']:.1%} ({f['wait_fraction_after_first']:.1%} without each "
             f"epoch's first batch; {f['wait_fraction_unprimed']:.1%} not primed)", "< 5%"),
            ("read clips/s parquet / shard-shuffled / png / ray data",
             f"{r['parquet_dataset']:.0f} / {r['parquet_dataset_shard_shuffled']:.0f} / "
             f"{r['png_folder']:.0f} / {r['ray_data_iter_batches']:.0f}", ""),
        ]
    if name == "ray_overhead":
        rows = [("Ray start-up", f"{f['ray_start_seconds']:.1f} s", "reported apart")]
        rows.append(("Ray epoch / cvae-train epoch",
                     f"{f['ray_default']['epoch_seconds']:.1f} / "
                     f"{f['cvae_train']['epoch_seconds']:.1f} s = "
                     f"{f['ray_default']['epoch_ratio']:.2f}x", "<= 1.10x"))
        return rows
    if name == "memory":
        return [("peak RSS 4x / 1x set",
                 f"driver {f['driver_ratio']:.2f}x, worker {f['worker_ratio']:.2f}x "
                 f"(data {f['data_ratio']:.1f}x)", "<= 1.2x")]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default="", help="comma-separated subset of " + ",".join(BENCHMARKS))
    p.add_argument("--out", default=None, help="also write every benchmark's figures as JSON")
    # one process and one Ray for all (tests/test_benchmarks.py); figures get noisier
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    size = ["--tiny"] if args.tiny else ["--quick"] if args.quick else []
    results: dict[str, Any] = {}
    failed = []
    t_all = time.perf_counter()
    shared = contextlib.ExitStack()
    if args.in_process and set(names) & set(USES_RAY):
        common.ray_quiet()
        shared.enter_context(common.ray_session())
    with shared:
        for name in names:
            common.stderr(f"== benchmarks.{name} {' '.join(size)}")
            t0 = time.perf_counter()
            run = run_in_process if args.in_process else run_subprocess
            code, figures = run(name, size)
            seconds = time.perf_counter() - t0
            if code != 0 or figures is None:
                failed.append(name)
                common.stderr(f"   {name} FAILED (exit {code}) after {seconds:.0f} s")
                continue
            results[name] = {"seconds": seconds, "figures": figures}
            common.stderr(f"   {name} done in {seconds:.0f} s")
    total = time.perf_counter() - t_all
    print(f"benchmark summary ({'tiny' if args.tiny else 'quick' if args.quick else 'full'} "
          f"sizes, {total:.0f} s in all)")
    print(common.machine_line())
    print()
    width = 42
    for name in names:
        if name in failed:
            print(f"[{name}] FAILED")
            continue
        r = results[name]
        print(f"[{name}] ({r['seconds']:.0f} s)")
        for figure, value, goal in summary_rows(name, r["figures"]):
            print(f"  {figure:<{width}} {value}" + (f"   goal {goal}" if goal else ""))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
