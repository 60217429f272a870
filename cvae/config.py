"""One typed config for every command: the dataclasses (the single home of the defaults), the
presets and the checks of impossible values. Loading it from YAML with `--set` overrides is
`cvae.config_load` (its functions are named here too).

Resolution order (later wins): dataclass defaults (the reference recipe's values) -> the
preset's values -> the YAML file -> layers a launcher adds (a sweep space's constants) ->
command-line shortcuts (--data, --epochs, ...) -> `--set section.key=value`.
Every problem fails at load time with one line naming the key and the value (ConfigError).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from cvae.errors import ConfigError

KL_ANNEAL_TYPES = ("Monotonic", "Cyclical", "None")
OUTPUT_ACTIVATIONS = ("none", "sigmoid")
INITS = ("copy_last", "torch")
DEVICES = ("auto", "cpu", "cuda")
BEST_BY = ("val_psnr", "val_psnr_avg3", "epoch")  # validation.best_by
PRIORS = ("fixed", "learned")  # model.prior
HIDDEN_FILLS = ("generated", "surround")  # model.hidden_fill
PRECISIONS = ("auto", "bf16", "fp32")  # train.precision


@dataclass
class DataConfig:
    """Where the frames come from and how they are cut into clips."""

    root: str = "data/dance"  # a lab-layout folder or a Parquet pack made by `cvae-data pack`
    height: int = 32  # frames are resized to height x width
    width: int = 64
    clip_len: int = 16  # frames per training clip
    partial: float = 1.0  # fraction of the training clips used per epoch (the first ones)
    fast_train: bool = False  # use only `fast_partial` of the clips for the first epochs
    fast_partial: float = 0.4
    fast_train_epochs: int = 5
    loader_workers: int = 0  # torch DataLoader worker processes (single-process training)
    shuffle: bool = True  # shuffle clips each epoch (reseeded per epoch)
    shuffle_buffer: int = 256  # Ray Data local shuffle buffer, in clips
    prime_next_epoch: bool = True  # fetch the next epoch's first batch while validating
    # A Ray Train worker keeps the decoded training clips (uint8 frames and poses) of a pack up
    # to this size on its device (GPU memory, or RAM on a CPU worker): read once per run, each
    # epoch gathered by index. A larger pack streams from storage every epoch, each worker
    # reading only the Parquet files dealt to it. 0: always stream. (cvae.shares)
    resident_mb: int = 4096


@dataclass
class ModelConfig:
    """Channel widths of the five parts (cvae.model). Set by `preset` unless overridden."""

    preset: str = "lab"
    frame_channels: int = 128  # F: frame encoder output
    label_channels: int = 32  # L: pose encoder output
    latent_channels: int = 12  # N: z channels
    # z's grain: one draw of N channels per latent_cell x latent_cell pixels, shared by the
    # cell's pixels (the posterior's mean and log-variance averaged over the cell). 1: one per
    # pixel (the reference: a 32 x 64 frame's z has 32 x 64 x N elements, enough to pass the
    # whole true frame on); 8: a 4 x 8 grid at 32 x 64; 0: one z for the whole frame. Must
    # divide data.height and data.width. No parameters added.
    latent_cell: int = 1
    decoder_channels: int = 192  # D: decoder fusion output
    output_activation: str = "none"  # "none" (the reference architecture), or "sigmoid"
    # Initial weights: "copy_last" (the untrained model predicts the previous frame and its
    # posterior is the prior; see cvae.model.init_copy_last) or "torch" (PyTorch's defaults,
    # the reference's: the prediction starts constant and sits there for hundreds of steps).
    init: str = "copy_last"
    # The generator's output is the frame (false, the reference) or the change from the previous
    # frame (true: prediction = previous frame + output; no parameters added).
    predict_change: bool = False
    # Blend with the previous frame: the generator emits a 4th channel, a mask logit m, and the
    # prediction is sigmoid(m) * generated + (1 - sigmoid(m)) * previous frame (generated = the
    # frame, or previous frame + change with predict_change). What does not move passes through
    # unchanged where the mask is closed. Adds the mask channel's weights (D/8 + 1 parameters).
    blend_mask: bool = False
    blend_mask_init: float = -4.0  # the mask logit's initial bias (model.init=copy_last)
    # Keep what the dancer does not touch, by construction (poses are skeletons drawn on
    # black): > 0 lets a step change only the pixels within this many pixels of the current
    # pose's skeleton, plus, inside frame 0's dancer, those of the previous pose (background
    # uncovered there is in no given frame). Everywhere else the prediction is frame 0 (the
    # static background) or, inside frame 0's dancer, the previous frame; so the background
    # cannot drift over any rollout. With blend_mask the learned mask acts inside those pixels
    # only. 0: off. No parameters added (cvae.regions.Composite).
    pose_region: int = 0
    # With pose_region, the room behind frame 0's dancer (in no given frame): "generated" (the
    # step that uncovers it paints it, and later steps keep that) or "surround" (filled once,
    # before the first step, with a smooth blend of the room around it; each step then changes
    # only the dancer's area now, so no paint is left behind on its path). No parameters.
    hidden_fill: str = "generated"
    # What z is drawn from when no true frame is given (validation, the Tester) and what the
    # KL term pulls the posterior towards: "fixed" (N(0, I), the reference) or "learned" (a
    # Gaussian predicted from the previous frame's features and the pose, as SVG-LP's learned
    # prior: the posterior may then carry what the previous frame and the pose let the prior
    # foresee, at no KL cost). "learned" adds a network of the posterior's architecture.
    prior: str = "fixed"
    # The pose encoder sees pose t-1 beside pose t (6 input channels instead of 3): where the two
    # agree the dancer stood still, and their difference says which way each limb moved. The
    # reference sees pose t alone (false). Adds 3 x 49 x L/2 weights to the first convolution.
    prev_pose: bool = False
    # The decoder also sees frame 0's features (the given, sharp frame) at every step, beside
    # the previous frame's, as SVG's decoder takes skips from the last observed frame: the
    # dancer's look can be copied from frame 0 instead of carried through t-1 generated frames.
    # The reference has no such input (false). Widens the decoder fusion's input by F channels.
    first_frame_skip: bool = False
    # With first_frame_skip and pose_region: inside the dancer's area now, the frame-0 features
    # the decoder sees are taken by attention from frame 0's dancer, each pixel from where its
    # body part was in frame 0 (queries: the step's pose features; keys: pose 0's), instead of
    # from the same pixel of frame 0, which the dancer has left (cvae.appearance). Adds two
    # 1x1 projections of the pose features (2 x 17 x L weights); the fusion keeps its width.
    first_frame_attend: bool = False
    # The decoder also sees frame 0's colours painted on the pose of the frame to predict: each
    # skeleton pixel takes frame 0's colour where pose 0 has the same limb colour (pose images
    # draw every limb in its own colour), a sharp picture of the dancer in its own look and
    # in the pose it is to take (cvae.posed). Widens the decoder fusion's input by 4 channels.
    first_frame_posed: bool = False
    # With first_frame_posed and predict_change: the change is added to that painting (on the
    # skeleton pixels it could paint; elsewhere to what the step keeps), not to the previous
    # frame, so the dancer's colours come from frame 0 at every step and the generator learns
    # only what the painting gets wrong. No parameters added.
    posed_base: bool = False
    # With posed_base: the change is added to the previous frame moved towards that painting
    # by a learned per-pixel gate in [0, 1] (a 5th generator channel, starting at 1/2): a step
    # given a true frame can keep it, a step given its own blurred prediction can take the
    # painting. Adds the gate channel's weights (D/8 + 1 parameters).
    posed_gate: bool = False


@dataclass
class TrainConfig:
    """Optimisation, teacher forcing and KL annealing (cvae.schedules)."""

    epochs: int = 70
    batch_size: int = 2
    lr: float = 1e-3
    lr_milestones: list[int] = field(default_factory=lambda: [2, 5])
    lr_gamma: float = 0.1
    grad_clip: float = 1.0
    tfr: float = 1.0  # teacher-forcing ratio at the start
    tfr_sde: int = 10  # epoch after which the ratio starts to decay
    tfr_d_step: float = 0.1  # decay per epoch, floored at 0
    kl_anneal_type: str = "Cyclical"
    kl_anneal_cycle: int = 10
    kl_anneal_ratio: float = 1.0
    # The annealed beta's top value: beta = kl_weight x the schedule's 0..1. The loss is the MSE
    # averaged over pixels plus beta x the KL summed over latents, so at 1 (the lab's) one nat
    # costs as much as the whole frame's squared error and the latent stays empty; SVG uses 1e-4
    # with the same reductions.
    kl_weight: float = 1.0
    # Epochs at beta 0 before the KL schedule starts (its epoch 0 is then this one): the decoder
    # learns to read z while nothing pulls the posterior to the prior. 0: off (the lab's).
    kl_warmup: int = 0
    # "Free bits": each predicted frame's KL costs max(KL, free_bits) nats, so below that the
    # posterior is not pulled towards the prior (0: off, the lab's). The latent may then carry
    # up to this many nats per frame at no cost, which the prior cannot give a rollout.
    free_bits: float = 0.0
    # Add edge_weight x the gradient difference loss (cvae.losses.gradient_difference, per
    # predicted frame as the MSE) against the blur the squared error prefers: a step's MSE is
    # ~5e-4 to 1.3e-3 and its gradient difference ~0.008 to 0.014 at the quickstart's recipe,
    # so 0.05 weighs them about alike. 0: off, the lab's loss.
    edge_weight: float = 0.0
    # Keep an exponential moving average of the weights (Polyak averaging; torch's AveragedModel,
    # BatchNorm's statistics averaged alike): after each step avg = ema_decay x avg + (1 -
    # ema_decay) x weights. Validation, best.pt, the Tester and train.init_from take the average;
    # training steps the weights themselves. 0: off (the lab's).
    ema_decay: float = 0.0
    per_save: int = 3  # also keep checkpoints/epoch_<n>.pt every n epochs (0: never)
    max_steps_per_epoch: int = 0  # 0: the whole epoch; >0 caps it (smoke tests, benchmarks)
    # Autocast: "auto" is bf16 on a GPU (its tensor cores; weights and the loss stay fp32) and
    # fp32 on a CPU (no faster there); "bf16" or "fp32" everywhere.
    precision: str = "auto"
    # The loss is checked for NaN/inf every this many steps (and at the end of each epoch), on
    # values kept on the device: a GPU's step loop never waits for the host in between. The
    # step it names is the first non-finite one either way.
    check_every: int = 20
    # channels_last memory format: faster convolutions on CPUs (oneDNN) and on GPUs
    channels_last: bool = True
    # Frames per chunk of the teacher-forced batched pass: -1 auto (4 on a CPU, where chunks
    # that fit the caches run faster; the whole clip on a GPU), 0 the whole clip, k > 0 k frames.
    chunk_frames: int = -1
    # Start from this checkpoint's weights (a .pt file, a run folder or a Ray checkpoint folder);
    # the optimizer, the schedules and the epoch count start fresh: a second training stage,
    # e.g. free-running on longer clips. Ignored by --resume (the run's own checkpoint wins).
    init_from: str = ""
    # Mirror clips and permute their colour channels at random (cvae.augment): more rooms
    # and dancers than the training videos hold.
    augment: bool = False
    # With model.blend_mask: add mask_penalty x the mean mask (summed over the clip's predicted
    # frames, as the MSE is) to the loss, so the mask opens only where opening pays: the static
    # background then keeps passing the previous frame through. 0: no penalty.
    mask_penalty: float = 0.0


@dataclass
class ValidationConfig:
    """The long autoregressive rollout on the validation videos (rolled out as one batch)."""

    val_len: int = 630  # capped by the length of the data's validation videos
    every: int = 1  # validate every n epochs (and always after the last)
    seed: int = 0  # seeds z ~ N(0, I) so epochs are compared on the same noise
    # Predicted frames in val_psnr_short; 0: data.clip_len - 1 (a training clip's). Set it when
    # training on longer clips, so the short figure stays comparable with other runs.
    short_len: int = 0
    # What best.pt (the checkpoint the Tester and train.init_from take) is chosen by, among the
    # validated epochs: val_psnr (the highest single rollout, the lab's choice), val_psnr_avg3
    # (the mean of the epoch's rollout and the two before), or epoch (the last one: the end of
    # the lr schedule, which the validation video does not choose).
    best_by: str = "val_psnr"
    # torch's CPU threads while rank 0 validates: -1, in a Ray run the CPUs reserved for every
    # worker on its node (they wait for it meanwhile; ~1.5x faster with 2 workers on a quiet
    # machine, but two OpenMP threads on cores that other work keeps busy can be several times
    # slower than one), in cvae-train as in training (it has all of torch's threads already);
    # 0, as in training; n > 0, n.
    threads: int = -1

    def short_horizon(self, clip_len: int) -> int:
        """Frames in the short-horizon mean (val_psnr_short)."""
        return self.short_len or clip_len - 1


@dataclass
class TestConfig:
    """The Tester (`cvae-test`)."""

    checkpoint: str = ""
    seq_len: int = 630  # frames per test sequence, frame 0 included
    seed: int = 0
    gif_fps: int = 20
    # Rollouts per held-out sequence, each with its own z from the prior; above 1 the Tester
    # also reports the samples' mean and the best of them (test_samples.csv). Sample 0 is the
    # submitted one. Needs a data set with the true test frames.
    samples: int = 1


@dataclass
class RunConfig:
    """Where a run writes and how it runs."""

    out: str = "runs/train"
    seed: int = 1
    device: str = "auto"  # auto: cuda when available, else cpu
    threads: int = 0  # torch intra-op threads; 0: torch's default
    progress: bool = True  # tqdm bars
    flush_denormal: bool = True  # CPU speed: denormals are ~10x slower and invisible in PSNR
    # cuDNN times every convolution algorithm for each new input shape, once per process. Off:
    # a run here meets ~170-210 convolution shapes (teacher-forced, free-running, the batch-1
    # validation rollout), each timed at first sight: the suspected cause of GPU runs whose
    # first steps stalled for minutes (benchmarks/gpu_check.sh measures it cold and warm).
    cudnn_benchmark: bool = False
    # torch.compile the per-frame step (free-running training, validation and Tester
    # rollouts): fewer, fused kernels per generated frame, paid for by a compile at start-up.
    compile: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    test: TestConfig = field(default_factory=TestConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Config:
        """Build and validate a config from a nested dict (e.g. one stored in a checkpoint)."""
        from cvae.config_load import apply_nested

        cfg = cls()
        apply_nested(cfg, values, source)
        validate(cfg)
        return cfg


# A preset sets these keys; the YAML file and --set can still override any of them.
PRESETS: dict[str, dict[str, Any]] = {
    "lab": {
        "model.frame_channels": 128,
        "model.label_channels": 32,
        "model.latent_channels": 12,
        "model.decoder_channels": 192,
        "data.height": 32,
        "data.width": 64,
        "data.clip_len": 16,
        "validation.val_len": 630,
    },
    # Same architecture, ~16x fewer FLOPs: trains in minutes on a 2-core CPU.
    "small": {
        "model.frame_channels": 32,
        "model.label_channels": 16,
        "model.latent_channels": 8,
        "model.decoder_channels": 48,
        "data.height": 32,
        "data.width": 64,
        "data.clip_len": 16,
        "validation.val_len": 630,
    },
}


def sections(cfg: Config) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def all_keys() -> list[str]:
    """Every settable `section.key`."""
    cfg = Config()
    return [
        f"{name}.{f.name}"
        for name, section in sections(cfg).items()
        for f in dataclasses.fields(section)
    ]


def _check(ok: bool, key: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r}: {why}")


def validate(cfg: Config) -> None:
    """Reject impossible values, naming the key."""
    _check_finite(cfg)
    _validate_data(cfg.data)
    _validate_model(cfg.model)
    _validate_train(cfg.train)
    _validate_run(cfg.validation, cfg.test, cfg.run)
    _check(not (cfg.train.mask_penalty and not cfg.model.blend_mask), "train.mask_penalty",
           cfg.train.mask_penalty, "needs model.blend_mask: true (it penalises the mask)")
    cell, (h, w) = cfg.model.latent_cell, (cfg.data.height, cfg.data.width)
    _check(cell >= 0, "model.latent_cell", cell, "must be >= 0 (0: one z for the whole frame)")
    _check(cell == 0 or (h % cell == 0 and w % cell == 0), "model.latent_cell", cell,
           f"must divide data.height and data.width ({h} x {w}), or be 0")


def _check_finite(cfg: Config) -> None:
    """No float key may be inf or nan (an infinite lr trains to NaN weights)."""
    for name, section in sections(cfg).items():
        for key, value in vars(section).items():
            if isinstance(value, float):
                _check(math.isfinite(value), f"{name}.{key}", value, "must be a finite number")


def _validate_data(d: DataConfig) -> None:
    # The pose encoder reflection-pads by 3, which needs at least 4 pixels per side.
    _check(4 <= d.height <= 2048, "data.height", d.height, "must be between 4 and 2048")
    _check(4 <= d.width <= 2048, "data.width", d.width, "must be between 4 and 2048")
    _check(d.clip_len >= 2, "data.clip_len", d.clip_len, "must be >= 2 (one input, one target)")
    _check(0 < d.partial <= 1, "data.partial", d.partial, "must be in (0, 1]")
    _check(0 < d.fast_partial <= 1, "data.fast_partial", d.fast_partial, "must be in (0, 1]")
    _check(d.fast_train_epochs >= 0, "data.fast_train_epochs", d.fast_train_epochs, "must be >= 0")
    _check(d.loader_workers >= 0, "data.loader_workers", d.loader_workers, "must be >= 0")
    _check(d.shuffle_buffer >= 1, "data.shuffle_buffer", d.shuffle_buffer, "must be >= 1")
    _check(d.resident_mb >= 0, "data.resident_mb", d.resident_mb, "must be >= 0 (0: stream)")


def _validate_model(m: ModelConfig) -> None:
    _check(m.preset in PRESETS, "model.preset", m.preset, f"must be one of {sorted(PRESETS)}")
    # The blocks divide these widths by 8 (F, D), 4 (N) and 2 (L).
    for key, value, multiple in (
        ("model.frame_channels", m.frame_channels, 8),
        ("model.label_channels", m.label_channels, 2),
        ("model.latent_channels", m.latent_channels, 4),
        ("model.decoder_channels", m.decoder_channels, 8),
    ):
        _check(value >= multiple and value % multiple == 0, key, value,
               f"must be a positive multiple of {multiple}")
    fused = m.frame_channels + m.label_channels + m.latent_channels
    _check(
        fused % 4 == 0, "model.label_channels", m.label_channels,
        f"frame + label + latent channels ({fused}) must be a multiple of 4",
    )
    _check(
        m.output_activation in OUTPUT_ACTIVATIONS, "model.output_activation",
        m.output_activation, f"must be one of {list(OUTPUT_ACTIVATIONS)}",
    )
    _check(m.init in INITS, "model.init", m.init, f"must be one of {list(INITS)}")
    _check(not (m.predict_change and m.output_activation != "none"), "model.predict_change",
           m.predict_change, "needs model.output_activation: none (a change can be negative)")
    _check(not (m.blend_mask and m.output_activation != "none"), "model.blend_mask",
           m.blend_mask, "needs model.output_activation: none (the mask has its own sigmoid)")
    _check(0 <= m.pose_region <= 64, "model.pose_region", m.pose_region,
           "must be between 0 (off) and 64 pixels")
    _check(m.prior in PRIORS, "model.prior", m.prior, f"must be one of {list(PRIORS)}")
    _check(m.hidden_fill in HIDDEN_FILLS, "model.hidden_fill", m.hidden_fill,
           f"must be one of {list(HIDDEN_FILLS)}")
    _check(m.hidden_fill == "generated" or m.pose_region > 0, "model.hidden_fill",
           m.hidden_fill, "needs model.pose_region > 0 (it fills frame 0's dancer's area)")
    _check(not m.first_frame_attend or (m.first_frame_skip and m.pose_region > 0),
           "model.first_frame_attend", m.first_frame_attend,
           "needs model.first_frame_skip: true and model.pose_region > 0 (it moves frame 0's "
           "features into the dancer's area)")
    _check(not m.posed_base or (m.first_frame_posed and m.predict_change), "model.posed_base",
           m.posed_base, "needs model.first_frame_posed: true and model.predict_change: true "
           "(the change is added to the painted pose)")
    _check(not m.posed_gate or m.posed_base, "model.posed_gate", m.posed_gate,
           "needs model.posed_base: true (it gates the painting the change is added to)")


def _validate_train(t: TrainConfig) -> None:
    _check(t.epochs >= 1, "train.epochs", t.epochs, "must be >= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
    _check(t.lr > 0, "train.lr", t.lr, "must be > 0")
    _check(
        all(x >= 0 for x in t.lr_milestones) and t.lr_milestones == sorted(t.lr_milestones),
        "train.lr_milestones", t.lr_milestones, "must be non-negative and increasing",
    )
    _check(0 < t.lr_gamma <= 1, "train.lr_gamma", t.lr_gamma, "must be in (0, 1]")
    _check(t.grad_clip > 0, "train.grad_clip", t.grad_clip, "must be > 0")
    _check(0 <= t.tfr <= 1, "train.tfr", t.tfr, "must be in [0, 1]")
    _check(t.tfr_sde >= 0, "train.tfr_sde", t.tfr_sde, "must be >= 0")
    _check(0 <= t.tfr_d_step <= 1, "train.tfr_d_step", t.tfr_d_step, "must be in [0, 1]")
    _check(
        t.kl_anneal_type in KL_ANNEAL_TYPES, "train.kl_anneal_type", t.kl_anneal_type,
        f"must be one of {list(KL_ANNEAL_TYPES)}",
    )
    _check(t.kl_weight >= 0, "train.kl_weight", t.kl_weight, "must be >= 0")
    _check(t.kl_warmup >= 0, "train.kl_warmup", t.kl_warmup, "must be >= 0")
    _check(t.free_bits >= 0, "train.free_bits", t.free_bits, "must be >= 0")
    _check(t.edge_weight >= 0, "train.edge_weight", t.edge_weight, "must be >= 0")
    _check(0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "must be in [0, 1)")
    _check(t.kl_anneal_cycle >= 1, "train.kl_anneal_cycle", t.kl_anneal_cycle, "must be >= 1")
    _check(0 <= t.kl_anneal_ratio <= 1, "train.kl_anneal_ratio", t.kl_anneal_ratio,
           "must be in [0, 1]")
    _check(t.per_save >= 0, "train.per_save", t.per_save, "must be >= 0")
    _check(t.chunk_frames >= -1, "train.chunk_frames", t.chunk_frames,
           "must be -1 (auto), 0 (whole clip) or a number of frames")
    _check(t.mask_penalty >= 0, "train.mask_penalty", t.mask_penalty, "must be >= 0")
    _check(t.max_steps_per_epoch >= 0, "train.max_steps_per_epoch", t.max_steps_per_epoch,
           "must be >= 0")
    _check(t.precision in PRECISIONS, "train.precision", t.precision,
           f"must be one of {list(PRECISIONS)}")
    _check(t.check_every >= 1, "train.check_every", t.check_every, "must be >= 1")


def _validate_run(v: ValidationConfig, te: TestConfig, r: RunConfig) -> None:
    _check(v.val_len >= 2, "validation.val_len", v.val_len, "must be >= 2")
    _check(v.every >= 1, "validation.every", v.every, "must be >= 1")
    _check(v.threads >= -1, "validation.threads", v.threads,
           "must be -1 (the node's waiting workers' cores), 0 (as in training) or a count")
    _check(v.short_len >= 0, "validation.short_len", v.short_len,
           "must be >= 0 (0: data.clip_len - 1)")
    _check(v.best_by in BEST_BY, "validation.best_by", v.best_by, f"must be one of {list(BEST_BY)}")
    _check(te.seq_len >= 1, "test.seq_len", te.seq_len, "must be >= 1")
    _check(te.gif_fps >= 1, "test.gif_fps", te.gif_fps, "must be >= 1")
    _check(te.samples >= 1, "test.samples", te.samples, "must be >= 1")
    _check(r.device in DEVICES, "run.device", r.device, f"must be one of {list(DEVICES)}")
    _check(r.threads >= 0, "run.threads", r.threads, "must be >= 0")
    _check(bool(r.out), "run.out", r.out, "must not be empty")


# The loading side (YAML, --set, types), kept in its own module and named here too.
from cvae.config_load import (  # noqa: E402
    load_config,
    parse_override,
    read_yaml_file,
    set_key,
    to_yaml,
)

__all__ = [
    "Config", "DataConfig", "ModelConfig", "TrainConfig", "ValidationConfig", "TestConfig",
    "RunConfig", "PRESETS", "load_config", "set_key", "validate", "parse_override",
    "all_keys", "to_yaml", "read_yaml_file",
]
