"""Training-step throughput: our `cvae.training.train_step` against the seed lab's per-frame loop.

    python -m benchmarks.train_step --preset lab [--batch 2] [--clip-len 16] [--quick] [--json]
    python -m benchmarks.train_step --preset lab --quick --explore     # layouts, chunks, threads
    python -m benchmarks.train_step --preset small --quick --compile   # + torch.compile

Both sides train the same CVAE (weights and Adam state restored before every timed step), on the
same clip batch, with the same torch settings (flush denormals on, as `cvae-train` does on CPU).
Measurements are interleaved (ours, lab, ours, lab, ...) after a warm-up round; figures are
medians. Frames/s counts predicted frames: batch x (clip_len - 1) per step.

The lab loop (`lab_loop_step`) is the seed's `training_one_step`: for each t, encode the previous
frame, the true frame t and pose t one frame at a time, posterior, fusion, generator, loss summed,
one backward at the end, grad-norm clip 1.0, Adam step.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import common
from cvae.config import load_config
from cvae.losses import kl_divergence
from cvae.model import CVAE
from cvae.training import train_step

BETA = 1.0
GRAD_CLIP = 1.0
EXPLORE = ("layout", "chunk", "threads", "onednn", "denormal")


# ---------------------------------------------------------------- the seed lab's loop

def lab_loop_step(model: CVAE, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
                  poses: torch.Tensor, *, beta: float, teacher_forced: bool,
                  grad_clip: float) -> torch.Tensor:
    """The seed lab's training step, frame by frame. frames, poses: float [B,T,3,H,W]."""
    batch, steps = frames.shape[:2]
    images, labels = frames.transpose(0, 1), poses.transpose(0, 1)  # [T,B,3,H,W]
    last_pred = None
    total = frames.new_zeros(())
    for t in range(1, steps):
        prev = images[t - 1] if teacher_forced or last_pred is None else last_pred
        prev_feat = model.frame_encoder(prev)
        true_feat = model.frame_encoder(images[t])
        pose_feat = model.pose_encoder(labels[t])
        z, mu, logvar = model.posterior(true_feat, pose_feat)
        pred = model.generator(model.decoder_fusion(prev_feat, pose_feat, z))
        last_pred = pred
        total = total + F.mse_loss(pred, images[t]) + beta * kl_divergence(mu, logvar, batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return total.detach()


# ---------------------------------------------------------------- a candidate core change

class ChunkedCVAE(nn.Module):
    """CVAE.forward with the teacher-forced folded batch run `chunk` frames at a time.

    Same modules, same math (the pose encoder, whose BatchNorm must see the whole clip, runs
    unchunked); the candidate change for `cvae/model.py` measured by `--explore`. Chunking the
    forward pass chunks its backward too: autograd replays the same per-chunk ops.
    """

    def __init__(self, model: CVAE, chunk: int):
        super().__init__()
        self.model, self.chunk = model, chunk

    def forward(self, frames: torch.Tensor, poses: torch.Tensor, teacher_forced: bool,
                noise: torch.Tensor | None = None):
        m, k = self.model, self.chunk
        if not teacher_forced:
            return m(frames, poses, teacher_forced, noise)
        batch, steps = frames.shape[:2]
        s = steps - 1
        pose_feat = m.pose_encoder(poses[:, 1:].flatten(0, 1))  # [B*S,L,H,W]
        feat = torch.cat([m.frame_encoder(x) for x in frames.flatten(0, 1).split(k)])
        feat = feat.unflatten(0, (batch, steps))
        prev_feat, true_feat = feat[:, :-1].flatten(0, 1), feat[:, 1:].flatten(0, 1)
        if noise is None:
            noise = torch.randn(batch, s, m.latent_channels, *frames.shape[-2:],
                                dtype=true_feat.dtype)
        zs, mus, logvars, preds = [], [], [], []
        for tf, pf, eps in zip(true_feat.split(k), pose_feat.split(k),
                               noise.flatten(0, 1).split(k), strict=True):
            z, mu, logvar = m.posterior(tf, pf, eps)
            zs.append(z), mus.append(mu), logvars.append(logvar)
        for pv, pf, z in zip(prev_feat.split(k), pose_feat.split(k), zs, strict=True):
            preds.append(m.generator(m.decoder_fusion(pv, pf, z)))
        return (torch.cat(preds).unflatten(0, (batch, s)),
                torch.cat(mus).unflatten(0, (batch, s)),
                torch.cat(logvars).unflatten(0, (batch, s)))


# ---------------------------------------------------------------- set-up

class Bench:
    """One model, optimizer, batch; every variant starts its timed step from the same state."""

    def __init__(self, preset: str, batch: int, clip_len: int, seed: int = 0):
        cfg = load_config(None, preset=preset)
        torch.manual_seed(seed)
        self.model = CVAE(cfg.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.train.lr)
        h, w = cfg.data.height, cfg.data.width
        g = torch.Generator().manual_seed(seed)
        # uint8 clips through the project's own conversion, like a real batch
        self.frames_u8 = torch.randint(0, 256, (batch, clip_len, 3, h, w), generator=g,
                                       dtype=torch.uint8)
        self.poses_u8 = torch.randint(0, 256, (batch, clip_len, 3, h, w), generator=g,
                                      dtype=torch.uint8)
        self.frames_per_step = batch * (clip_len - 1)
        self.cfg = cfg
        # one untimed step so the snapshot holds a warmed-up Adam state
        self.step("ours", True)()
        self.snapshot = (copy.deepcopy(self.model.state_dict()),
                         copy.deepcopy(self.optimizer.state_dict()))
        self._cl: tuple[CVAE, torch.optim.Optimizer] | None = None

    def channels_last_copy(self) -> tuple[CVAE, torch.optim.Optimizer]:
        if self._cl is None:
            model = copy.deepcopy(self.model).to(memory_format=torch.channels_last)
            self._cl = (model, torch.optim.Adam(model.parameters(), lr=self.cfg.train.lr))
        return self._cl

    def restore(self) -> None:
        state, opt = self.snapshot
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(opt)
        if self._cl is not None:
            model, optimizer = self._cl
            model.load_state_dict(state)
            optimizer.load_state_dict(opt)

    def inputs(self, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        from cvae.training import to_device

        cpu = torch.device("cpu")
        return (to_device(self.frames_u8, cpu, channels_last),
                to_device(self.poses_u8, cpu, channels_last))

    def step(self, side: str, teacher_forced: bool, *, channels_last: bool = False,
             chunk: int = 0, model: nn.Module | None = None) -> Callable[[], Any]:
        """A closure running one training step of `side` ("ours" or "lab")."""
        net, optimizer = self.channels_last_copy() if channels_last else (self.model,
                                                                           self.optimizer)
        frames, poses = self.inputs(channels_last)
        if model is not None:
            net = model
        elif chunk:
            net = ChunkedCVAE(net, chunk)
        if side == "ours":
            return lambda: train_step(net, optimizer, frames, poses, beta=BETA,
                                      teacher_forced=teacher_forced, grad_clip=GRAD_CLIP)
        return lambda: lab_loop_step(net, optimizer, frames, poses, beta=BETA,
                                     teacher_forced=teacher_forced, grad_clip=GRAD_CLIP)

    def step_flops(self, side: str, teacher_forced: bool) -> float:
        """FLOPs of one step's forward + backward (FlopCounterMode: convolutions, matmuls)."""
        from torch.utils.flop_counter import FlopCounterMode

        fn = self.step(side, teacher_forced)
        with FlopCounterMode(display=False) as counter:
            fn()
        self.restore()
        return float(counter.get_total_flops())


def without_mkldnn(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        with torch.backends.mkldnn.flags(enabled=False):
            return fn()
    return run


def without_denormal_flush(fn: Callable[[], Any]) -> Callable[[], Any]:
    def run():
        torch.set_flush_denormal(False)
        try:
            return fn()
        finally:
            torch.set_flush_denormal(True)
    return run


# ---------------------------------------------------------------- main

def build_parser():
    p = common.parser(__doc__.split("\n\n")[0])
    common.add_threads(p)
    p.add_argument("--preset", choices=["lab", "small"], default="lab")
    p.add_argument("--batch", type=int, default=None, help="clips per step (default 2, the lab's)")
    p.add_argument("--clip-len", type=int, default=None,
                   help="frames per clip (default 16, the lab's; --quick: 6)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; --quick 3)")
    p.add_argument("--explore", nargs="?", const="all", default="",
                   metavar="GROUPS",
                   help="also time other settings, comma-separated groups of "
                        f"{','.join(EXPLORE)} (default: all): channels_last layout, the "
                        "teacher-forced batched pass in chunks, 1 thread, oneDNN off, denormal "
                        "flushing off")
    p.add_argument("--chunks", default="2,4,8",
                   help="--explore: frames per chunk of the teacher-forced batched pass")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile(model) (compile time reported separately)")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    common.set_threads(args)
    torch.set_flush_denormal(True)  # what configure_torch does on CPU, for both sides
    preset = "small" if args.tiny else args.preset
    batch = args.batch or common.size(args, 2, 2, 1)
    clip_len = args.clip_len or common.size(args, 16, 6, 3)
    rounds = args.rounds or common.size(args, 3, 3, 1)
    warmup = common.size(args, 1, 1, 0)
    log = None if args.json else common.stderr
    common.stderr(f"train_step: preset {preset}, batch {batch}, clip_len {clip_len}, "
                  f"{rounds} rounds after {warmup} warm-up")
    bench = Bench(preset, batch, clip_len)

    step_flops = bench.step_flops("ours", True)
    lab_flops = bench.step_flops("lab", True)
    matmul_n = common.size(args, 2048, 2048, 256)

    def matmul():
        a = torch.randn(matmul_n, matmul_n)
        a @ a

    variants: dict[str, Callable[[], Any]] = {
        "ours teacher-forced": bench.step("ours", True),
        "lab teacher-forced": bench.step("lab", True),
        "ours free-running": bench.step("ours", False),
        "lab free-running": bench.step("lab", False),
        "matmul": matmul,
    }
    compile_seconds = None
    groups = set(EXPLORE) if args.explore == "all" else {
        g.strip() for g in args.explore.split(",") if g.strip()}
    unknown = groups - set(EXPLORE)
    if unknown:
        raise SystemExit(f"--explore: unknown group(s) {sorted(unknown)}; choose from {EXPLORE}")
    if "layout" in groups:
        variants["ours tf channels_last"] = bench.step("ours", True, channels_last=True)
        variants["lab tf channels_last"] = bench.step("lab", True, channels_last=True)
        variants["ours fr channels_last"] = bench.step("ours", False, channels_last=True)
        variants["lab fr channels_last"] = bench.step("lab", False, channels_last=True)
    if "chunk" in groups:
        for k in (int(c) for c in args.chunks.split(",") if c.strip()):
            variants[f"ours tf chunk {k}"] = bench.step("ours", True, chunk=k)
            variants[f"ours tf chunk {k} channels_last"] = bench.step(
                "ours", True, chunk=k, channels_last=True)
    if "threads" in groups and torch.get_num_threads() > 1:
        variants["ours tf 1 thread"] = common.with_threads(bench.step("ours", True), 1)
        variants["lab tf 1 thread"] = common.with_threads(bench.step("lab", True), 1)
        variants["ours fr 1 thread"] = common.with_threads(bench.step("ours", False), 1)
        variants["lab fr 1 thread"] = common.with_threads(bench.step("lab", False), 1)
    if "onednn" in groups:
        variants["ours tf no oneDNN"] = without_mkldnn(bench.step("ours", True))
        variants["lab tf no oneDNN"] = without_mkldnn(bench.step("lab", True))
    if "denormal" in groups:
        variants["ours fr no denormal flush"] = without_denormal_flush(bench.step("ours", False))
        variants["lab fr no denormal flush"] = without_denormal_flush(bench.step("lab", False))
    if args.compile:
        compiled = torch.compile(bench.model)
        fn = bench.step("ours", True, model=compiled)
        t0 = time.perf_counter()
        fn()  # compiles
        compile_seconds = time.perf_counter() - t0
        bench.restore()
        variants["ours tf compiled"] = fn

    def before(name: str) -> None:
        if name != "matmul":
            bench.restore()

    series = common.interleave(variants, rounds=rounds, warmup=warmup, before=before, log=log)
    n = bench.frames_per_step

    def fps(name: str) -> float:
        return n / series[name].wall

    def cpu_fps(name: str) -> float:
        return n / series[name].cpu

    def pair(kind: str) -> dict[str, float]:
        ours, lab = f"ours {kind}", f"lab {kind}"
        paired = statistics.median(
            b.wall / a.wall for a, b in zip(series[ours].samples, series[lab].samples,
                                            strict=True))
        return {"ours_fps": fps(ours), "lab_loop_fps": fps(lab), "ratio": fps(ours) / fps(lab),
                "ratio_paired": paired,  # median over rounds of (lab time / our time)
                "ours_fps_cpu_time": cpu_fps(ours), "lab_loop_fps_cpu_time": cpu_fps(lab),
                "ratio_cpu_time": cpu_fps(ours) / cpu_fps(lab)}

    matmul_gflops = 2 * matmul_n**3 / series["matmul"].wall / 1e9
    achieved = step_flops / series["ours teacher-forced"].wall / 1e9
    figures: dict[str, Any] = {
        "teacher_forced": pair("teacher-forced"),
        "free_running": pair("free-running"),
        "step_gflop": step_flops / 1e9,
        "achieved_gflops": achieved,
        "matmul_gflops": matmul_gflops,
        "efficiency": achieved / matmul_gflops,
        "lab_loop_step_gflop": lab_flops / 1e9,
        "config": {"preset": preset, "batch": batch, "clip_len": clip_len, "rounds": rounds,
                   "frames_per_step": n, "threads": torch.get_num_threads(),
                   "flush_denormal": True},
        "machine": common.machine(),
    }
    if compile_seconds is not None:
        figures["compile_seconds"] = compile_seconds
    figures["variants_fps"] = {k: fps(k) for k in variants if k != "matmul"}
    figures["variants_gflops"] = {
        k: (step_flops if k.startswith("ours t") else lab_flops) / series[k].wall / 1e9
        for k in variants if " tf" in k or "teacher-forced" in k
    }

    tf, fr = figures["teacher_forced"], figures["free_running"]
    lines = [
        f"train_step benchmark: preset {preset}, batch {batch}, clip_len {clip_len} "
        f"({n} predicted frames per step), medians of {rounds} interleaved rounds",
        common.machine_line(),
        "",
        f"{'variant':<36} {'frames/s':>9} {'(min..max)':>17} {'frames/cpu-s':>13}",
    ]
    for name in variants:
        if name == "matmul":
            continue
        lo, hi = series[name].spread()
        lines.append(f"{name:<36} {fps(name):9.3f} {f'({n / hi:.3f}..{n / lo:.3f})':>17} "
                     f"{cpu_fps(name):13.3f}")
    lines += [
        "",
        f"teacher_forced: ours_fps {tf['ours_fps']:.3f}  lab_loop_fps {tf['lab_loop_fps']:.3f}  "
        f"ratio {tf['ratio']:.2f}x  (paired {tf['ratio_paired']:.2f}x, cpu-time "
        f"{tf['ratio_cpu_time']:.2f}x; goal >= 1.5x)",
        f"free_running:   ours_fps {fr['ours_fps']:.3f}  lab_loop_fps {fr['lab_loop_fps']:.3f}  "
        f"ratio {fr['ratio']:.2f}x  (paired {fr['ratio_paired']:.2f}x, cpu-time "
        f"{fr['ratio_cpu_time']:.2f}x; goal >= 1.0x)",
        f"step_gflop {step_flops / 1e9:.1f} (ours, teacher-forced; lab loop "
        f"{lab_flops / 1e9:.1f})  achieved_gflops {achieved:.1f}  matmul_gflops "
        f"{matmul_gflops:.1f}  efficiency {achieved / matmul_gflops:.0%} (goal >= 60%)",
    ]
    if compile_seconds is not None:
        lines.append(f"torch.compile: first step (compiling) {compile_seconds:.1f} s")
    if len(figures["variants_gflops"]) > 2:
        lines.append("GFLOP/s per teacher-forced variant: " + ", ".join(
            f"{k} {v:.1f}" for k, v in figures["variants_gflops"].items()))
    common.emit(args, figures, lines)
    return figures


if __name__ == "__main__":
    main()
