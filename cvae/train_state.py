"""What fit() steps and a checkpoint holds: the model (and the moving average of its weights),
its optimizer and the schedules, with what each epoch trains with (EpochPlan)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cvae.checkpoint import load_weights
from cvae.config import Config
from cvae.model import CVAE
from cvae.schedules import KLAnnealing, TeacherForcing


@dataclass
class EpochPlan:
    """What one epoch trains with: the schedules' values and how many steps."""

    epoch: int  # 0-based
    epochs: int
    beta: float
    tfr: float
    lr: float = 0.0
    max_steps: int | None = None  # None: all the batches


@dataclass
class TrainingState:
    """What fit() steps and a checkpoint holds: the model (and its weights' average), its
    optimizer, the schedules."""

    model: CVAE
    wrapped: torch.nn.Module  # the model as prepare_model returned it (e.g. DDP)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    kl_annealing: KLAnnealing
    teacher_forcing: TeacherForcing
    start_epoch: int = 0
    best_psnr: float = -math.inf  # val_psnr of best_epoch
    best_epoch: int = 0
    best_score: float = -math.inf  # best_epoch's validation.best_by figure
    lr_scale: float = 1.0  # the lr is this times train.lr's schedule (see rescale_lr)
    average: AveragedModel | None = None  # the weights' moving average (train.ema_decay)

    def served(self) -> CVAE:
        """The model validation and checkpoints' "model" give: the average when there is one."""
        return self.model if self.average is None else self.average.module

    def plan(self, cfg: Config, epoch: int, steps_per_epoch: int) -> EpochPlan:
        d, t = cfg.data, cfg.train
        fraction = d.fast_partial if d.fast_train and epoch < d.fast_train_epochs else 1.0
        max_steps = max(1, math.ceil(steps_per_epoch * fraction))
        if t.max_steps_per_epoch:
            max_steps = min(max_steps, t.max_steps_per_epoch)
        return EpochPlan(epoch, t.epochs, self.kl_annealing.beta, self.teacher_forcing.ratio,
                         self.optimizer.param_groups[0]["lr"], max_steps)

    def step_schedules(self) -> None:
        self.scheduler.step()
        self.kl_annealing.update()
        self.teacher_forcing.update()

    def checkpoint(self, cfg: Config, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint of a finished epoch (1-based `epoch`): plain data only."""
        return {
            "config": cfg.to_dict(), "epoch": epoch,
            "model": self.served().state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "kl_annealing": self.kl_annealing.state_dict(),
            "teacher_forcing": self.teacher_forcing.state_dict(),
            "best_val_psnr": self.best_psnr, "best_epoch": self.best_epoch,
            "best_score": self.best_score, "lr_scale": self.lr_scale,
            "metrics": {k: v for k, v in metrics.items() if v is not None},
            **({} if self.average is None else {  # what training steps on from
                "train_model": self.model.state_dict(),
                "ema_updates": int(self.average.n_averaged)}),
        }

    def load(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint (`--resume`, or Ray Train's after a worker failure)."""
        source = f"the checkpoint to resume (epoch {state['epoch']})"
        load_weights(self.model, state.get("train_model", state["model"]), source)
        if self.average is not None and "train_model" in state:
            load_weights(self.average.module, state["model"], source)
            self.average.n_averaged.fill_(int(state["ema_updates"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_annealing.load_state_dict(state["kl_annealing"])
        self.teacher_forcing.load_state_dict(state["teacher_forcing"])
        self.start_epoch = int(state["epoch"])
        self.best_psnr = float(state.get("best_val_psnr", -math.inf))
        self.best_epoch = int(state.get("best_epoch", 0))
        # checkpoints from before validation.best_by chose on val_psnr
        self.best_score = float(state.get("best_score", self.best_psnr))
        self.lr_scale = float(state.get("lr_scale", 1.0))

    def rescale_lr(self, scale: float) -> None:
        """Make the lr `scale` times train.lr's schedule (the optimizer's current lr and the
        scheduler's base, from whatever scale they had): a DDP run with fewer workers than its
        full size trains on a smaller global batch (see lr_scale_for)."""
        change = scale / self.lr_scale
        if change != 1.0:
            for group in self.optimizer.param_groups:
                group["lr"] *= change
            self.scheduler.base_lrs = [lr * change for lr in self.scheduler.base_lrs]
        self.lr_scale = scale


def lr_scale_for(world: int, full_world: int) -> float:
    """The lr factor of a DDP run on `world` of its `full_world` workers: train.lr is the lr of
    the full global batch (full_world x train.batch_size clips); a smaller batch takes
    sqrt(world / full_world) of it, the square-root rule that keeps Adam's updates as noisy per
    clip seen as at full size (a linear rule overshoots for adaptive optimizers)."""
    return math.sqrt(world / full_world) if 0 < world < full_world else 1.0


def moving_average(model: CVAE, decay: float) -> AveragedModel:
    """train.ema_decay's average of `model`'s weights, BatchNorm's running statistics averaged
    alike; its first update copies the weights, wherever they start from."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
