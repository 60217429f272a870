"""DDP without Ray: `cvae.training.fit` as one DistributedDataParallel rank over nccl on a GPU
(gloo on a CPU), the way a Ray Train worker runs it. Checks the collective backend and the
wrapped model end to end where Ray is not installed, and prints seconds per epoch.

    python -m benchmarks.ddp_fit --preset small --data data/dance --out runs/ddp_fit --epochs 2

Takes cvae-train's flags (--config, --preset, --set, ...).
"""

from __future__ import annotations

import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cvae import datasets
from cvae.checkpoint import initial_weights
from cvae.cli import config_from_args, configure_torch, print_summary
from cvae.datasets import loader_epochs
from cvae.errors import cli_entry
from cvae.train_cli import build_parser
from cvae.training import fit, resolve_device
from ray_jobs.common import free_port


@cli_entry
def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(build_parser().parse_args(argv))
    configure_torch(cfg)
    device = resolve_device(cfg.run.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        def prepare(model: torch.nn.Module) -> torch.nn.Module:
            ids = [device.index or 0] if device.type == "cuda" else None
            return DistributedDataParallel(model, device_ids=ids)

        dataset = datasets.train_dataset(cfg)
        start = time.perf_counter()
        summary = fit(cfg, data=loader_epochs(dataset, cfg, device),
                      init_weights=initial_weights(cfg),
                      val_videos=datasets.val_videos(cfg), device=device, prepare_model=prepare)
        seconds = time.perf_counter() - start
    finally:
        dist.destroy_process_group()
    print_summary(summary)
    print(f"ddp_fit: backend {backend}, device {device}, {cfg.train.epochs} epoch(s) in "
          f"{seconds:.1f} s ({seconds / max(cfg.train.epochs, 1):.1f} s/epoch)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    main()
