"""Memory: peak RSS of the driver and of a Ray Train worker for one epoch, data set 1x vs 4x.

    python -m benchmarks.memory [--quick] [--json]

Runs `python -m ray_jobs.train` (one worker, one epoch over every clip) on the embedded default
synthetic set and on one with 4x the training videos (`cvae.synth.generate(train_videos=32)`),
both packed to Parquet, in one Ray session. The worker runs the project's own
`ray_jobs.worker.train_loop_per_worker`, wrapped to write its peak RSS (VmHWM) at the end; the
driver's peak is reset before each run (/proc/self/clear_refs). Data streams through Ray Data, so
the peaks should barely move with the data set size (goal: 4x set <= 1.2x the 1x peak).

The model is shrunk (`model.*_channels`) and validation shortened: what is measured is the data
path, and a full-size model would only make the epoch slower without changing what streams.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks import common


def measured_loop(loop_config: dict[str, Any]) -> None:
    """`ray_jobs.worker.train_loop_per_worker`, then this worker's peak RSS to a JSON file."""
    import ray.train

    from benchmarks import common as bench_common
    from ray_jobs import worker

    start_rss = bench_common.rss_mb()
    worker.train_loop_per_worker(loop_config)
    rank = ray.train.get_context().get_world_rank()
    out = Path(loop_config["config"]["run"]["out"]) / f"bench_memory_rank{rank}.json"
    out.write_text(json.dumps({"peak_rss_mb": bench_common.peak_rss_mb(),
                               "end_rss_mb": bench_common.rss_mb(), "start_rss_mb": start_rss}))


def run_set(root: Path, out: Path, settings: list[str], *, clip_len: int) -> dict[str, float]:
    """One Ray training epoch on `root`; peak RSS of the driver (during it) and of worker 0."""
    from benchmarks.memory import measured_loop as loop  # by reference, also from __main__
    from benchmarks.ray_overhead import run_main
    from ray_jobs import train as ray_train
    from ray_jobs import worker

    # 16 clips per shard: several shards even in quick mode, so streaming can show
    pack = common.packed(root, clip_len=clip_len, rows_per_file=16)
    before = common.rss_mb()
    reset = common.reset_peak_rss()
    original = worker.train_loop_per_worker
    worker.train_loop_per_worker = loop  # build_trainer looks the name up at call time
    try:
        wall = run_main(ray_train.main, settings + ["--data", str(pack), "--out", str(out),
                                                    "--num-workers", "1"])
    finally:
        worker.train_loop_per_worker = original
    worker_peaks = json.loads((out / "bench_memory_rank0.json").read_text())
    from cvae import packs

    meta = packs.split_meta(pack, "train")
    pack_mb = sum(f.stat().st_size for f in (pack / "train").iterdir()) / 2**20
    return {"driver_peak_rss_mb": common.peak_rss_mb() if reset else float("nan"),
            "driver_rss_before_mb": before,
            "worker_peak_rss_mb": worker_peaks["peak_rss_mb"],
            "worker_end_rss_mb": worker_peaks["end_rss_mb"],
            "clips": meta["num_clips"], "shards": len(meta["files"]), "pack_mb": pack_mb,
            "wall_seconds": wall}


def build_parser():
    return common.parser(__doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.ray_quiet()
    frames = common.size(args, 160, 64, 16)  # per video; the default set has 160
    small = dict(frames_per_video=frames, val_frames=common.size(args, 630, 64, 8),
                 test_sequences=1, test_frames=4)
    if args.tiny or args.quick:
        small |= {"height": 32, "width": 64}  # generated at the training size: faster
    videos = common.size(args, 8, 8, 2)
    sets = {"1x": common.synth_set(train_videos=videos, **small),
            "4x": common.synth_set(train_videos=4 * videos, **small)}
    clip_len = common.size(args, 16, 16, 4)
    settings = [
        "--preset", "small", "--epochs", "1",
        "--set", f"data.clip_len={clip_len}",
        "--set", "model.frame_channels=8", "--set", "model.label_channels=4",
        "--set", "model.latent_channels=4", "--set", "model.decoder_channels=8",
        "--set", f"validation.val_len={common.size(args, 16, 16, 4)}",
        "--set", "run.progress=false", "--set", "train.per_save=0",
    ] + (["--set", "run.threads=1"] if args.tiny else [])
    results: dict[str, dict[str, float]] = {}
    with common.ray_session() as ray_start_s, common.temp_dir("cvae-bench-mem-") as tmp:
        for name, root in sets.items():
            common.stderr(f"memory: one Ray epoch on the {name} set ({root}) ...")
            results[name] = run_set(root, tmp / name, settings, clip_len=clip_len)
    one, four = results["1x"], results["4x"]
    figures: dict[str, Any] = {
        "sets": results,
        "driver_ratio": four["driver_peak_rss_mb"] / one["driver_peak_rss_mb"],
        "worker_ratio": four["worker_peak_rss_mb"] / one["worker_peak_rss_mb"],
        "data_ratio": four["pack_mb"] / one["pack_mb"],
        "ray_start_seconds": ray_start_s,
        "machine": common.machine(),
    }
    lines = [
        "memory benchmark: one Ray Train epoch (1 worker), peak RSS", common.machine_line(), "",
        f"{'set':<4} {'clips':>6} {'shards':>7} {'pack MB':>8} {'driver peak MB':>15} "
        f"{'worker peak MB':>15} {'wall s':>7}",
    ]
    for name, r in results.items():
        lines.append(f"{name:<4} {r['clips']:>6} {r['shards']:>7} {r['pack_mb']:8.1f} "
                     f"{r['driver_peak_rss_mb']:15.0f} {r['worker_peak_rss_mb']:15.0f} "
                     f"{r['wall_seconds']:7.1f}")
    lines += [
        f"driver_ratio {figures['driver_ratio']:.2f}x  worker_ratio {figures['worker_ratio']:.2f}x"
        f"  (data {figures['data_ratio']:.1f}x; goal <= 1.2x)",
        f"Ray start-up {ray_start_s:.1f} s",
    ]
    common.emit(args, figures, lines)
    return figures


if __name__ == "__main__":
    main()
