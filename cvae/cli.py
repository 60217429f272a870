"""What every command line shares, as argparse parents a launcher composes:

    parser = argparse.ArgumentParser(prog="cvae-train",
                                     parents=[cli.config_args("config/train.yaml"), cli.run_args()])

plus `config_from_args` (the typed config from those flags) and the process set-up of torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cvae.config import PRESETS, Config, load_config
from cvae.model import CVAE, parameter_table

SHIPPED = Path(__file__).resolve().parent.parent  # the checkout: its config/ folder


def config_args(default_config: str) -> argparse.ArgumentParser:
    """The config flags: --config FILE, the shortcuts and `--set section.key=value`."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("config")
    group.add_argument("--config", default=default_config, help="YAML config file")
    group.add_argument("--data", help="lab-layout folder or Parquet pack (data.root)")
    group.add_argument("--out", help="output folder (run.out)")
    group.add_argument("--epochs", type=int, help="number of epochs (train.epochs)")
    group.add_argument("--preset", choices=sorted(PRESETS), help="model size preset")
    group.add_argument("--seed", type=int, help="random seed (run.seed)")
    group.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override any config key, e.g. --set train.lr=3e-4 (repeatable)",
    )
    return parser


def run_args(resume_help: str = "continue the run in --out from checkpoints/last.pt",
             dry_run_help: str = "print the resolved config and the parameter table, then exit"
             ) -> argparse.ArgumentParser:
    """--resume and --dry-run, with help texts a launcher may word for what it runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--resume", action="store_true", help=resume_help)
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    return parser


def config_path(path: str | None) -> str | None:
    """A relative --config that does not exist here is looked up in the checkout, so commands
    work from any folder."""
    if path and not Path(path).exists() and not Path(path).is_absolute():
        shipped = SHIPPED / path
        return str(shipped) if shipped.exists() else path
    return path


def shortcuts(args: argparse.Namespace) -> dict[str, object]:
    return {"data.root": args.data, "run.out": args.out, "train.epochs": args.epochs,
            "run.seed": args.seed}


def config_from_args(args: argparse.Namespace, layers: tuple = ()) -> Config:
    """defaults -> preset -> --config -> `layers` -> shortcuts -> --set (see load_config)."""
    return load_config(config_path(args.config), args.overrides, args.preset, shortcuts(args),
                       layers=layers)


def configure_torch(cfg: Config) -> None:
    """Process-wide numerics switches (flush denormals: CPU speed; threads; cuDNN autotune)."""
    if cfg.run.device != "cpu" and torch.cuda.is_available():
        torch.backends.cudnn.benchmark = cfg.run.cudnn_benchmark  # see run.cudnn_benchmark
    if cfg.run.flush_denormal:
        # Small activations in free-running rollouts turn into denormals, which are ~10x
        # slower on x86 CPUs; flushing them to zero changes nothing a PSNR can see.
        torch.set_flush_denormal(True)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)


def format_parameter_table(model: CVAE) -> str:
    rows = parameter_table(model)
    width = max(len(name) for name, _ in rows)
    lines = [f"{'part':<{width}}  {'parameters':>12}"]
    for name, count in rows:
        if name == "total":
            lines.append("-" * (width + 14))
        lines.append(f"{name:<{width}}  {count:>12,}")
    return "\n".join(lines)


def best_epoch_text(val_psnr: float, epoch: int, best_by: str = "val_psnr") -> str:
    """How a finished run names its best checkpoint's epoch (chosen by validation.best_by)."""
    if best_by == "val_psnr":
        return f"best val_psnr {val_psnr:.2f} dB at epoch {epoch}"
    return f"best epoch by validation.best_by={best_by}: {epoch} (val_psnr {val_psnr:.2f} dB)"


def print_summary(summary: dict) -> None:
    """What a finished `fit` prints: the best epoch, the last epoch against the baseline."""
    last = summary["last"]
    out = summary["out"]
    if not last:
        print(f"nothing to train: {out} already finished {summary['epochs']} epochs "
              "(raise --epochs to continue)")
        return
    best = Path(out) / "checkpoints" / "best.pt"
    if summary["best_epoch"] and best.is_file():
        print(best_epoch_text(summary["best_val_psnr"], summary["best_epoch"],
                              summary.get("best_by", "val_psnr")))
    else:
        print("no validated epoch: no best checkpoint (validation.every, or no validation video)")
    if "val_psnr" in last:
        print(f"last epoch: val_psnr {last['val_psnr']:.2f} dB (copy-last baseline "
              f"{last['baseline_psnr']:.2f}), val_psnr_short {last['val_psnr_short']:.2f} dB "
              f"(baseline {last['baseline_psnr_short']:.2f})")
    if best.is_file():
        print(f"best checkpoint: {best}")
    figures = [p for p in (Path(out) / "training.png", Path(out) / "psnr_per_frame.png")
               if p.is_file()]
    print(f"metrics: {out}/metrics.csv  figures: {', '.join(map(str, figures)) or 'none'}")
