"""`cvae-train`: single-process training on a lab-layout folder or a Parquet pack."""

from __future__ import annotations

import argparse
import sys

from cvae import cli, datasets
from cvae.checkpoint import initial_weights, resume_state_for
from cvae.config import Config, to_yaml
from cvae.errors import cli_entry
from cvae.lock import lock_folder
from cvae.model import CVAE
from cvae.training import fit, resolve_device

DEFAULT_CONFIG = "config/train.yaml"


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="cvae-train", description=__doc__,
                                   parents=[cli.config_args(DEFAULT_CONFIG), cli.run_args()])


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = cli.config_from_args(args)
    if args.dry_run:
        print(to_yaml(cfg))
        print(cli.format_parameter_table(CVAE(cfg.model)))
        return 0
    with lock_folder(cfg.run.out):
        return train(cfg, args)


def train(cfg: Config, args: argparse.Namespace) -> int:
    """Train into the run folder (its writer lock held)."""
    cli.configure_torch(cfg)
    device = resolve_device(cfg.run.device)
    resume = resume_state_for(cfg, args.resume)
    # a bad train.init_from fails before any data is read
    init_weights = initial_weights(cfg) if resume is None else None
    dataset = datasets.train_dataset(cfg)
    val = datasets.val_videos(cfg)
    print(f"training {cfg.model.preset} preset on {cfg.data.root}: {len(dataset)} clips of "
          f"{cfg.data.clip_len} frames, {datasets.describe_videos(val[0])}, "
          f"device {device}, run folder {cfg.run.out}", file=sys.stderr)
    summary = fit(cfg, data=datasets.loader_epochs(dataset, cfg, device), val_videos=val,
                  device=device, resume_state=resume, init_weights=init_weights,
                  val_threads=max(cfg.validation.threads, 0))  # -1 (all of a node's): as is
    cli.print_summary(summary)
    return 0


if __name__ == "__main__":
    main()
