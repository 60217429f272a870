"""Distributed training on Ray: `python -m ray_jobs.train` takes cvae-train's flags plus cluster
flags, and runs `cvae.training.fit` on every worker of a TorchTrainer (DDP over Ray Data shards).

    python -m ray_jobs.train --data data/dance --out runs/ray --num-workers 2
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python -m ray_jobs.train --use-gpu --num-workers 4 --preset lab \
        --data /shared/data/dance --out /shared/runs/lab   # absolute paths in a job
"""

from __future__ import annotations

import argparse

from cvae import cli
from cvae.checkpoint import initial_weights, resume_state_for
from cvae.config import Config
from cvae.errors import cli_entry
from cvae.lock import lock_folder
from ray_jobs import common


def build_parser() -> argparse.ArgumentParser:
    """cvae-train's flags plus the cluster's."""
    return argparse.ArgumentParser(
        prog="python -m ray_jobs.train", description=__doc__.split("\n\n")[0],
        parents=[cli.config_args("config/train.yaml"), cli.run_args(), common.cluster_args()])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = cli.config_from_args(args)
    common.absolutize(cfg)
    with lock_folder(cfg.run.out):  # the driver holds it for the whole run; workers take none
        return train(cfg, args)


def train(cfg: Config, args: argparse.Namespace) -> int:
    """Run the TorchTrainer into the run folder (its writer lock held by this driver)."""
    common.check_max_failures(args.max_failures)
    if resume_state_for(cfg, args.resume) is None:  # a fresh run never overwrites one
        initial_weights(cfg)  # a bad train.init_from fails here, before Ray starts
    pack_dir, meta = common.prepare_data(cfg)  # bad data fails here, before Ray starts
    attached = common.connect(args.address)
    import ray
    import ray.train

    cpus = common.worker_cpus(args, ray.cluster_resources().get("CPU", 0))
    common.check_resources(args, cpus, attached)
    trainer = common.build_trainer(cfg, args, pack_dir=pack_dir, num_clips=meta["num_clips"],
                                   cpus_per_worker=cpus, resume=args.resume)
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        failure = common.worker_error(err)
        if failure is err:
            raise
        raise failure from None  # e.g. TrainingDiverged: one line, exit 2
    finally:
        common.release_resources(attached)
    best = common.best_checkpoint(result)
    if best is None:
        print("training finished without a validated checkpoint")
        return 1
    psnr, path = best
    last = result.metrics or {}
    nan = float("nan")
    print(f"best val_psnr {psnr:.2f} dB; last epoch val_psnr {last.get('val_psnr', nan):.2f} dB "
          f"vs copy-last baseline {last.get('baseline_psnr', nan):.2f} dB, short "
          f"{last.get('val_psnr_short', nan):.2f} vs {last.get('baseline_psnr_short', nan):.2f} dB")
    print(f"best checkpoint: {path}")
    print(f"run folder: {cfg.run.out} (metrics.csv, training.png, psnr_per_frame.png, tb/)")
    return 0


if __name__ == "__main__":
    main()
