"""Data pipeline: how long a Ray Train worker waits for its next batch, and read throughput.

    python -m benchmarks.data_pipeline [--quick] [--json] [--workers 1]

1. Input stall: the real Ray Train worker loop (`ray_jobs.common.build_trainer`: Ray Data
   shards, `cvae.training.fit` with validation between epochs, small preset) with every
   `next()` on each epoch's batch iterator timed (`EpochData.wrapped`, `timed_batches`).
   Figure: wait / (wait + step) over the epoch (goal < 5%), with and without each epoch's first
   batch (the pipeline's start-up).
2. Read throughput in clips/s, one process: `ParquetClipDataset` (sequential and shuffled item
   access), `ClipDataset` over the PNG folder it was packed from, and
   `ray.data.read_parquet(...).iter_batches` + `decode_batch` in the driver.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from benchmarks import common

# ---------------------------------------------------------------- inside the Ray Train worker

def timed_batches(batches, epoch: int, *, rank: int, out: str):
    """Pass a worker's epoch of batches through, timing each `next()` (the wait) and the time
    until the training loop asks for the next one (the step); written to
    <out>/timings/epoch<e>_rank<r>.json when the loop lets go of the iterator."""
    import torch

    waits: list[float] = []
    steps: list[float] = []
    resumed = None
    try:
        it = iter(batches)
        while True:
            t0 = time.perf_counter()
            if resumed is not None:
                steps.append(t0 - resumed)
            try:
                batch = next(it)
            except StopIteration:
                waits.append(time.perf_counter() - t0)  # the wait for "no more batches"
                resumed = None
                break
            waits.append(time.perf_counter() - t0)
            resumed = time.perf_counter()
            yield batch
    finally:
        if resumed is not None:  # a step cap: the loop stopped asking after the last step
            steps.append(time.perf_counter() - resumed)
        folder = Path(out) / "timings"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"epoch{epoch + 1}_rank{rank}.json").write_text(json.dumps(
            {"waits": waits, "steps": steps, "torch_threads": torch.get_num_threads()}))


def stall(pack: Path, cfg_argv: list[str], *, workers: int, epochs: int, max_steps: int,
          tmp: Path, prime: bool, val_len: int) -> list[list[dict[str, Any]]]:
    """The real Ray Train worker loop (`ray_jobs.common.build_trainer`: Ray Data shards, `fit`,
    validation, checkpoints) on `workers` workers, every epoch's batches timed by
    `timed_batches`; returns per rank the per-epoch timings."""
    import ray

    from benchmarks.data_pipeline import timed_batches as timed  # by reference, also from __main__
    from cvae.config import load_config
    from cvae.packs import check_pack
    from ray_jobs import common as ray_common
    from ray_jobs.cluster import ClusterConfig, worker_cpus
    from ray_jobs.runs import RunStorage

    name = "stall_primed" if prime else "stall_unprimed"
    cfg = load_config(None, preset="small", overrides=[
        *cfg_argv, f"train.epochs={epochs}", f"train.max_steps_per_epoch={max_steps}",
        f"data.prime_next_epoch={str(prime).lower()}", f"validation.val_len={val_len}",
        "train.batch_size=2", "train.per_save=0", f"run.out={tmp / name}",
        f"data.root={pack}"])
    meta = check_pack(pack, height=cfg.data.height, width=cfg.data.width,
                      clip_len=cfg.data.clip_len)["splits"]["train"]
    settings = ClusterConfig(workers, workers, max_failures=0, storage_path=str(tmp / "ray"))
    cpus = worker_cpus(settings, ray.cluster_resources().get("CPU", 0))
    trainer = ray_common.build_trainer(cfg, settings, run=RunStorage(str(tmp / "ray"), name),
                                       pack=str(pack), num_clips=meta["num_clips"],
                                       cpus_per_worker=cpus, out=str(tmp / name),
                                       wrap_batches=timed)
    trainer.fit()
    folder = tmp / name / "timings"
    return [[json.loads((folder / f"epoch{e}_rank{r}.json").read_text())
             for e in range(1, epochs + 1)] for r in range(workers)]


def stall_figures(per_rank: list[list[dict[str, Any]]]) -> dict[str, Any]:
    epochs = []
    for e in range(len(per_rank[0])):
        wait = sum(sum(r[e]["waits"]) for r in per_rank)
        step = sum(sum(r[e]["steps"]) for r in per_rank)
        first = sum(r[e]["waits"][0] for r in per_rank if r[e]["waits"])
        epochs.append({
            "steps": len(per_rank[0][e]["steps"]),
            "wait_seconds": wait / len(per_rank), "step_seconds": step / len(per_rank),
            "first_wait_seconds": first / len(per_rank),
            "wait_fraction": wait / (wait + step),
            "wait_fraction_after_first": (wait - first) / (wait - first + step),
            "max_wait_seconds": max(max(r[e]["waits"], default=0) for r in per_rank),
        })
    wait = sum(e["wait_seconds"] for e in epochs)
    step = sum(e["step_seconds"] for e in epochs)
    first = sum(e["first_wait_seconds"] for e in epochs)
    return {"wait_fraction": wait / (wait + step),
            "wait_fraction_after_first": (wait - first) / (wait - first + step),
            "epochs": epochs, "torch_threads": per_rank[0][0]["torch_threads"]}


# ---------------------------------------------------------------- read throughput

def read_throughput(root: Path, pack: Path, *, clip_len: int, limit: int, rounds: int
                    ) -> dict[str, Any]:
    """Clips/s of the readers, interleaved rounds, medians; `limit` clips per reader per round.

    Each reader is built fresh every round (no shard cached). For Ray Data the time to its first
    batch (planning, scheduling read tasks) is reported apart, and clips/s counts the rest.
    """
    import statistics

    import ray

    from cvae import packs
    from cvae.lab_folder import ClipDataset

    meta = packs.split_meta(pack, "train")
    h, w = meta["height"], meta["width"]
    n_clips = min(limit, meta["num_clips"])

    def timed_items(ds, order) -> tuple[int, float]:
        t0 = time.perf_counter()
        for i in order:
            ds[i]
        return len(order), time.perf_counter() - t0

    def pq_seq():
        return timed_items(packs.ParquetClipDataset(pack), range(n_clips))

    def pq_shuffled():
        ds = packs.ParquetClipDataset(pack)
        order = list(range(len(ds)))
        random.Random(0).shuffle(order)
        return timed_items(ds, order[:n_clips])

    def pq_shard_shuffled():  # what cvae-train's shuffled epochs read (ShardShuffleSampler)
        import torch

        ds = packs.ParquetClipDataset(pack)
        order = list(packs.ShardShuffleSampler(ds.shard_ranges(),
                                                 torch.Generator().manual_seed(0)))
        return timed_items(ds, order[:n_clips])

    def png():
        ds = ClipDataset(root, "train", clip_len=clip_len, height=h, width=w)
        return timed_items(ds, range(n_clips))

    first_batch: list[float] = []

    def ray_data():
        t0 = time.perf_counter()
        ds = ray.data.read_parquet(str(pack / "train")).select_columns(
            ["clip_id", "frames", "poses"])
        n, t1 = 0, None
        for b in ds.iter_batches(batch_size=2, batch_format="numpy", prefetch_batches=2):
            packs.decode_batch(b, height=h, width=w, clip_len=clip_len)
            if t1 is None:
                t1 = time.perf_counter()
                first_batch.append(t1 - t0)
            else:
                n += len(b["clip_id"])
            if n >= n_clips:
                break
        return n, time.perf_counter() - (t1 or t0)

    readers = {"parquet_dataset": pq_seq, "parquet_dataset_shuffled": pq_shuffled,
               "parquet_dataset_shard_shuffled": pq_shard_shuffled,
               "png_folder": png, "ray_data_iter_batches": ray_data}
    rates: dict[str, list[float]] = {k: [] for k in readers}
    warmup = 1 if rounds > 1 else 0  # page cache, imports, Ray workers
    for r in range(warmup + rounds):
        for name, fn in readers.items():
            n, seconds = fn()
            if r >= warmup:
                rates[name].append(n / seconds if seconds > 0 else float("nan"))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in rates.items()}
    out["clips"] = n_clips
    out["ray_data_first_batch_seconds"] = statistics.median(first_batch[1:] or first_batch)
    return out


# ---------------------------------------------------------------- main

def build_parser():
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of the stall loop (2)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per epoch (default: whole epochs; --quick 8)")
    p.add_argument("--clip-len", type=int, default=None,
                   help="frames per clip (default 16; --quick 8: cheaper steps)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.ray_quiet()
    if args.tiny:
        root = common.synth_set(train_videos=2, frames_per_video=16, val_frames=8,
                                test_sequences=1, test_frames=4, height=32, width=64)
    else:
        root = common.synth_set()
    clip_len = args.clip_len or common.size(args, 16, 8, 4)
    pack = common.packed(root, clip_len=clip_len)
    epochs = args.epochs or common.size(args, 2, 2, 1)
    max_steps = args.steps if args.steps is not None else common.size(args, 0, 8, 3)
    val_len = common.size(args, 630, 64, 4)  # the rollout between epochs (rank 0)
    cfg_argv = [f"data.clip_len={clip_len}", "run.progress=false"]
    if args.tiny:
        cfg_argv += ["run.threads=1", "model.frame_channels=8", "model.label_channels=4",
                     "model.latent_channels=4", "model.decoder_channels=8"]
    common.stderr("data_pipeline: starting Ray ...")
    with common.ray_session() as ray_start_s, common.temp_dir("cvae-bench-data-") as tmp:
        common.stderr("data_pipeline: read throughput ...")
        reads = read_throughput(root, pack, clip_len=clip_len, limit=common.size(args, 80, 32, 4),
                                rounds=common.size(args, 3, 2, 1))
        runs = {}
        for prime in (False, True):
            common.stderr(f"data_pipeline: stall loop on {args.workers} Ray Train worker(s), "
                          f"next epoch {'primed' if prime else 'not primed'} ...")
            runs[prime] = stall_figures(stall(pack, cfg_argv, workers=args.workers,
                                              epochs=epochs, max_steps=max_steps, tmp=tmp,
                                              prime=prime, val_len=val_len))
    st, before = runs[True], runs[False]
    figures: dict[str, Any] = {
        "wait_fraction": st["wait_fraction"],
        "wait_fraction_after_first": st["wait_fraction_after_first"],
        "stall": st,
        "wait_fraction_unprimed": before["wait_fraction"],
        "stall_unprimed": before,
        "read_clips_per_s": {k: v for k, v in reads.items()
                             if k not in ("clips", "ray_data_first_batch_seconds")},
        "ray_data_first_batch_seconds": reads["ray_data_first_batch_seconds"],
        "ray_start_seconds": ray_start_s,
        "config": {"workers": args.workers, "epochs": epochs, "max_steps": max_steps,
                   "val_len": val_len,
                   "clip_len": clip_len, "pack": str(pack), "read_clips": reads["clips"]},
        "machine": common.machine(),
    }
    lines = [f"data_pipeline benchmark: data {pack}", common.machine_line()]
    for label, r in (("next epoch primed during validation (as fit does)", st),
                     ("not primed (each epoch starts its pipeline cold)", before)):
        lines += [
            "",
            f"input stall, {args.workers} Ray Train worker(s) (torch threads "
            f"{r['torch_threads']}), small preset step per batch, {val_len}-frame validation "
            f"between epochs; {label}:",
            f"{'epoch':>6} {'steps':>6} {'wait s':>8} {'1st wait s':>11} {'step s':>8} "
            f"{'wait %':>7} {'wait % w/o 1st':>15}",
        ]
        for i, e in enumerate(r["epochs"], 1):
            lines.append(f"{i:>6} {e['steps']:>6} {e['wait_seconds']:8.2f} "
                         f"{e['first_wait_seconds']:11.2f} {e['step_seconds']:8.2f} "
                         f"{e['wait_fraction']:7.1%} {e['wait_fraction_after_first']:15.1%}")
    lines += [
        "",
        f"wait_fraction {st['wait_fraction']:.1%} (without each epoch's first batch "
        f"{st['wait_fraction_after_first']:.1%}; not primed {before['wait_fraction']:.1%}; "
        "goal < 5%)",
        "",
        f"read throughput ({reads['clips']} clips of {clip_len} frames, one process, medians):",
    ]
    for k, v in figures["read_clips_per_s"].items():
        lines.append(f"  {k:<26} {v:9.1f} clips/s")
    lines.append(f"  (Ray Data: {reads['ray_data_first_batch_seconds']:.1f} s to the first batch, "
                 "not in its clips/s)")
    lines.append(f"Ray start-up {ray_start_s:.1f} s")
    common.emit(args, figures, lines)
    return figures


if __name__ == "__main__":
    main()
