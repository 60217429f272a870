"""Distributed training on Ray: `python -m ray_jobs.train` takes cvae-train's flags plus cluster
flags, and runs `cvae.training.fit` on every worker of a TorchTrainer (DDP over a Ray Dataset).

    python -m ray_jobs.train --data data/dance --out runs/ray --num-workers 2
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python -m ray_jobs.train --use-gpu --num-workers 4 --preset lab \\
        --data s3://bucket/dance.pack --storage-path s3://bucket/runs --out /home/me/runs/lab

The run's storage (--storage-path, default <out>/ray) holds its checkpoints and its run folder;
--out on this machine gets the run folder mirrored during the run and completely at the end,
plus run.json, which `cvae-test --checkpoint <out>` follows to the best checkpoint.
"""

from __future__ import annotations

import argparse

from cvae import cli
from cvae.checkpoint import initial_weights
from cvae.config import Config
from cvae.errors import cli_entry
from cvae.lock import lock_folder
from ray_jobs import cluster, common, runs


def build_parser() -> argparse.ArgumentParser:
    """cvae-train's flags plus the cluster's."""
    return argparse.ArgumentParser(
        prog="python -m ray_jobs.train", description=__doc__.split("\n\n")[0],
        parents=[cli.config_args("config/train.yaml"), cli.run_args(), cluster.cluster_args()])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = cluster.ClusterConfig.from_args(args)  # bad cluster flags fail before Ray starts
    cfg = cli.config_from_args(args)
    common.absolutize(cfg)
    with lock_folder(cfg.run.out):  # the driver holds it for the whole run; workers take none
        return train(cfg, settings, resume=args.resume)


def train(cfg: Config, settings: cluster.ClusterConfig, resume: bool = False) -> int:
    """Run the TorchTrainer, --out mirrored from the run's storage (its writer lock held by this
    driver)."""
    run = runs.locate(cfg.run.out, settings)
    runs.check_identity(run, resume)
    init_weights = initial_weights(cfg)  # a bad train.init_from fails here, before Ray starts
    common.check_data(cfg)  # so does bad data
    attached = common.connect(settings.address)
    nodes = cluster.NodeShapes.read(attached)
    runs.check_shared(run.storage, cfg.data.root, settings, nodes.multi_node(settings))
    pack, meta = common.prepare_data(cfg, run.pack)  # bad data fails here, before any worker
    import ray

    cpus = cluster.worker_cpus(settings, ray.cluster_resources().get("CPU", 0), nodes=nodes)
    cluster.check_placement(settings, cpus, nodes)
    cluster.check_resources(settings, cpus, attached, cluster.cluster_ceiling(settings, attached))
    trainer = common.build_trainer(cfg, settings, run=run, pack=pack,
                                   num_clips=meta["num_clips"], cpus_per_worker=cpus,
                                   out=cfg.run.out, init_weights=None if resume else init_weights)
    if resume:  # the user changed what made it diverge: try again
        runs.forget_failure(run, cfg.run.out)
    print(f"run {run.name!r}: {settings.workers_text} worker(s), storage {run.root}, run folder "
          f"mirrored into {cfg.run.out}")
    try:
        result = common.run_trainer(trainer)
    finally:
        cluster.release_resources(attached)
        runs.Mirror(run, cfg.run.out).sync()  # complete, whatever happened
    return summarize(result, run, cfg)


def summarize(result, run: runs.RunStorage, cfg: Config) -> int:
    """Print the best and last epoch, write <out>/run.json; 1 when no checkpoint was kept."""
    best = common.best_checkpoint(result, cfg.validation.best_by)
    uri = run.checkpoint_uri(best[1]) if best is not None else None
    runs.write_run_file(run, cfg.run.out, uri)
    if best is None:
        print("training finished without a validated checkpoint")
        return 1
    last = result.metrics or {}
    nan = float("nan")
    kept = best[0]
    print(f"{cli.best_epoch_text(kept['val_psnr'], kept['epoch'], cfg.validation.best_by)}; "
          "last epoch val_psnr "
          f"{last.get('val_psnr', nan):.2f} dB vs copy-last baseline "
          f"{last.get('baseline_psnr', nan):.2f} dB, short {last.get('val_psnr_short', nan):.2f} "
          f"vs {last.get('baseline_psnr_short', nan):.2f} dB")
    print(f"best checkpoint: {uri}")
    print(f"run folder: {cfg.run.out} (metrics.csv, training.png, psnr_per_frame.png, tb/; "
          f"run.json: where the checkpoints are)")
    return 0


if __name__ == "__main__":
    main()
