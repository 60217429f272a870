"""Autoregressive generation throughput: `CVAE.generate` over a long pose sequence.

    python -m benchmarks.tester [--quick] [--json] [--frames 630] [--explore]

The Tester and validation roll a 630-frame video out one frame at a time (z ~ N(0, I)); this
times that rollout at both presets, interleaved, in eval mode under no_grad, with denormals
flushed as the project does on CPU. `--explore` adds channels_last and 1-thread variants.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from benchmarks import common
from cvae.config import load_config
from cvae.model import CVAE


def rollout(preset: str, frames: int, *, channels_last: bool = False, seed: int = 0,
            warmup_frames: int = 4) -> Callable[[], torch.Tensor]:
    """A closure generating `frames` frames; built with a short untimed rollout (warm-up: oneDNN
    primitives are created on first use)."""
    cfg = load_config(None, preset=preset)
    torch.manual_seed(seed)
    model = CVAE(cfg.model).eval()
    h, w = cfg.data.height, cfg.data.width
    g = torch.Generator().manual_seed(seed)
    first = torch.rand(1, 3, h, w, generator=g)
    poses = torch.rand(1, frames, 3, h, w, generator=g)
    if channels_last:
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        first = first.contiguous(memory_format=torch.channels_last)
        poses = poses[0].contiguous(memory_format=torch.channels_last)[None]

    def run(n: int = frames) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed)
        return model.generate(first, poses[:, :n], rng=rng)

    run(min(warmup_frames, frames))
    return run


def build_parser():
    p = common.parser(__doc__.split("\n\n")[0])
    common.add_threads(p)
    p.add_argument("--frames", type=int, default=None,
                   help="frames per sequence, frame 0 included (default 630; --quick: lab 16, "
                        "small 64)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--explore", action="store_true", help="also channels_last and 1 thread")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.set_threads(args)
    torch.set_flush_denormal(True)
    lengths = {
        "lab": args.frames or common.size(args, 630, 16, 3),
        "small": args.frames or common.size(args, 630, 64, 4),
    }
    rounds = args.rounds or common.size(args, 2, 2, 1)
    warmup = 0  # each rollout warms up on a few frames when it is built
    variants: dict[str, Callable[[], Any]] = {}
    for preset, n in lengths.items():
        variants[preset] = rollout(preset, n)
        if args.explore:
            variants[f"{preset} channels_last"] = rollout(preset, n, channels_last=True)
            if torch.get_num_threads() > 1:
                variants[f"{preset} 1 thread"] = common.with_threads(rollout(preset, n), 1)
    common.stderr(f"tester: generate {lengths} frames, {rounds} rounds")
    series = common.interleave(variants, rounds=rounds, warmup=warmup,
                               log=None if args.json else common.stderr)

    def preset_of(name: str) -> str:
        return name.split()[0]

    def fps(name: str) -> float:
        return (lengths[preset_of(name)] - 1) / series[name].wall

    figures: dict[str, Any] = {
        p: {"frames": lengths[p], "fps": fps(p),
            "fps_cpu_time": (lengths[p] - 1) / series[p].cpu,
            "seconds_per_630_frames": 629 / fps(p)}
        for p in lengths
    }
    figures["variants_fps"] = {k: fps(k) for k in variants}
    figures["machine"] = common.machine()
    lines = [
        f"tester benchmark: CVAE.generate (batch 1), medians of {rounds} interleaved rounds",
        common.machine_line(), "",
        f"{'variant':<22} {'frames':>7} {'frames/s':>9} {'frames/cpu-s':>13} {'630 frames':>11}",
    ]
    for name in variants:
        n = lengths[preset_of(name)]
        lines.append(f"{name:<22} {n:>7} {fps(name):9.2f} {(n - 1) / series[name].cpu:13.2f} "
                     f"{629 / fps(name):10.1f}s")
    common.emit(args, figures, lines)
    return figures


if __name__ == "__main__":
    main()
