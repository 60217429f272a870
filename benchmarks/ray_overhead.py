"""Ray overhead: a one-worker Ray Train epoch against a `cvae-train` epoch on the same Parquet data.

    python -m benchmarks.ray_overhead [--quick] [--json] [--epochs N]

Runs, in this order and in one process: `cvae-train` (`cvae.train_cli.main`: `fit` over
`loader_epochs` of the Parquet pack), Ray start-up (timed on its own), then
`python -m ray_jobs.train --num-workers 1` with the default CPU share (a lone worker gets the
cores beside one CPU kept for Ray Data: every core here, as cvae-train has), then (full size only)
`cvae-train` again, so that the single-process runs bracket the Ray run against drifting load.
Small preset; steps per epoch are capped (--steps).
Per-epoch `seconds` come from each run's metrics.csv (the training loop alone: data loading +
steps, no validation); wall time is the whole `main()` call.
"""

from __future__ import annotations

import contextlib
import io
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def run_main(main, argv: list[str], quiet: bool = True) -> float:
    """Call a cli_entry main; return its wall time. Raises on a non-zero exit."""
    t0 = time.perf_counter()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    if code not in (0, None):
        raise RuntimeError(f"{getattr(main, '__module__', main)} {' '.join(argv)} exited {code}:"
                           f"\n{sink.getvalue()[-2000:]}")
    return time.perf_counter() - t0


def epoch_seconds(out: Path) -> list[float]:
    from cvae.rundir import read_metrics

    return [r["seconds"] for r in read_metrics(out)]


def build_parser():
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs per run (default 3; --quick 2); epoch 1 (Ray Data start-up, "
                        "oneDNN warm-up) is reported apart")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per epoch (default 10; --quick 6; 0: whole epochs, 40 steps of 2 "
                        "clips on the default set)")
    p.add_argument("--clip-len", type=int, default=None,
                   help="frames per clip (default 16; --quick 8: cheaper steps)")
    p.add_argument("--val-len", type=int, default=None,
                   help="frames of the validation rollout between epochs (default 64; --quick "
                        "16; 630: the real one, behind which the next epoch's data start-up hides)")
    p.add_argument("--preset", choices=["small", "lab"], default="small")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads on both sides (run.threads; default torch's: the cores "
                        "here, and as many as the Ray worker has CPUs)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="the Ray worker's CPUs (default: ray_jobs.train's, the cores beside one "
                        "for Ray Data)")
    p.add_argument("--keep", default=None, help="keep the run folders under this folder")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.ray_quiet()
    import torch

    from cvae import train_cli
    from ray_jobs import train as ray_train

    if args.tiny:
        root = common.synth_set(train_videos=2, frames_per_video=16, val_frames=8,
                                test_sequences=1, test_frames=4, height=32, width=64)
    else:
        root = common.synth_set()  # the embedded default set: 80 clips of 16 frames
    clip_len = args.clip_len or common.size(args, 16, 8, 4)
    pack = common.packed(root, clip_len=clip_len)
    epochs = args.epochs or common.size(args, 3, 2, 1)
    steps = args.steps if args.steps is not None else common.size(args, 10, 6, 2)
    settings = [
        "--preset", "small" if args.tiny else args.preset, "--data", str(pack),
        "--epochs", str(epochs),
        "--set", f"data.clip_len={clip_len}",
        "--set", f"validation.val_len={args.val_len or common.size(args, 64, 16, 4)}",
        "--set", f"train.max_steps_per_epoch={steps}",
        "--set", "run.progress=false", "--set", "train.per_save=0",
    ]
    if args.threads:
        settings += ["--set", f"run.threads={args.threads}"]
    if args.tiny:
        settings += ["--set", "run.threads=1",
                     "--set", "model.frame_channels=8", "--set", "model.label_channels=4",
                     "--set", "model.latent_channels=4", "--set", "model.decoder_channels=8"]
    keep = Path(args.keep) if args.keep else None
    with common.temp_dir("cvae-bench-ray-") as tmp:
        base = keep or tmp
        runs: dict[str, dict[str, Any]] = {}

        def single(tag: str, extra: tuple[str, ...] | list[str] = ()) -> None:
            out = base / tag
            common.stderr(f"ray_overhead: {tag} (cvae-train {' '.join(extra)}) ...")
            threads = torch.get_num_threads()  # configure_torch sets them process-wide
            try:
                wall = run_main(train_cli.main, settings + ["--out", str(out), *extra])
            finally:
                torch.set_num_threads(threads)
            runs[tag] = {"wall": wall, "epochs": epoch_seconds(out)}

        def ray_run(tag: str, extra: list[str]) -> None:
            out = base / tag
            common.stderr(f"ray_overhead: {tag} (python -m ray_jobs.train {' '.join(extra)}) ...")
            wall = run_main(ray_train.main, settings + ["--out", str(out), "--num-workers", "1",
                                                        *extra])
            runs[tag] = {"wall": wall, "epochs": epoch_seconds(out)}

        single("cvae_train_1")
        common.stderr("ray_overhead: starting Ray ...")
        with common.ray_session() as ray_start_s:
            ray_run("ray_default", [] if args.cpus_per_worker is None
                    else ["--cpus-per-worker", str(args.cpus_per_worker)])
        if not (args.tiny or args.quick):
            single("cvae_train_2")

    singles = [r for k, r in runs.items() if k.startswith("cvae_train_") and "thread" not in k]

    def steady(r: dict[str, Any]) -> float:
        """Mean epoch seconds, leaving out epoch 1 when there are more (warm-up)."""
        e = r["epochs"]
        return statistics.mean(e[1:] if len(e) > 1 else e)

    base_epoch = statistics.mean(steady(r) for r in singles)
    base_first = statistics.mean(r["epochs"][0] for r in singles)
    base_wall = statistics.mean(r["wall"] for r in singles)
    figures: dict[str, Any] = {
        "ray_start_seconds": ray_start_s,
        "cvae_train": {"epoch_seconds": base_epoch, "first_epoch_seconds": base_first,
                       "wall_seconds": base_wall,
                       "runs": {k: r for k, r in runs.items() if k.startswith("cvae_train")}},
    }
    for tag in ("ray_default",):
        if tag in runs:
            r = runs[tag]
            figures[tag] = {
                "epoch_seconds": steady(r), "first_epoch_seconds": r["epochs"][0],
                "wall_seconds": r["wall"], "epochs": r["epochs"],
                "epoch_ratio": steady(r) / base_epoch,
                "first_epoch_ratio": r["epochs"][0] / base_first,
                "wall_ratio": r["wall"] / base_wall,
            }
    figures["config"] = {"epochs": epochs, "max_steps_per_epoch": steps, "clip_len": clip_len,
                         "preset": "tiny" if args.tiny else args.preset, "pack": str(pack),
                         "threads": args.threads, "cpus_per_worker": args.cpus_per_worker}
    figures["machine"] = common.machine()
    lines = [
        f"ray_overhead benchmark: {epochs} epoch(s) per run, "
        f"{'whole epochs' if not steps else f'{steps} steps per epoch'}, data {pack}"
        + (f", run.threads={args.threads}" if args.threads else "")
        + (f", --cpus-per-worker {args.cpus_per_worker:g}" if args.cpus_per_worker else ""),
        common.machine_line(), "",
        f"Ray start-up (ray.init, local, dashboard on): {ray_start_s:.1f} s (not in the ratios)",
        f"{'run':<18} {'epoch s':>9} {'1st epoch s':>12} {'wall s':>8} {'epoch ratio':>12} "
        f"{'wall ratio':>11}",
    ]
    for tag, r in runs.items():
        f = figures.get(tag, {})
        lines.append(f"{tag:<18} {steady(r):9.2f} {r['epochs'][0]:12.2f} {r['wall']:8.1f} "
                     f"{f.get('epoch_ratio', 1.0):11.2f}x {r['wall'] / base_wall:10.2f}x")
    lines.append("goal: Ray epoch <= 1.10x the cvae-train epoch after start-up "
                 "(epoch ratio; wall includes the Ray run's per-run set-up)")
    common.emit(args, figures, lines)
    return figures


if __name__ == "__main__":
    main()
