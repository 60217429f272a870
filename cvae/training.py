"""The training loop, written once and called per worker.

`fit` knows nothing about Ray: the caller passes the device, an iterator factory for each epoch's
batches, a `prepare_model` hook (DDP wrapping) and a `report` hook (ray.train.report). The
single-process `cvae-train` and the Ray workers run exactly this code.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cvae import plots
from cvae.checkpoint import save_checkpoint
from cvae.config import Config, to_yaml
from cvae.data import augment
from cvae.errors import CvaeError
from cvae.evaluate import Validation, validate
from cvae.losses import clip_loss
from cvae.model import CVAE, init_copy_last, unwrap
from cvae.schedules import KLAnnealing, TeacherForcing

# (frames uint8 [B,T,3,H,W], poses uint8 [B,T,3,H,W], clip ids int64 [B])
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

METRIC_COLUMNS = (
    "epoch", "loss", "mse", "kl", "beta", "tfr", "lr", "val_psnr", "val_psnr_short",
    "baseline_psnr", "baseline_psnr_short", "val_ssim", "val_ssim_short", "baseline_ssim",
    "baseline_ssim_short", "seconds",
)


class TrainingDiverged(CvaeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CvaeError("run.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Every epoch (and worker) gets its own seed, so a resumed run replays the same draws."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**31 - 1)


CPU_CHUNK_FRAMES = 4  # measured best on a CPU (BENCHMARKS.md, section 1)


def chunk_frames_for(cfg: Config, device: torch.device) -> int:
    """train.chunk_frames with -1 (auto) resolved for the device."""
    if cfg.train.chunk_frames >= 0:
        return cfg.train.chunk_frames
    return CPU_CHUNK_FRAMES if device.type == "cpu" else 0


def build_model(cfg: Config, device: torch.device) -> CVAE:
    model = CVAE(cfg.model)
    if cfg.model.init == "copy_last":
        init_copy_last(model)
    model = model.to(device)
    model.chunk_frames = chunk_frames_for(cfg, device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 [B,T,3,H,W] -> float in [0,1] on the device (the copy stays uint8: 4x less traffic)."""
    x = batch.to(device, non_blocking=True).float().div_(255.0)
    if channels_last:
        # channels_last applies to 4-D tensors: fold time into batch and back.
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    return x


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, frames: torch.Tensor,
               poses: torch.Tensor, *, beta: float, teacher_forced: bool, grad_clip: float,
               autocast_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """One clip: forward, the lab's loss, one backward, grad-norm clip, Adam step.

    frames, poses: float [B,T,3,H,W]. Returns detached (loss, mse, kl).
    """
    device_type = frames.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        pred, mu, logvar = model(frames, poses, teacher_forced)
    loss, mse, kl = clip_loss(pred, frames[:, 1:], mu, logvar, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach(), mse.detach(), kl.detach()


@dataclass
class EpochStats:
    loss: float
    mse: float
    kl: float
    steps: int
    clips: int
    seconds: float


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch],
                *, epoch: int, beta: float, tfr: float, grad_clip: float, device: torch.device,
                tf_rng: random.Random, augment_rng: random.Random | None = None,
                max_steps: int | None = None, channels_last: bool = False,
                autocast_dtype: torch.dtype | None = None, progress: bool = True,
                on_step: Callable[[int], None] | None = None, desc: str = "") -> EpochStats:
    """Train one epoch. Each clip is teacher-forced with probability `tfr` (a Bernoulli draw);
    with `augment_rng`, clips are augmented (cvae.data.augment)."""
    model.train()
    start = time.perf_counter()
    totals = torch.zeros(3, dtype=torch.float64)
    steps = clips = 0
    bar = tqdm(total=max_steps, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        # islice: stop before fetching a batch that will not be trained on
        for frames_u8, poses_u8, _ids in itertools.islice(batches, max_steps):
            if on_step is not None:
                on_step(steps)
            if augment_rng is not None:
                frames_u8, poses_u8 = augment(frames_u8, poses_u8, augment_rng)
            frames = to_device(frames_u8, device, channels_last)
            poses = to_device(poses_u8, device, channels_last)
            teacher_forced = tf_rng.random() < tfr
            loss, mse, kl = train_step(
                model, optimizer, frames, poses, beta=beta, teacher_forced=teacher_forced,
                grad_clip=grad_clip, autocast_dtype=autocast_dtype,
            )
            values = torch.stack([loss, mse, kl]).double().cpu()  # one device sync per step
            if not torch.isfinite(values[0]):
                raise TrainingDiverged(
                    f"loss is {values[0].item()} at epoch {epoch + 1}, step {steps + 1}; "
                    "stopped, the last good checkpoint is kept (try a lower train.lr)"
                )
            totals += values
            steps += 1
            clips += frames.shape[0]
            bar.update(1)
            bar.set_postfix(loss=f"{values[0].item():.4f}", beta=f"{beta:.2f}", tfr=f"{tfr:.2f}")
    finally:
        bar.close()
    if steps == 0:
        raise CvaeError(f"epoch {epoch + 1}: the training data gave no batch")
    mean = (totals / steps).tolist()
    return EpochStats(mean[0], mean[1], mean[2], steps, clips, time.perf_counter() - start)


class RunDir:
    """The run's artifacts: config.yaml, metrics.csv, figures, TensorBoard logs, checkpoints."""

    def __init__(self, out: str | Path, cfg: Config, *, resume_epoch: int = 0):
        self.path = Path(out)
        self.ckpt_dir = self.path / "checkpoints"
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.path / "config.yaml", to_yaml(cfg))
        # A resumed run forgets rows past its checkpoint, so no epoch appears twice.
        self.rows = [r for r in self.read_metrics(self.path) if int(r["epoch"]) <= resume_epoch]
        self._write_metrics()
        self._tb = None

    @staticmethod
    def read_metrics(path: str | Path) -> list[dict[str, str]]:
        file = Path(path) / "metrics.csv"
        if not file.is_file():
            return []
        with open(file, newline="") as fh:
            return list(csv.DictReader(fh))

    def _write_metrics(self) -> None:
        tmp = self.path / f".metrics.csv.tmp-{os.getpid()}"
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path / "metrics.csv")

    @property
    def tb(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def log_epoch(self, metrics: dict[str, Any], validation: Validation | None) -> None:
        row = {k: _fmt(metrics.get(k)) for k in METRIC_COLUMNS}
        self.rows.append(row)
        self._write_metrics()
        plots.training_curve(self.rows, self.path / "training.png")
        epoch = int(metrics["epoch"])
        for key in METRIC_COLUMNS[1:]:
            value = metrics.get(key)
            if value is not None:
                group = "val" if "psnr" in key or "ssim" in key else "train"
                self.tb.add_scalar(f"{group}/{key}", value, epoch)
        if validation is not None:
            self.tb.add_image("val/predicted_over_true", _pred_vs_true(validation), epoch)
        self.tb.flush()

    def write_best_validation(self, validation: Validation, epoch: int) -> None:
        write_psnr_csv(self.path / "psnr_per_frame.csv", validation)
        m = validation.metrics()
        plots.psnr_per_frame(
            validation.psnr, self.path / "psnr_per_frame.png", baseline=validation.baseline,
            title=f"Validation PSNR per frame (best epoch {epoch}: {m['val_psnr']:.2f} dB)",
            ssim=validation.ssim or (), baseline_ssim=validation.baseline_ssim or (),
        )

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_psnr_csv(path: str | Path, validation: Validation) -> None:
    _atomic_write(Path(path), validation.per_frame_csv())


def _pred_vs_true(validation: Validation, frames: int = 8) -> torch.Tensor:
    """[3,H',W'] grid: predicted frames 1..n (top row) over the true ones (bottom row)."""
    from torchvision.utils import make_grid

    n = min(frames, validation.pred.shape[0] - 1)
    tiles = torch.cat([validation.pred[1 : n + 1], validation.target[1 : n + 1]])
    return make_grid(tiles, nrow=n, padding=1)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class EpochData:
    """What a worker trains on: `batches(epoch)` gives that epoch's batches (already sharded and
    shuffled), `steps_per_epoch` how many it yields (for progress bars and step caps)."""

    batches: Callable[[int], Iterator[Batch]]
    steps_per_epoch: int


class Primed:
    """An iterator whose first item is fetched now, in a background thread.

    `fit` primes the next epoch's batches before validating, so a data pipeline's per-epoch
    start-up (Ray Data plans and starts its streaming split anew every epoch: seconds) overlaps
    the validation rollout instead of stalling the next epoch (BENCHMARKS.md, section 4).
    """

    _END = object()

    def __init__(self, iterator: Iterator[Batch]):
        self._iterator = iterator
        self._first: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._fetch, name="prime-next-epoch", daemon=True)
        self._thread.start()

    def _fetch(self) -> None:
        try:
            self._first = next(self._iterator, self._END)
        except BaseException as err:  # re-raised in the consumer's thread
            self._error = err

    def __iter__(self) -> Primed:
        return self

    def __next__(self) -> Batch:
        if self._thread is None:
            return next(self._iterator)
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise self._error
        first, self._first = self._first, None
        if first is self._END:
            raise StopIteration
        return first


def fit(cfg: Config, *, data: EpochData, val_video: tuple[torch.Tensor, torch.Tensor] | None,
        device: torch.device, rank: int = 0,
        prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        report: Callable[[dict[str, Any], Path | None], None] | None = None,
        resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `cfg.train.epochs` epochs. Rank 0 validates and writes the run directory.

    val_video: (frames, poses) uint8 [T,3,H,W] (rank 0 only). Returns a summary dict.
    """
    is_main = rank == 0
    torch.manual_seed(cfg.run.seed)  # same initial weights on every worker and every run
    model = build_model(cfg, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=cfg.train.lr_milestones, gamma=cfg.train.lr_gamma
    )
    t = cfg.train
    kl_annealing = KLAnnealing(t.kl_anneal_type, t.kl_anneal_cycle, t.kl_anneal_ratio)
    teacher_forcing = TeacherForcing(t.tfr, t.tfr_sde, t.tfr_d_step)
    start_epoch, best_psnr, best_epoch = 0, -math.inf, 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        kl_annealing.load_state_dict(resume_state["kl_annealing"])
        teacher_forcing.load_state_dict(resume_state["teacher_forcing"])
        start_epoch = int(resume_state["epoch"])
        best_psnr = float(resume_state.get("best_val_psnr", -math.inf))
        best_epoch = int(resume_state.get("best_epoch", 0))
    elif t.init_from:
        model.load_state_dict(initial_weights(cfg))
    wrapped = prepare_model(model) if prepare_model is not None else model
    run = RunDir(cfg.run.out, cfg, resume_epoch=start_epoch) if is_main else None
    autocast_dtype = torch.bfloat16 if t.bf16 else None
    val_float = None
    if is_main and val_video is not None:
        n = min(cfg.validation.val_len, val_video[0].shape[0])
        val_float = (val_video[0][:n].float() / 255, val_video[1][:n].float() / 255)
    last_metrics: dict[str, Any] = {}
    fault = _FaultInjector(cfg, rank, data.steps_per_epoch)
    upcoming: Primed | None = None  # the next epoch's batches, primed during validation
    try:
        for epoch in range(start_epoch, t.epochs):
            torch.manual_seed(epoch_seed(cfg.run.seed, epoch, rank))
            tf_rng = random.Random(epoch_seed(cfg.run.seed + 1, epoch, rank))
            augment_rng = random.Random(epoch_seed(cfg.run.seed + 3, epoch, rank))
            fraction = (cfg.data.fast_partial
                        if cfg.data.fast_train and epoch < cfg.data.fast_train_epochs else 1.0)
            max_steps = max(1, math.ceil(data.steps_per_epoch * fraction))
            if t.max_steps_per_epoch:
                max_steps = min(max_steps, t.max_steps_per_epoch)
            beta, tfr = kl_annealing.beta, teacher_forcing.ratio
            lr = optimizer.param_groups[0]["lr"]
            batches = upcoming if upcoming is not None else data.batches(epoch)
            upcoming = None
            if cfg.run.log_clip_ids:
                batches = _record_clip_ids(batches, Path(cfg.run.out) / "clip_ids"
                                           / f"epoch{epoch + 1}_rank{rank}.txt")
            stats = train_epoch(
                wrapped, optimizer, batches, epoch=epoch, beta=beta, tfr=tfr,
                grad_clip=t.grad_clip, device=device, tf_rng=tf_rng,
                augment_rng=augment_rng if t.augment else None, max_steps=max_steps,
                channels_last=t.channels_last, autocast_dtype=autocast_dtype,
                progress=cfg.run.progress and is_main,
                on_step=lambda step, e=epoch: fault.maybe_fail(e, step),
                desc=f"epoch {epoch + 1}/{t.epochs}",
            )
            # Let go of this epoch's iterator before the next one fetches: Ray Data's streaming
            # split gives a new epoch nothing while a consumer still holds the last one.
            batches = None
            if epoch + 1 < t.epochs and cfg.data.prime_next_epoch:
                upcoming = Primed(data.batches(epoch + 1))
            scheduler.step()
            kl_annealing.update()
            teacher_forcing.update()
            metrics: dict[str, Any] = {
                "epoch": epoch + 1, "loss": stats.loss, "mse": stats.mse, "kl": stats.kl,
                "beta": beta, "tfr": tfr, "lr": lr, "seconds": stats.seconds,
            }
            checkpoint_file = None
            if is_main:
                validation = None
                if val_float is not None and (
                    (epoch + 1) % cfg.validation.every == 0 or epoch + 1 == t.epochs
                ):
                    validation = validate(
                        unwrap(wrapped), *val_float,
                        short_len=cfg.validation.short_horizon(cfg.data.clip_len), device=device,
                        seed=cfg.validation.seed,
                    )
                    metrics.update(validation.metrics())
                    if metrics["val_psnr"] > best_psnr:
                        best_psnr, best_epoch = metrics["val_psnr"], epoch + 1
                metrics["seconds"] = round(metrics["seconds"], 3)
                state = {
                    "config": cfg.to_dict(), "epoch": epoch + 1,
                    "model": unwrap(wrapped).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "kl_annealing": kl_annealing.state_dict(),
                    "teacher_forcing": teacher_forcing.state_dict(),
                    "best_val_psnr": best_psnr, "best_epoch": best_epoch,
                    "metrics": {k: v for k, v in metrics.items() if v is not None},
                }
                checkpoint_file = save_checkpoint(state, run.ckpt_dir / "last.pt")
                if validation is not None and best_epoch == epoch + 1:
                    save_checkpoint(state, run.ckpt_dir / "best.pt")
                    run.write_best_validation(validation, epoch + 1)
                if t.per_save and (epoch + 1) % t.per_save == 0:
                    save_checkpoint(state, run.ckpt_dir / f"epoch_{epoch + 1}.pt")
                run.log_epoch(metrics, validation)
                tqdm.write(_epoch_line(metrics, t.epochs))
            last_metrics = metrics
            if report is not None:
                report(metrics, checkpoint_file)
    finally:
        if run is not None:
            run.close()
    return {
        "epochs": t.epochs, "best_val_psnr": best_psnr, "best_epoch": best_epoch,
        "last": last_metrics, "out": str(cfg.run.out),
    }


def _epoch_line(m: dict[str, Any], epochs: int) -> str:
    line = (f"epoch {m['epoch']}/{epochs}  loss {m['loss']:.4f} (mse {m['mse']:.4f}, "
            f"kl {m['kl']:.2f})  beta {m['beta']:.2f}  tfr {m['tfr']:.2f}  {m['seconds']:.0f}s")
    if "val_psnr" in m:
        line += (f"  val_psnr {m['val_psnr']:.2f} (baseline {m['baseline_psnr']:.2f})"
                 f"  short {m['val_psnr_short']:.2f} (baseline {m['baseline_psnr_short']:.2f})"
                 f"  one-step {m['val_psnr_one_step']:.2f} (baseline "
                 f"{m['baseline_psnr_one_step']:.2f})")
    if "val_ssim" in m:
        line += f"  ssim {m['val_ssim']:.3f} (baseline {m['baseline_ssim']:.3f})"
    return line


def _record_clip_ids(batches: Iterable[Batch], path: Path) -> Iterator[Batch]:
    """Pass batches through, writing the clip ids this worker trained on (sharding tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for batch in batches:
            fh.write("".join(f"{int(i)}\n" for i in batch[2]))
            fh.flush()
            yield batch


class _FaultInjector:
    """Test hook: worker `run.fail_rank` exits once at global step `run.fail_at_step`."""

    def __init__(self, cfg: Config, rank: int, steps_per_epoch: int):
        self.armed = cfg.run.fail_at_step >= 0 and rank == cfg.run.fail_rank
        self.step = cfg.run.fail_at_step
        self.per_epoch = steps_per_epoch
        self.marker = Path(cfg.run.out) / ".fault_injected"

    def maybe_fail(self, epoch: int, step: int) -> None:
        if not self.armed or epoch * self.per_epoch + step != self.step:
            return
        if self.marker.exists():
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"epoch {epoch + 1} step {step + 1}\n")
        os._exit(17)  # a hard crash, as a lost worker would be


@contextlib.contextmanager
def torch_threads(threads: int):
    """Set torch's intra-op threads for the block (0 leaves torch's default)."""
    if threads <= 0:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resume_state_for(cfg: Config, resume: bool) -> dict[str, Any] | None:
    """The checkpoint a run continues from (`--resume`), or None for a fresh run.

    A fresh run refuses a folder that already holds one, so nothing is overwritten by accident.
    """
    from cvae.checkpoint import load_checkpoint

    last = Path(cfg.run.out) / "checkpoints" / "last.pt"
    if not resume:
        if last.exists():
            raise CvaeError(f"{cfg.run.out} already holds a run ({last}): pass --resume to "
                            "continue it, or choose another --out")
        return None
    if not last.exists():
        raise CvaeError(f"--resume: {last} not found (nothing to resume in {cfg.run.out})")
    state = load_checkpoint(last)
    _check_same_model(state, cfg, f"--resume: {last}")
    return state


def _check_same_model(state: dict[str, Any], cfg: Config, source: str) -> None:
    stored = state["config"].get("model", {})
    for key, value in cfg.model.__dict__.items():
        if key != "init" and stored.get(key) != value:  # the weights come from the checkpoint
            raise CvaeError(f"{source} has model.{key} = {stored.get(key)!r}, "
                            f"the config has {value!r}")


def initial_weights(cfg: Config) -> dict[str, Any] | None:
    """The model state_dict `train.init_from` names, checked against the config's model; None
    when it names nothing. Launchers call it before starting workers, so a bad path fails early.
    """
    from cvae.checkpoint import load_checkpoint, resolve_checkpoint_path

    if not cfg.train.init_from:
        return None
    try:
        path = resolve_checkpoint_path(cfg.train.init_from)
        state = load_checkpoint(path)
    except CvaeError as err:
        raise CvaeError(f"train.init_from: {err}") from None
    _check_same_model(state, cfg, f"train.init_from: {path}")
    return state["model"]
