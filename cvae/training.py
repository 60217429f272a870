"""The training loop, written once and called per worker.

`fit` knows nothing about Ray: the caller passes the device, an `EpochData` (each epoch's batches,
already sharded and shuffled), a `prepare_model` hook (DDP wrapping) and a `report` hook
(ray.train.report). The single-process `cvae-train`, DDP without Ray and the Ray Train workers
run exactly this code. The run folder is `cvae.rundir`; checkpoints, resume and `train.init_from`
are `cvae.checkpoint`.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from cvae.augment import augment
from cvae.batches import Batch, EpochData, epoch_seed
from cvae.checkpoint import load_weights, save_checkpoint
from cvae.config import Config
from cvae.errors import CvaeError
from cvae.evaluate import validate
from cvae.losses import NO_TERMS, LossTerms, clip_loss
from cvae.model import CVAE, init_copy_last, unwrap
from cvae.prefetch import Primed
from cvae.rundir import RunDir, epoch_line
from cvae.schedules import KLAnnealing, TeacherForcing
from cvae.smoothing import SMOOTHED, smoothed_psnr
from cvae.train_state import EpochPlan, TrainingState, moving_average


class TrainingDiverged(CvaeError):
    """The loss or the weights became NaN or infinite; the checkpoints of the last finite epoch
    are kept (nothing is written from non-finite weights)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CvaeError("run.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


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
    if cfg.run.compile:
        model.compile_frames()
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
               autocast_dtype: torch.dtype | None = None,
               terms: LossTerms = NO_TERMS) -> tuple[torch.Tensor, ...]:
    """One clip: forward, the loss (cvae.losses.clip_loss with the run's optional `terms`), one
    backward, grad-norm clip, Adam step.

    frames, poses: float [B,T,3,H,W]. Returns detached (loss, mse, kl).
    """
    device_type = frames.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16,
                        enabled=autocast_dtype is not None):
        out = model(frames, poses, teacher_forced)  # a cvae.model.Prediction
    loss, mse, kl = clip_loss(out.pred, frames[:, 1:], out.mu, out.logvar, beta, terms,
                              out.mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.detach(), mse.detach(), kl.detach()



@dataclass
class StepOptions:
    """How every step of a run executes."""

    device: torch.device
    grad_clip: float = 1.0
    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None  # bf16 autocast (train.precision)
    check_every: int = 20  # train.check_every
    progress: bool = True  # a progress bar per epoch
    terms: LossTerms = NO_TERMS  # the loss's optional terms (train.free_bits, ...)
    # Makes the bar: tqdm's signature (total=, desc=); a Ray worker passes one that renders on
    # the driver's terminal.
    progress_bar: Callable[..., Any] | None = None


@dataclass
class EpochStats:
    loss: float
    mse: float
    kl: float
    steps: int
    clips: int
    seconds: float


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Batch],
                plan: EpochPlan, options: StepOptions, *, tf_rng: random.Random,
                augment_rng: random.Random | None = None,
                average: AveragedModel | None = None) -> EpochStats:
    """Train one epoch. Each clip is teacher-forced with probability `plan.tfr` (a Bernoulli
    draw); with `augment_rng`, clips are augmented (cvae.augment); `average` (train.ema_decay)
    takes in the weights after every step."""
    model.train()
    start = time.perf_counter()
    tally = LossTally(options.device, options.check_every, plan.epoch)
    clips = 0
    bar = _progress_bar(plan, options)
    try:
        # islice: stop before fetching a batch that will not be trained on
        for frames_u8, poses_u8, _ids in itertools.islice(batches, plan.max_steps):
            if augment_rng is not None:
                frames_u8, poses_u8 = augment(frames_u8, poses_u8, augment_rng)
            frames = to_device(frames_u8, options.device, options.channels_last)
            poses = to_device(poses_u8, options.device, options.channels_last)
            tally.add(torch.stack(train_step(
                model, optimizer, frames, poses, beta=plan.beta,
                teacher_forced=tf_rng.random() < plan.tfr, grad_clip=options.grad_clip,
                autocast_dtype=options.autocast_dtype, terms=options.terms,
            )))
            if average is not None:
                average.update_parameters(unwrap(model))
            clips += frames.shape[0]
            bar.update(1)
    finally:
        bar.close()
    if tally.steps == 0:
        raise CvaeError(f"epoch {plan.epoch + 1}: the training data gave no batch")
    mean = tally.means()
    return EpochStats(mean[0], mean[1], mean[2], tally.steps, clips,
                      time.perf_counter() - start)


class LossTally:
    """Each step's (loss, mse, kl) summed where they were computed, and the first step whose
    loss is not finite: the host reads them every `every` steps and at the end of the epoch,
    so a GPU's step loop does not wait for the device at each step."""

    def __init__(self, device: torch.device, every: int, epoch: int):
        self.every, self.epoch, self.steps = every, epoch, 0
        self.sums = torch.zeros(3, dtype=torch.float64, device=device)
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, values: torch.Tensor) -> None:
        """values: (loss, mse, kl) of one step, detached, on the device."""
        values = values.double()
        new = ~torch.isfinite(values[0]) & (self.first_bad < 0)
        self.first_bad = torch.where(new, self.steps, self.first_bad)
        self.bad_loss = torch.where(new, values[0], self.bad_loss)
        self.sums += values
        self.steps += 1
        if self.steps % self.every == 0:
            self.check()

    def check(self) -> None:
        """Raise TrainingDiverged naming the first step with a NaN or infinite loss."""
        bad = int(self.first_bad)  # the host waits for the device here
        if bad >= 0:
            cause = f" (step {bad} may have left NaN weights)" if bad else ""
            raise TrainingDiverged(f"loss is {float(self.bad_loss)} at epoch {self.epoch + 1}, "
                                   f"step {bad + 1}" + cause)

    def means(self) -> list[float]:
        self.check()
        return (self.sums / self.steps).tolist()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(plan: EpochPlan, options: StepOptions):
    desc = (f"epoch {plan.epoch + 1}/{plan.epochs} (beta {plan.beta:.3g}, "
            f"tfr {plan.tfr:.2f})")
    if not options.progress:
        return _NoBar()
    if options.progress_bar is not None:
        return options.progress_bar(total=plan.max_steps, desc=desc)
    return tqdm(total=plan.max_steps, desc=desc, leave=False, dynamic_ncols=True)


def setup(cfg: Config, device: torch.device,
          prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
          resume_state: dict[str, Any] | None = None,
          init_weights: dict[str, Any] | None = None, lr_scale: float = 1.0) -> TrainingState:
    """The model (same initial weights on every worker and every run), Adam, the lr, KL and
    teacher-forcing schedules; restored from `resume_state`, else started from `init_weights`
    (a state_dict the launcher read from `train.init_from`, so no worker reads that path); the
    lr at `lr_scale` times its schedule (cvae.train_state.lr_scale_for)."""
    t = cfg.train
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=t.lr)
    state = TrainingState(
        model, model, optimizer,
        torch.optim.lr_scheduler.MultiStepLR(optimizer, t.lr_milestones, gamma=t.lr_gamma),
        KLAnnealing(t.kl_anneal_type, t.kl_anneal_cycle, t.kl_anneal_ratio, t.kl_weight,
                    t.kl_warmup),
        TeacherForcing(t.tfr, t.tfr_sde, t.tfr_d_step),
    )
    if t.ema_decay:
        state.average = moving_average(model, t.ema_decay)
    if resume_state is not None:
        state.load(resume_state)
    elif init_weights is not None:
        load_weights(model, init_weights, f"train.init_from: {t.init_from}")
    state.rescale_lr(lr_scale)
    if prepare_model is not None:
        state.wrapped = prepare_model(model)
    return state


def autocast_dtype_for(cfg: Config, device: torch.device) -> torch.dtype | None:
    """train.precision on this device: bf16 autocast, or None (fp32)."""
    bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto"
                                             and device.type == "cuda")
    return torch.bfloat16 if bf16 else None


def step_options(cfg: Config, device: torch.device, progress: bool) -> StepOptions:
    return StepOptions(device, grad_clip=cfg.train.grad_clip,
                       channels_last=cfg.train.channels_last,
                       autocast_dtype=autocast_dtype_for(cfg, device),
                       check_every=cfg.train.check_every,
                       progress=progress, terms=LossTerms.from_train(cfg.train))


def run_epoch(state: TrainingState, cfg: Config, batches: Iterable[Batch], plan: EpochPlan,
              options: StepOptions, rank: int) -> EpochStats:
    """Train one epoch with its own seeds (per epoch and rank), so a resumed run replays the
    same teacher-forcing draws, augmentations and z samples. Every rank makes the same
    teacher-forcing draws: a free-running rank is slower, and DDP's allreduce would make the
    teacher-forced ranks wait for it at every step."""
    seed = cfg.run.seed
    torch.manual_seed(epoch_seed(seed, plan.epoch, rank))
    tf_rng = random.Random(epoch_seed(seed + 1, plan.epoch))
    augment_rng = random.Random(epoch_seed(seed + 3, plan.epoch, rank))
    return train_epoch(state.wrapped, state.optimizer, batches, plan, options, tf_rng=tf_rng,
                       augment_rng=augment_rng if cfg.train.augment else None,
                       average=state.average)


def validation_frames(cfg: Config, val_videos: tuple[torch.Tensor, torch.Tensor] | None
                      ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """uint8 (frames, poses) [V,T,3,H,W] -> float in [0,1], capped at validation.val_len."""
    if val_videos is None:
        return None
    n = min(cfg.validation.val_len, val_videos[0].shape[1])
    return val_videos[0][:, :n].float() / 255, val_videos[1][:, :n].float() / 255


def check_finite(model: torch.nn.Module, metrics: dict[str, Any]) -> None:
    """Nothing is written from NaN or infinite weights or figures: a big step can leave the
    weights NaN while its own loss was still finite."""
    epoch = metrics["epoch"]
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise TrainingDiverged(f"the weights are NaN or infinite after the last step of epoch "
                               f"{epoch} (first: {bad})")
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise TrainingDiverged(f"{key} is {value} at epoch {epoch}")


def end_epoch(state: TrainingState, cfg: Config, metrics: dict[str, Any], run: RunDir,
              val: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
              val_threads: int = 0) -> Path:
    """Rank 0 after an epoch: validate, keep the best (by validation.best_by), write the run
    folder, then the checkpoints (a metrics row is written before the checkpoint that claims
    it: a crash between the two leaves a row that --resume drops and redoes, never a checkpoint
    without its row).
    Adds the validation figures to `metrics`; returns last.pt."""
    epoch, epochs = metrics["epoch"], cfg.train.epochs
    check_finite(state.model, metrics)
    validation = None
    if val is not None and (epoch % cfg.validation.every == 0 or epoch == epochs):
        start = time.perf_counter()
        validation = validate(state.served(), *val, device=device, seed=cfg.validation.seed,
                              short_len=cfg.validation.short_horizon(cfg.data.clip_len),
                              threads=val_threads)
        metrics.update(validation.metrics())
        metrics["val_seconds"] = round(time.perf_counter() - start, 3)  # rollout and scores
        check_finite(state.model, metrics)
        metrics[SMOOTHED] = smoothed_psnr(run.rows, metrics["val_psnr"])
        score = float(metrics[cfg.validation.best_by])
        if score > state.best_score:
            state.best_score, state.best_psnr, state.best_epoch = score, metrics["val_psnr"], epoch
    metrics["seconds"] = round(metrics["seconds"], 3)
    checkpoint = state.checkpoint(cfg, epoch, metrics)
    run.log_epoch(metrics, validation)
    last = save_checkpoint(checkpoint, run.ckpt_dir / "last.pt")
    if validation is not None and state.best_epoch == epoch:
        save_checkpoint(checkpoint, run.ckpt_dir / "best.pt")
        run.write_best_validation(validation, epoch)
    if cfg.train.per_save and epoch % cfg.train.per_save == 0:
        save_checkpoint(checkpoint, run.ckpt_dir / f"epoch_{epoch}.pt")
    tqdm.write(epoch_line(metrics, epochs))
    return last


def kept_checkpoint(run: RunDir | None, epoch: int) -> str:
    """What a stopped run keeps: its last finished epoch's last.pt, or nothing."""
    if run is None:
        return "rank 0 keeps the last finite epoch's checkpoints"
    if epoch == 0:
        return "no checkpoint was written"
    return f"kept {run.ckpt_dir / 'last.pt'} (epoch {epoch}, the last finite one)"


def fit(cfg: Config, *, data: EpochData, val_videos: tuple[torch.Tensor, torch.Tensor] | None,
        device: torch.device, rank: int = 0,
        prepare_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        report: Callable[[dict[str, Any], Path | None], None] | None = None,
        resume_state: dict[str, Any] | None = None,
        init_weights: dict[str, Any] | None = None,
        progress_bar: Callable[..., Any] | None = None, world: int = 1,
        lr_scale: float = 1.0, val_threads: int = 0) -> dict[str, Any]:
    """Train `cfg.train.epochs` epochs. Rank 0 validates and writes the run folder.

    val_videos: (frames, poses) uint8 [V,T,3,H,W] (rank 0 only), rolled out together;
    init_weights: the model's state_dict to start from (`train.init_from`, read by the caller);
    world: the DDP workers training now (each epoch's row records it); lr_scale: see
    cvae.train_state.lr_scale_for; val_threads: rank 0's CPU threads while it validates (0: as
    in training).
    Returns a summary dict.
    """
    state = setup(cfg, device, prepare_model, resume_state, init_weights, lr_scale)
    run = RunDir(cfg.run.out, cfg, resume_epoch=state.start_epoch) if rank == 0 else None
    val = validation_frames(cfg, val_videos) if rank == 0 else None
    options = step_options(cfg, device, progress=cfg.run.progress and rank == 0)
    options.progress_bar = progress_bar
    metrics: dict[str, Any] = {}
    upcoming: Primed | None = None  # the next epoch's batches, primed during validation
    done = state.start_epoch  # the last epoch whose checkpoint is written
    try:
        for epoch in range(state.start_epoch, cfg.train.epochs):
            batches = upcoming if upcoming is not None else data.batches(epoch)
            plan = state.plan(cfg, epoch, data.steps_per_epoch)
            stats = run_epoch(state, cfg, batches, plan, options, rank)
            # Let go of this epoch's iterator before the next one fetches: Ray Data's streaming
            # split gives a new epoch nothing while a consumer still holds the last one.
            batches = upcoming = None
            if epoch + 1 < cfg.train.epochs and cfg.data.prime_next_epoch:
                upcoming = Primed(data.batches(epoch + 1))
            state.step_schedules()
            metrics = {"epoch": epoch + 1, "loss": stats.loss, "mse": stats.mse, "kl": stats.kl,
                       "beta": plan.beta, "tfr": plan.tfr, "lr": plan.lr, "workers": world,
                       "seconds": stats.seconds}
            last = (end_epoch(state, cfg, metrics, run, val, device, val_threads)
                    if run is not None else None)
            done = epoch + 1
            if report is not None:
                report(metrics, last)
    except TrainingDiverged as err:
        raise TrainingDiverged(f"training diverged: {err}; stopped, {kept_checkpoint(run, done)} "
                               "(try a lower train.lr)") from None
    finally:
        if run is not None:
            run.close()
    return {"epochs": cfg.train.epochs, "best_val_psnr": state.best_psnr,
            "best_epoch": state.best_epoch, "best_by": cfg.validation.best_by, "last": metrics,
            "out": str(cfg.run.out)}
