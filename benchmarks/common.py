"""Shared helpers: interleaved timing, machine facts, peak RSS, cached synthetic data, Ray."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- command line

def parser(description: str | None) -> argparse.ArgumentParser:
    """The flags every benchmark takes: --quick, --json and the hidden --tiny (smoke tests)."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, a few rounds (make bench)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--json-out", default=None, metavar="FILE",
                   help="also write the figures as JSON to FILE")
    # the smallest sizes, for tests/test_benchmarks.py: the figures mean nothing
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    return p


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's, the cores; --tiny: 1)")


def set_threads(args: argparse.Namespace) -> None:
    """Apply --threads. --tiny runs 1 thread: on a busy machine two OpenMP threads spin-wait for
    each other and tiny ops get 10x slower (see BENCHMARKS.md)."""
    import torch

    threads = args.threads if args.threads is not None else (1 if args.tiny else 0)
    if threads > 0:
        torch.set_num_threads(threads)


def size(args: argparse.Namespace, full: Any, quick: Any, tiny: Any) -> Any:
    """The value for the chosen size: --tiny beats --quick beats the full run."""
    return tiny if args.tiny else quick if args.quick else full


# ---------------------------------------------------------------- machine facts

def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on (printed with every benchmark)."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": _version("ray"),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(load[0], 2),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def machine_line() -> str:
    m = machine()
    return (f"machine: {m['cores']} cores ({m['cpu']}), python {m['python']}, torch {m['torch']}, "
            f"ray {m['ray']}, torch threads {m['torch_threads']}, load average "
            f"{m['load_average_1min']} (a busy machine makes every figure noisy: compare ratios)"
            + (f", GPU {m['gpu']}" if m["gpu"] else ""))


# ---------------------------------------------------------------- timing

def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Sample:
    wall: float
    cpu: float


@dataclass
class Series:
    """Repeated measurements of one variant."""

    samples: list[Sample] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall for s in self.samples)

    @property
    def cpu(self) -> float:
        return statistics.median(s.cpu for s in self.samples)

    def spread(self) -> tuple[float, float]:
        walls = [s.wall for s in self.samples]
        return min(walls), max(walls)


def measure(fn: Callable[[], Any]) -> Sample:
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    return Sample(time.perf_counter() - t0, cpu_seconds() - c0)


def interleave(variants: dict[str, Callable[[], Any]], *, rounds: int, warmup: int = 1,
               before: Callable[[str], None] | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Series]:
    """Run the variants round-robin (a, b, c, a, b, c, ...) after `warmup` untimed rounds, so a
    burst of load from elsewhere hits every variant alike. `before(name)` runs untimed."""
    out = {name: Series() for name in variants}
    for r in range(warmup + rounds):
        for name, fn in variants.items():
            if before is not None:
                before(name)
            if log is not None and r < warmup:  # a first run may stall (cold caches, tuning)
                log(f"  {'warm-up':>13}  {name:<28} ...")
            sample = measure(fn)
            if r >= warmup:
                out[name].samples.append(sample)
            if log is not None:
                tag = "warm-up" if r < warmup else f"round {r - warmup + 1}/{rounds}"
                log(f"  {tag:>13}  {name:<28} {sample.wall:8.3f} s wall  {sample.cpu:8.3f} s cpu")
    return out


def matmul_gflops(n: int = 1024, reps: int = 5) -> float:
    """GFLOP/s of a float32 n x n matmul (the machine's practical dense peak), median of reps."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- memory

def _status_kb(key: str) -> int | None:
    with contextlib.suppress(OSError):
        m = re.search(rf"^{key}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text(), re.M)
        if m:
            return int(m.group(1))
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM; since the last reset_peak_rss())."""
    kb = _status_kb("VmHWM")
    if kb is None:  # not Linux: getrusage never resets
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            kb //= 1024
    return kb / 1024


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- data

def cache_dir() -> Path:
    """Where synthetic sets and packs are kept between benchmark runs ($CVAE_BENCH_CACHE)."""
    default = Path(tempfile.gettempdir()) / f"cvae-bench-{os.getuid()}"
    path = Path(os.environ.get("CVAE_BENCH_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def synth_set(*, train_videos: int = 8, frames_per_video: int = 160, val_frames: int = 630,
              test_sequences: int = 5, test_frames: int = 630, height: int = 64,
              width: int = 128, seed: int = 0) -> Path:
    """A cached `cvae.synth.generate` folder (8 training videos and one validation video, the
    set BENCHMARKS.md was measured on; the generator makes 16 and 4 by default)."""
    from cvae import synth

    name = (f"synth-s{seed}-v{train_videos}x{frames_per_video}-val{val_frames}"
            f"-t{test_sequences}x{test_frames}-{height}x{width}")
    out = cache_dir() / name
    if not (out / "train" / "manifest.json").is_file():
        stderr(f"making the synthetic set {out} (cached for later runs)")
        with contextlib.suppress(FileExistsError, OSError):
            synth.generate(out, seed=seed, train_videos=train_videos,
                           frames_per_video=frames_per_video, val_frames=val_frames,
                           val_videos=1, test_sequences=test_sequences,
                           test_frames=test_frames, height=height, width=width, progress=False)
        if not (out / "train" / "manifest.json").is_file():  # a concurrent run lost the race?
            raise RuntimeError(f"{out}: could not make the synthetic set")
    return out


def packed(root: Path, *, clip_len: int = 16, height: int = 32, width: int = 64,
           rows_per_file: int = 64) -> Path:
    """A cached Parquet pack of a lab-layout folder."""
    from cvae import packs

    out = root.parent / f"{root.name}.pack-c{clip_len}-{height}x{width}-r{rows_per_file}"
    if not (out / "meta.json").is_file():
        with contextlib.suppress(OSError):
            packs.pack(root, out, clip_len=clip_len, height=height, width=width,
                         rows_per_file=rows_per_file, progress=False)
    if not (out / "meta.json").is_file():
        raise RuntimeError(f"{out}: could not pack {root}")
    return out


# ---------------------------------------------------------------- Ray

@contextlib.contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[float]:
    """A fresh local Ray started the way `ray_jobs.common.connect` starts one (one more logical
    CPU than cores, dashboard on), never attached to another session's cluster; yields the
    start-up seconds. A Ray already initialized in this process is reused (start-up 0.0 s) and
    left running: the smoke test shares one Ray between the benchmarks."""
    import ray

    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.perf_counter()
    env = {}
    if Path.cwd().resolve() != REPO_ROOT:
        # Ray puts the driver's working directory on the workers' path; `benchmarks` needs this
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)}}
    ray.init(address="local", num_cpus=num_cpus or (os.cpu_count() or 1) + 1,
             include_dashboard=True, logging_level="WARNING", log_to_driver=False,
             **({"runtime_env": env} if env else {}))
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def ray_quiet() -> None:
    """Fewer progress bars and log lines from Ray Data and Train."""
    import logging
    import warnings

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # `read_parquet(columns=...)` (what ray_jobs.common.build_trainer calls) warns on Ray 2.60
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\..*")
    warnings.filterwarnings("ignore", message=r".*columns=.*deprecated.*")


# ---------------------------------------------------------------- output

def emit(args: argparse.Namespace, figures: dict[str, Any], lines: list[str]) -> None:
    """Print the JSON object (--json) or the human-readable lines; --json-out writes a file."""
    if getattr(args, "json_out", None):
        Path(args.json_out).write_text(json.dumps(figures, indent=1, default=float) + "\n")
    if args.json:
        print(json.dumps(figures, indent=None, default=float))
    else:
        print("\n".join(lines))


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:.0f}"


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


def with_threads(fn, threads: int):
    """`fn` run with `threads` torch threads (the previous count restored after)."""

    from cvae.evaluate import torch_threads

    def run():
        with torch_threads(threads):
            return fn()
    return run
