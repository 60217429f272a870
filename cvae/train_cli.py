"""`cvae-train`: single-process training on a lab-layout folder or a Parquet pack."""

from __future__ import annotations

import argparse
import math
import sys

import torch

from cvae import datasource
from cvae.config import add_config_args, config_from_args, to_yaml
from cvae.errors import cli_entry
from cvae.model import CVAE, parameter_table
from cvae.parquet import ParquetClipDataset, ShardShuffleSampler
from cvae.training import (
    EpochData,
    epoch_seed,
    fit,
    initial_weights,
    resolve_device,
    resume_state_for,
)

DEFAULT_CONFIG = "config/train.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvae-train", description=__doc__)
    add_config_args(parser, DEFAULT_CONFIG)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from checkpoints/last.pt")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved config and the parameter table, then exit")
    return parser


def format_parameter_table(model: CVAE) -> str:
    rows = parameter_table(model)
    width = max(len(name) for name, _ in rows)
    lines = [f"{'part':<{width}}  {'parameters':>12}"]
    for name, count in rows:
        if name == "total":
            lines.append("-" * (width + 14))
        lines.append(f"{name:<{width}}  {count:>12,}")
    return "\n".join(lines)


def loader_epochs(dataset, cfg, device: torch.device) -> EpochData:
    """Shuffled DataLoader batches, reseeded per epoch so a resumed run sees the same order."""
    batch = cfg.train.batch_size

    def batches(epoch: int):
        generator = torch.Generator().manual_seed(epoch_seed(cfg.run.seed + 2, epoch))
        shards = _shard_ranges(dataset) if cfg.data.shuffle else None
        sampler = ShardShuffleSampler(shards, generator) if shards else None
        return iter(torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=cfg.data.shuffle and sampler is None,
            sampler=sampler, generator=generator,
            num_workers=cfg.data.loader_workers, pin_memory=device.type == "cuda",
            persistent_workers=False,
        ))

    return EpochData(batches, math.ceil(len(dataset) / batch))


def _shard_ranges(dataset) -> list[range] | None:
    """A Parquet dataset's (or its leading `data.partial` subset's) shard index ranges."""
    if isinstance(dataset, ParquetClipDataset):
        return dataset.shard_ranges()
    subset = isinstance(dataset, torch.utils.data.Subset)
    if subset and isinstance(dataset.dataset, ParquetClipDataset) and \
            dataset.indices == range(len(dataset.indices)):
        n = len(dataset.indices)
        return [range(r.start, min(r.stop, n)) for r in dataset.dataset.shard_ranges()
                if r.start < n]
    return None


def configure_torch(cfg) -> None:
    """Process-wide numerics switches (flush denormals: CPU speed; threads; cuDNN autotune)."""
    if cfg.run.device != "cpu" and torch.cuda.is_available():
        # Training shapes repeat every step: let cuDNN time its convolution algorithms once.
        torch.backends.cudnn.benchmark = True
    if cfg.run.flush_denormal:
        # Small activations in free-running rollouts turn into denormals, which are ~10x
        # slower on x86 CPUs; flushing them to zero changes nothing a PSNR can see.
        torch.set_flush_denormal(True)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.dry_run:
        print(to_yaml(cfg))
        print(format_parameter_table(CVAE(cfg.model)))
        return 0
    configure_torch(cfg)
    device = resolve_device(cfg.run.device)
    resume = resume_state_for(cfg, args.resume)
    if resume is None:
        initial_weights(cfg)  # a bad train.init_from fails before any data is read
    dataset = datasource.train_dataset(cfg)
    val = datasource.val_video(cfg)
    print(f"training {cfg.model.preset} preset on {cfg.data.root}: {len(dataset)} clips of "
          f"{cfg.data.clip_len} frames, validation video {val[0].shape[0]} frames, "
          f"device {device}, run folder {cfg.run.out}", file=sys.stderr)
    summary = fit(cfg, data=loader_epochs(dataset, cfg, device), val_video=val, device=device,
                  resume_state=resume)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    last = summary["last"]
    out = summary["out"]
    if not last:
        print(f"nothing to train: {out} already finished {summary['epochs']} epochs "
              "(raise --epochs to continue)")
        return
    print(f"best val_psnr {summary['best_val_psnr']:.2f} dB at epoch {summary['best_epoch']}")
    if "val_psnr" in last:
        print(f"last epoch: val_psnr {last['val_psnr']:.2f} dB (copy-last baseline "
              f"{last['baseline_psnr']:.2f}), val_psnr_short {last['val_psnr_short']:.2f} dB "
              f"(baseline {last['baseline_psnr_short']:.2f})")
    print(f"best checkpoint: {out}/checkpoints/best.pt")
    print(f"metrics: {out}/metrics.csv  figures: {out}/training.png, {out}/psnr_per_frame.png")


if __name__ == "__main__":
    main()
