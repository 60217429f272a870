"""Training-step throughput: `cvae.training.train_step` against the reference per-frame loop.

    python -m benchmarks.train_step --preset lab [--batch 2] [--clip-len 16] [--quick] [--json]
    python -m benchmarks.train_step --preset lab --quick --explore     # layouts, chunks, threads
    python -m benchmarks.train_step --preset small --quick --compile   # + torch.compile
    python -m benchmarks.train_step --preset lab --device cuda --bf16  # GPU, + bf16 autocast

Both sides train the same CVAE (weights and Adam state restored before every timed step), on the
same clip batch, with the same torch settings (flush denormals on, as `cvae-train` does on CPU).
Measurements are interleaved (ours, lab, ours, lab, ...) after a warm-up round; figures are
medians. Frames/s counts predicted frames: batch x (clip_len - 1) per step. On a GPU each timed
sample is `--repeat` steps (default 10), synchronized, since one step takes milliseconds.

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
from cvae.training import chunk_frames_for, to_device, train_step

BETA = 1.0
GRAD_CLIP = 1.0
EXPLORE = ("layout", "chunk", "threads", "onednn", "denormal")


# ---------------------------------------------------------------- the reference loop

def lab_loop_step(model: CVAE, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
                  poses: torch.Tensor, *, beta: float, teacher_forced: bool,
                  grad_clip: float) -> torch.Tensor:
    """The reference script's training step, frame by frame. frames, poses: float [B,T,3,H,W]."""
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


# ---------------------------------------------------------------- set-up

def add_compiled(bench: Bench, variants: dict[str, Callable[[], Any]],
                 log: Callable[[str], None] | None) -> dict[str, float]:
    """The compiled variants: the whole model teacher-forced (torch.compile(model)), and the
    free-running step with the per-frame step compiled (run.compile, `CVAE.compile_frames`).
    Each first step, which compiles, is timed apart: returns those seconds by variant."""
    net = bench.model_for(bench.channels_last)[0]
    net.compile_frames()
    frame, net.compiled_frame = net.compiled_frame, None  # the eager variants stay eager
    free_running = bench.step("ours", False)

    def free_running_compiled():
        net.compiled_frame = frame
        try:
            return free_running()
        finally:
            net.compiled_frame = None

    compiled = {"ours tf compiled": bench.step("ours", True, model=torch.compile(net)),
                "ours fr compiled frames": free_running_compiled}
    seconds = {}
    for name, fn in compiled.items():
        if log is not None:
            log(f"compiling: {name}")
        start = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - start
        bench.restore()
        variants[name] = fn
    return seconds


class Bench:
    """One model, optimizer, batch; every variant starts its timed step from the same state.

    "ours" is the step `cvae-train` runs with the preset's defaults on this CPU (the layout of
    `train.channels_last`, `train.chunk_frames` resolved by `build_model`); variants change
    one of the two. The lab loop runs on the same weights in the lab's NCHW layout.
    """

    def __init__(self, preset: str, batch: int, clip_len: int, seed: int = 0,
                 device: torch.device | None = None, repeat: int = 1):
        cfg = load_config(None, preset=preset)
        self.device = device or torch.device("cpu")
        self.repeat = repeat
        torch.manual_seed(seed)
        self.cfg = cfg
        self.channels_last = cfg.train.channels_last
        self.chunk = chunk_frames_for(cfg, self.device)
        self._models: dict[bool, tuple[CVAE, torch.optim.Optimizer]] = {}
        base = CVAE(cfg.model)
        self.snapshot = (copy.deepcopy(base.state_dict()), None)
        h, w = cfg.data.height, cfg.data.width
        g = torch.Generator().manual_seed(seed)
        # uint8 clips through the project's own conversion, like a real batch
        self.frames_u8 = torch.randint(0, 256, (batch, clip_len, 3, h, w), generator=g,
                                       dtype=torch.uint8)
        self.poses_u8 = torch.randint(0, 256, (batch, clip_len, 3, h, w), generator=g,
                                      dtype=torch.uint8)
        self.frames_per_step = batch * (clip_len - 1)
        # one untimed step so the snapshot holds a warmed-up Adam state
        self.step("ours", True)()
        model, optimizer = self.model_for(self.channels_last)
        self.snapshot = (copy.deepcopy(model.state_dict()),
                         copy.deepcopy(optimizer.state_dict()))
        self.restore()

    def model_for(self, channels_last: bool) -> tuple[CVAE, torch.optim.Optimizer]:
        """The model (and its Adam) in one memory layout, built on first use."""
        if channels_last not in self._models:
            model = CVAE(self.cfg.model).to(self.device)
            model.load_state_dict(self.snapshot[0])
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            self._models[channels_last] = (
                model, torch.optim.Adam(model.parameters(), lr=self.cfg.train.lr))
        return self._models[channels_last]

    def restore(self) -> None:
        state, opt = self.snapshot
        for model, optimizer in self._models.values():
            model.load_state_dict(state)
            if opt is not None:
                optimizer.load_state_dict(opt)

    def inputs(self, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return (to_device(self.frames_u8, self.device, channels_last),
                to_device(self.poses_u8, self.device, channels_last))

    def step(self, side: str, teacher_forced: bool, *, channels_last: bool | None = None,
             chunk: int | None = None, model: nn.Module | None = None,
             autocast_dtype: torch.dtype | None = None) -> Callable[[], Any]:
        """A closure running `repeat` training steps of `side` ("ours" or "lab"), synchronized.

        channels_last / chunk: None is the project's default for "ours" (NCHW for the lab).
        autocast_dtype: "ours" under autocast (bf16 on a GPU), as `train.bf16` runs it.
        """
        if channels_last is None:
            channels_last = self.channels_last if side == "ours" else False
        chunk = self.chunk if chunk is None else chunk
        net, optimizer = self.model_for(channels_last)
        frames, poses = self.inputs(channels_last)

        def run_ours():
            target = net if model is None else model
            net.chunk_frames = chunk  # the models are shared between variants
            return train_step(target, optimizer, frames, poses, beta=BETA,
                              teacher_forced=teacher_forced, grad_clip=GRAD_CLIP,
                              autocast_dtype=autocast_dtype)

        def run_lab():
            return lab_loop_step(net, optimizer, frames, poses, beta=BETA,
                                 teacher_forced=teacher_forced, grad_clip=GRAD_CLIP)

        return self.synchronized(run_ours if side == "ours" else run_lab)

    def synchronized(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """fn `repeat` times; on a GPU, wait for its kernels so the wall time is theirs."""
        cuda = self.device.type == "cuda"
        if self.repeat == 1 and not cuda:
            return fn

        def run():
            for _ in range(self.repeat):
                result = fn()
            if cuda:
                torch.cuda.synchronize(self.device)
            return result

        return run

    def step_flops(self, side: str, teacher_forced: bool) -> float:
        """FLOPs of one step's forward + backward (FlopCounterMode: convolutions, matmuls)."""
        from torch.utils.flop_counter import FlopCounterMode

        fn = self.step(side, teacher_forced)
        with FlopCounterMode(display=False) as counter:
            fn()
        self.restore()
        return float(counter.get_total_flops()) / self.repeat


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
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--bf16", action="store_true",
                   help="also time our step under bf16 autocast (train.bf16; a GPU's path)")
    p.add_argument("--repeat", type=int, default=None,
                   help="steps per timed sample (default 1 on a CPU, 10 on a GPU)")
    return p


def add_explored(bench: Bench, variants: dict[str, Callable[[], Any]], args,
                 log: Callable[[str], None] | None) -> dict[str, float] | None:
    """Add the --explore groups', --compile's and --bf16's variants; compile seconds or None."""
    groups = set(EXPLORE) if args.explore == "all" else {
        g.strip() for g in args.explore.split(",") if g.strip()}
    unknown = groups - set(EXPLORE)
    if unknown:
        raise SystemExit(f"--explore: unknown group(s) {sorted(unknown)}; choose from {EXPLORE}")
    other = not bench.channels_last
    other_name = "channels_last" if other else "NCHW"
    if "layout" in groups:
        variants[f"ours tf {other_name}"] = bench.step("ours", True, channels_last=other)
        variants[f"ours fr {other_name}"] = bench.step("ours", False, channels_last=other)
        variants["lab tf channels_last"] = bench.step("lab", True, channels_last=True)
        variants["lab fr channels_last"] = bench.step("lab", False, channels_last=True)
    if "chunk" in groups:
        for k in [0, *(int(c) for c in args.chunks.split(",") if c.strip())]:
            if k == bench.chunk:
                continue
            name = "one pass" if k == 0 else f"chunk {k}"
            variants[f"ours tf {name}"] = bench.step("ours", True, chunk=k)
            variants[f"ours tf {name} {other_name}"] = bench.step(
                "ours", True, chunk=k, channels_last=other)
    if "threads" in groups and torch.get_num_threads() > 1:
        for who in ("ours", "lab"):
            for kind in ("tf", "fr"):
                variants[f"{who} {kind} 1 thread"] = common.with_threads(
                    bench.step(who, kind == "tf"), 1)
    if "onednn" in groups:
        variants["ours tf no oneDNN"] = without_mkldnn(bench.step("ours", True))
        variants["lab tf no oneDNN"] = without_mkldnn(bench.step("lab", True))
    if "denormal" in groups:
        variants["ours fr no denormal flush"] = without_denormal_flush(bench.step("ours", False))
        variants["lab fr no denormal flush"] = without_denormal_flush(bench.step("lab", False))
    compile_seconds = add_compiled(bench, variants, log) if args.compile else None
    if args.bf16:
        variants["ours tf bf16"] = bench.step("ours", True, autocast_dtype=torch.bfloat16)
        variants["ours fr bf16"] = bench.step("ours", False, autocast_dtype=torch.bfloat16)
    return compile_seconds


def summarise(series: dict[str, Any], variants: dict[str, Callable[[], Any]], n: int,
              flops: dict[str, float], repeat: int) -> dict[str, Any]:
    """Frames/s per variant (`n` predicted frames per timed sample of `repeat` steps), ours
    against the lab loop, and GFLOP/s against the matmul's (`flops`: per step, and the
    matmul's per call)."""
    def fps(name: str) -> float:
        return n / series[name].wall

    def pair(kind: str) -> dict[str, float]:
        ours, lab = f"ours {kind}", f"lab {kind}"
        paired = statistics.median(
            b.wall / a.wall for a, b in zip(series[ours].samples, series[lab].samples,
                                            strict=True))
        cpu_ours, cpu_lab = n / series[ours].cpu, n / series[lab].cpu
        return {"ours_fps": fps(ours), "lab_loop_fps": fps(lab), "ratio": fps(ours) / fps(lab),
                "ratio_paired": paired,  # median over rounds of (lab time / our time)
                "ours_fps_cpu_time": cpu_ours, "lab_loop_fps_cpu_time": cpu_lab,
                "ratio_cpu_time": cpu_ours / cpu_lab}

    def gflops(name: str, per_step: float) -> float:
        return per_step * repeat / series[name].wall / 1e9

    matmul_gflops = gflops("matmul", flops["matmul"])
    achieved = gflops("ours teacher-forced", flops["ours"])
    return {
        "teacher_forced": pair("teacher-forced"),
        "free_running": pair("free-running"),
        "step_gflop": flops["ours"] / 1e9,
        "achieved_gflops": achieved,
        "matmul_gflops": matmul_gflops,
        "efficiency": achieved / matmul_gflops,
        "lab_loop_step_gflop": flops["lab"] / 1e9,
        "variants_fps": {k: fps(k) for k in variants if k != "matmul"},
        "variants_gflops": {
            k: gflops(k, flops["ours"] if k.startswith("ours t") else flops["lab"])
            for k in variants if " tf" in k or "teacher-forced" in k},
    }


def report_lines(figures: dict[str, Any], series: dict[str, Any], n: int,
                 compile_seconds: dict[str, float] | None) -> list[str]:
    """The printed table and summary of `summarise`'s figures."""
    c, tf, fr = figures["config"], figures["teacher_forced"], figures["free_running"]
    lines = [
        f"train_step benchmark: preset {c['preset']}, batch {c['batch']}, clip_len "
        f"{c['clip_len']} ({n} predicted frames per step), medians of {c['rounds']} "
        "interleaved rounds",
        f"ours = cvae.training.train_step as configured by default: {c['ours']}; "
        "the lab loop: NCHW, frame by frame",
        common.machine_line(),
        "",
        f"{'variant':<36} {'frames/s':>9} {'(min..max)':>17} {'frames/cpu-s':>13}",
    ]
    for name, fps in figures["variants_fps"].items():
        lo, hi = series[name].spread()
        lines.append(f"{name:<36} {fps:9.3f} {f'({n / hi:.3f}..{n / lo:.3f})':>17} "
                     f"{n / series[name].cpu:13.3f}")
    lines += [
        "",
        f"teacher_forced: ours_fps {tf['ours_fps']:.3f}  lab_loop_fps {tf['lab_loop_fps']:.3f}  "
        f"ratio {tf['ratio']:.2f}x  (paired {tf['ratio_paired']:.2f}x, cpu-time "
        f"{tf['ratio_cpu_time']:.2f}x; goal >= 1.5x)",
        f"free_running:   ours_fps {fr['ours_fps']:.3f}  lab_loop_fps {fr['lab_loop_fps']:.3f}  "
        f"ratio {fr['ratio']:.2f}x  (paired {fr['ratio_paired']:.2f}x, cpu-time "
        f"{fr['ratio_cpu_time']:.2f}x; goal >= 1.0x)",
        f"step_gflop {figures['step_gflop']:.1f} (ours, teacher-forced; lab loop "
        f"{figures['lab_loop_step_gflop']:.1f})  achieved_gflops "
        f"{figures['achieved_gflops']:.1f}  matmul_gflops {figures['matmul_gflops']:.1f}  "
        f"efficiency {figures['efficiency']:.0%} (goal >= 60%)",
    ]
    if compile_seconds is not None:
        lines.append("torch.compile, the first step (compiling): " + ", ".join(
            f"{k} {v:.1f} s" for k, v in compile_seconds.items()))
    if len(figures["variants_gflops"]) > 2:
        lines.append("GFLOP/s per teacher-forced variant: " + ", ".join(
            f"{k} {v:.1f}" for k, v in figures["variants_gflops"].items()))
    return lines


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
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    # On CUDA, cuDNN autotuning (cvae-train's setting) stays off: every variant's shapes would
    # be tuned anew, and the one GPU run with it on printed nothing in 120 s (BENCHMARKS.md 7)
    repeat = args.repeat or (10 if device.type == "cuda" else 1)
    t0 = time.perf_counter()
    bench = Bench(preset, batch, clip_len, device=device, repeat=repeat)
    common.stderr(f"  model, data and one warm-up step ready in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    matmul_n = common.size(args, 8192 if device.type == "cuda" else 2048, 2048, 256)
    flops = {"ours": bench.step_flops("ours", True), "lab": bench.step_flops("lab", True),
             "matmul": 2 * matmul_n**3}
    common.stderr(f"  FLOPs counted in {time.perf_counter() - t0:.1f} s")
    matmul_a = torch.randn(matmul_n, matmul_n, device=device)

    @bench.synchronized
    def matmul():
        matmul_a @ matmul_a

    variants: dict[str, Callable[[], Any]] = {
        "ours teacher-forced": bench.step("ours", True),
        "lab teacher-forced": bench.step("lab", True),
        "ours free-running": bench.step("ours", False),
        "lab free-running": bench.step("lab", False),
        "matmul": matmul,
    }
    compile_seconds = add_explored(bench, variants, args, log)

    def before(name: str) -> None:
        if name != "matmul":
            bench.restore()

    series = common.interleave(variants, rounds=rounds, warmup=warmup, before=before, log=log)
    n = bench.frames_per_step * repeat  # predicted frames per timed sample
    layout = "channels_last" if bench.channels_last else "NCHW"
    figures = summarise(series, variants, n, flops, repeat)
    figures["config"] = {
        "preset": preset, "batch": batch, "clip_len": clip_len, "rounds": rounds,
        "frames_per_step": bench.frames_per_step, "threads": torch.get_num_threads(),
        "flush_denormal": True, "device": str(device), "steps_per_sample": repeat,
        "ours": f"{layout}, " + (f"chunks of {bench.chunk} frames" if bench.chunk else "one pass"),
    }
    figures["machine"] = common.machine()
    if compile_seconds is not None:
        figures["compile_seconds"] = compile_seconds
    common.emit(args, figures, report_lines(figures, series, n, compile_seconds))
    return figures

if __name__ == "__main__":
    main()
