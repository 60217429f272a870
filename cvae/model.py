"""The conditional VAE: frame and pose encoders, a Gaussian posterior, a decoder fusion and a
generator (their blocks: cvae.blocks), block for block as the reference architecture (1,585,620
parameters at the default widths; README, "Where the model comes from").

Shapes: B batch, T frames per clip, F/L/N/D channel widths (frame, label, latent, decoder),
H x W frame size. Every block keeps H x W.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F_nn
from torch import nn

from cvae.appearance import FirstFrameAttention, FirstFrameLook
from cvae.blocks import (
    ConvFFN,
    DecoderFusion,
    DepthConv,
    Posterior,
    ResidualBlock,
    frame_encoder,
    generator,
    latent_grid,
    pose_encoder,
    relative_to_prior,
    reparameterize,
)
from cvae.config import ModelConfig
from cvae.posed import POSED_CHANNELS, paint, paint_steps
from cvae.regions import Composite, composite_args
from cvae.steps import in_chunks, stack_steps

PARTS = ("frame_encoder", "pose_encoder", "posterior", "decoder_fusion", "generator")


class Prediction(NamedTuple):
    """What CVAE.forward returns for a clip of T frames (S = T-1 predicted steps).

    pred: [B,S,3,H,W] the predictions of frames 1..T-1.
    mu, logvar: [B,S,N,h,w] the posterior's Gaussian (h x w: CVAE.latent_shape); with a
        learned prior, expressed against it (relative_to_prior), so that the KL of (mu, logvar)
        to N(0, I) is the KL to the prior either way.
    mask: [B,S,1,H,W] in [0,1], where each step replaced its base by the generated frame: the
        learned mask (model.blend_mask), limited to the change area with model.pose_region (the
        change area alone without blend_mask); None when the model has neither.
    """

    pred: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    mask: torch.Tensor | None = None


class CVAE(nn.Module):
    """Predicts frame t from frame t-1 (true or predicted), pose t and z."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        F, L = cfg.frame_channels, cfg.label_channels
        N, D = cfg.latent_channels, cfg.decoder_channels
        self.latent_channels = N
        self.predict_change = cfg.predict_change
        self.blend_mask = cfg.blend_mask
        self.mask_init_logit = cfg.blend_mask_init
        self.region_radius, self.hidden_fill = cfg.pose_region, cfg.hidden_fill
        self.frame_encoder = frame_encoder(F)
        self.prev_pose = cfg.prev_pose
        self.pose_encoder = pose_encoder(L, 6 if cfg.prev_pose else 3)
        self.posterior = Posterior(F + L, N, cfg.latent_cell)
        self.first_frame_skip = cfg.first_frame_skip
        self.first_frame_posed, self.posed_base = cfg.first_frame_posed, cfg.posed_base
        first_ch = F * cfg.first_frame_skip + POSED_CHANNELS * cfg.first_frame_posed
        self.decoder_fusion = DecoderFusion(F + first_ch + L + N, D)
        # model.first_frame_attend: frame 0's features moved into the dancer's area now.
        self.attention = FirstFrameAttention(L) if cfg.first_frame_attend else None
        self.posed_gate = cfg.posed_gate
        # RGB, then blend_mask's mask logit, then posed_gate's gate logit (those that are on).
        self.generator = generator(D, cfg.output_activation, 3 + cfg.blend_mask + cfg.posed_gate)
        # model.prior=learned: p(z_t | frame t-1, pose t), the posterior's architecture fed the
        # previous frame's features instead of the current one's. None: z ~ N(0, I).
        self.prior = Posterior(F + L, N, cfg.latent_cell) if cfg.prior == "learned" else None
        # Frames per chunk of the teacher-forced batched pass (0: the whole clip at once). A
        # speed setting, not architecture: `cvae.training.build_model` sets it from the config.
        self.chunk_frames = 0
        # The per-frame step as torch.compile made it (`compile_frames`), or None: eager.
        self.compiled_frame = None

    @property
    def latent_cell(self) -> int:
        """model.latent_cell, as the posterior pools by it."""
        return self.posterior.cell

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """z's shape (N, h, w) for frames of height x width (model.latent_cell)."""
        return self.latent_channels, *latent_grid(self.latent_cell, height, width)

    def generated_and_mask(self, prev, prev_feat, pose_feat, z, base=None, posed=None):
        """The generator's frame [*,3,H,W] and, with blend_mask, the mask sigmoid(m) [*,1,H,W]
        in [0,1] (else None). prev [*,3,H,W]; features [*,C,H,W]; z [*,N,h,w], each value
        spread over its cell's pixels; base, posed: what `change_reference` takes."""
        if z.shape[-2:] != prev.shape[-2:]:
            z = F_nn.interpolate(z, size=prev.shape[-2:], mode="nearest")  # [*,N,H,W]
        out = self.generator(self.decoder_fusion(prev_feat, pose_feat, z))  # [*,3(+2),H,W]
        mask = torch.sigmoid(out[:, 3:4]) if self.blend_mask else None
        gate = torch.sigmoid(out[:, -1:]) if self.posed_gate else None
        if not self.predict_change:
            return out[:, :3], mask
        return self.change_reference(prev, base, posed, gate) + out[:, :3], mask

    @staticmethod
    def change_reference(prev, base=None, posed=None, gate=None):
        """What predict_change's change is added to [*,3,H,W]: the previous frame prev, or with
        model.posed_base the painting: frame 0's colours where the step's pose was painted
        (posed [*,4,H,W], cvae.posed) and elsewhere what the step keeps (`base`, pose_region's;
        else prev). With model.posed_gate, prev moved towards that painting by the learned
        gate [*,1,H,W] in [0,1] (0: prev, as without posed_base; 1: the painting)."""
        if posed is None:
            return prev
        keep = prev if base is None else base
        painting = torch.where(posed[:, 3:] > 0, posed[:, :3].to(keep.dtype), keep)
        return painting if gate is None else prev + gate * (painting - prev)

    def _step(self, prev, prev_feat, pose_feat, z, change=None, base=None, posed=None):
        """One step: (prediction [*,3,H,W], mask [*,1,H,W] or None).

        The mask is the learned one (blend_mask), limited to `change` [*,1,H,W] (pose_region)
        when given. The prediction is mask * generated + (1 - mask) * base, written as base +
        mask * (generated - base): where the mask is closed, `base` (pose_region: see
        Composite; else the previous frame) passes through exactly. Without a mask, the
        prediction is the generated frame. posed [*,4,H,W]: model.posed_base's painted pose
        (change_reference), or None.
        """
        generated, mask = self.generated_and_mask(prev, prev_feat, pose_feat, z, base, posed)
        if change is not None:
            mask = change if mask is None else mask * change
        if mask is None:
            return generated, None
        base = prev if base is None else base
        return base + mask * (generated - base), mask

    def first_features(self, first: torch.Tensor) -> torch.Tensor | None:
        """Frame 0's features [B,F,H,W] for model.first_frame_skip (None when off)."""
        return self.frame_encoder(first) if self.first_frame_skip else None

    @staticmethod
    def fusion_features(prev_feat: torch.Tensor, first_feat: torch.Tensor | None) -> torch.Tensor:
        """The frame features the decoder fusion takes: the previous frame's [*,F,H,W], and
        frame 0's beside them ([*,2F,H,W]) with model.first_frame_skip. The previous frame's
        come first: init_copy_last's identity path keeps the leading channels."""
        return prev_feat if first_feat is None else torch.cat([prev_feat, first_feat], dim=1)

    def posed_steps(self, first: torch.Tensor, poses: torch.Tensor) -> torch.Tensor | None:
        """model.first_frame_posed: frame 0's colours on each step's pose (cvae.posed), first
        [B,3,H,W], poses [B,T,3,H,W] -> [B,T-1,4,H,W]; None when off."""
        return paint_steps(first, poses) if self.first_frame_posed else None

    @staticmethod
    def with_posed(first_feat: torch.Tensor | None, posed: torch.Tensor | None):
        """The frame-0 input of a step's decoder: frame 0's features [*,F,H,W] (first_frame_skip)
        and its colours on the step's pose [*,4,H,W] (first_frame_posed), whichever are on,
        side by side; None when neither is."""
        if posed is None or first_feat is None:
            return first_feat if posed is None else posed
        return torch.cat([first_feat, posed.to(first_feat.dtype)], dim=1)

    def first_look(self, pose0_feat, first_feat, comp: Composite | None) -> FirstFrameLook | None:
        """model.first_frame_attend's keys and values (None when off): pose0_feat [B,L,H,W],
        first_feat [B,F,H,W] frame 0's features."""
        if self.attention is None:
            return None
        return self.attention.look(pose0_feat, first_feat, comp.first_area)

    def step_first_features(self, first_feat, look: FirstFrameLook | None, pose_feat,
                            change) -> torch.Tensor | None:
        """The frame-0 features a step's decoder sees [M,F,H,W]: first_feat itself, or with
        model.first_frame_attend frame 0's dancer moved into the step's dancer area `change`
        [M,1,H,W] by attention from pose_feat [M,L,H,W] (cvae.appearance)."""
        if look is None:
            return first_feat
        return self.attention(pose_feat, first_feat, change, look)

    def first_pose(self, poses: torch.Tensor) -> torch.Tensor:
        """The pose encoder's input for pose 0: [B,T,3,H,W] -> [B,1,3,H,W] (model.prev_pose:
        [B,1,6,H,W], pose 0 beside itself: the dancer stood still)."""
        first = poses[:, :1]
        return torch.cat([first, first], dim=2) if self.prev_pose else first

    def encode_poses(self, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """poses [B,T,3,H,W] -> the pose features of steps 1..T-1 [B*S,L,H,W] and, with
        model.first_frame_attend, pose 0's [B,L,H,W] (else None). One pass: the BatchNorm
        sees every pose of the clip as one batch, on the batched and the per-frame path alike."""
        steps = self.step_poses(poses)  # [B,S,C,H,W]
        if self.attention is None:
            return self.pose_encoder(steps.flatten(0, 1)), None
        both = torch.cat([self.first_pose(poses), steps], dim=1)  # [B,T,C,H,W]
        feat = self.pose_encoder(both.flatten(0, 1)).unflatten(0, both.shape[:2])
        return feat[:, 1:].flatten(0, 1), feat[:, 0]

    def step_poses(self, poses: torch.Tensor) -> torch.Tensor:
        """The pose encoder's input for steps 1..T-1: poses [B,T,3,H,W] -> [B,T-1,3,H,W], pose t
        (with model.prev_pose [B,T-1,6,H,W]: pose t, then pose t-1)."""
        if not self.prev_pose:
            return poses[:, 1:]
        return torch.cat([poses[:, 1:], poses[:, :-1]], dim=2)

    def composite(self, first: torch.Tensor, poses: torch.Tensor) -> Composite | None:
        """first [B,3,H,W], poses [B,T,3,H,W] -> the pose_region plan (None when off). Out of
        training a step from a true previous frame keeps the room it shows; in training it keeps
        what a rollout's step keeps (the surround fill: Composite), so teacher forcing teaches
        the steps a rollout will take."""
        if not self.region_radius:
            return None
        return Composite.plan(first, poses, self.region_radius, self.hidden_fill,
                              keep_room=not self.training)

    def forward(self, frames: torch.Tensor, poses: torch.Tensor, teacher_forced: bool,
                noise: torch.Tensor | None = None, stepwise: bool = False) -> Prediction:
        """Predict frames 1..T-1 of a clip.

        frames, poses: [B,T,3,H,W] in [0,1]; noise: eps [B,T-1,N,h,w] (drawn if None; h x w:
        latent_shape). Returns a Prediction: pred [B,T-1,3,H,W], the posterior's mu and logvar
        [B,T-1,N,h,w] and the masks [B,T-1,1,H,W] (or None); see Prediction.

        Teacher-forced clips run as one batched pass (time folded into the batch): every input
        is ground truth, so each frame is encoded once. Free-running clips batch everything that
        does not depend on a prediction (pose features, the posterior on true frames) and step
        only the previous-frame encoder, fusion and generator. `stepwise=True` forces the
        per-frame loop (the reference the batched path is tested against).
        """
        B, T = frames.shape[:2]
        S = T - 1  # predicted steps
        k = self.chunk_frames
        batched = teacher_forced and not stepwise
        comp = self.composite(frames[:, 0], poses)
        posed = self.posed_steps(frames[:, 0], poses)  # [B,S,4,H,W] or None
        # The pose encoder's BatchNorm sees all S*B poses of the clip as one batch on both
        # paths, which is what makes them equal.
        pose_feat, pose0_feat = self.encode_poses(poses)  # [B*S,L,H,W], [B,L,H,W] or None
        if batched:
            feat = in_chunks(self.frame_encoder, k, frames.flatten(0, 1))
            feat = feat.unflatten(0, (B, T))  # [B,T,F,H,W]
            prev_feat, true_feat = feat[:, :-1].flatten(0, 1), feat[:, 1:].flatten(0, 1)
        else:
            # [B*S,F,H,W]
            true_feat = in_chunks(self.frame_encoder, k, frames[:, 1:].flatten(0, 1))
        if noise is None:
            noise = torch.randn(B, S, *self.latent_shape(*frames.shape[-2:]),
                                device=frames.device, dtype=true_feat.dtype)
        z, mu, logvar = in_chunks(self.posterior, k, true_feat, pose_feat, noise.flatten(0, 1))
        mu, logvar = mu.unflatten(0, (B, S)), logvar.unflatten(0, (B, S))
        if batched:
            pred, mask, prior = self._teacher_forced(frames, prev_feat, pose_feat, z, comp,
                                                     pose0_feat, posed)
        else:
            pred, mask, prior = self._free_run(frames, pose_feat.unflatten(0, (B, S)),
                                               z.unflatten(0, (B, S)), comp, teacher_forced,
                                               pose0_feat, posed)
        if prior is not None:
            mu, logvar = relative_to_prior(mu, logvar, *prior)
        return Prediction(pred, mu, logvar, mask)

    def _teacher_forced(self, frames, prev_feat, pose_feat, z, comp: Composite | None,
                        pose0_feat=None, posed=None):
        """Every step at once from the true previous frame, time folded into the batch.

        frames [B,T,3,H,W]; prev_feat [B*S,F,H,W], pose_feat [B*S,L,H,W], z [B*S,N,h,w],
        pose0_feat [B,L,H,W] (model.first_frame_attend) or None, posed [B,S,4,H,W]
        (model.first_frame_posed) or None ->
        (pred [B,S,3,H,W], mask [B,S,1,H,W] or None, the learned prior's (mu, logvar)
        [B,S,N,h,w] or None).
        """
        B, S, k = frames.shape[0], frames.shape[1] - 1, self.chunk_frames
        prev = frames[:, :-1].flatten(0, 1)  # [B*S,3,H,W]
        extra = [x.flatten(0, 1) for x in composite_args(comp, slice(None), frames[:, :-1])]
        if self.posed_base:  # [B*S,4,H,W] after change and base (None without pose_region)
            extra = [*(extra or (None, None)), posed.flatten(0, 1)]
        first_feat = None
        if self.first_frame_skip:  # frame 0's features (step 0's prev_feat), for every step
            first = prev_feat.unflatten(0, (B, S))[:, 0]  # [B,F,H,W]
            first_feat = first[:, None].expand(-1, S, -1, -1, -1).flatten(0, 1)  # [B*S,F,H,W]
            look = self.first_look(pose0_feat, first, comp)
            first_feat = self.step_first_features(
                first_feat, None if look is None else look.per_step(S), pose_feat,
                None if comp is None else comp.change.flatten(0, 1))
        first_feat = self.with_posed(first_feat, None if posed is None else posed.flatten(0, 1))
        fusion_feat = self.fusion_features(prev_feat, first_feat)
        pred, mask = in_chunks(self._step, k, prev, fusion_feat, pose_feat, z, *extra)
        prior = None if self.prior is None else \
            in_chunks(self.prior.gaussian, k, prev_feat, pose_feat)
        fold = lambda x: None if x is None else x.unflatten(0, (B, S))
        return fold(pred), fold(mask), None if prior is None else tuple(map(fold, prior))

    def _free_run(self, frames, pose_feat, z, comp: Composite | None, teacher_forced: bool,
                  pose0_feat=None, posed=None):
        """The per-frame loop: each step from the true previous frame (teacher_forced) or from
        the last prediction. frames [B,T,3,H,W], pose_feat [B,S,L,H,W], z [B,S,N,h,w],
        pose0_feat [B,L,H,W] (model.first_frame_attend) or None, posed [B,S,4,H,W]
        (model.first_frame_posed) or None ->
        (pred [B,S,3,H,W], mask [B,S,1,H,W] or None, the learned prior's (mu, logvar)
        [B,S,N,h,w] at each step, from the frame the step was given, or None without one)."""
        steps = []
        prev = frames[:, 0]
        first_feat = self.first_features(prev)
        look = self.first_look(pose0_feat, first_feat, comp)
        for t in range(pose_feat.shape[1]):
            step_first = self.step_first_features(first_feat, look, pose_feat[:, t],
                                                  None if comp is None else comp.change[:, t])
            pred, mask, prior = self._next_frame(prev, pose_feat[:, t], comp, t, z=z[:, t],
                                                 first_feat=step_first,
                                                 posed=None if posed is None else posed[:, t])
            steps.append((pred, mask, prior))
            # Fed back as a rollout feeds it (generate): clamped to the image range, so a
            # prediction that overshoots cannot compound (with predict_change it would).
            prev = frames[:, t + 1] if teacher_forced else pred.clamp(0.0, 1.0)
        preds, masks, priors = zip(*steps, strict=True)
        return stack_steps(preds), stack_steps(masks), stack_steps(priors)

    def _next_frame(self, prev, pose_feat, comp: Composite | None, t: int, *,
                    z: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                    first_feat: torch.Tensor | None = None,
                    posed: torch.Tensor | None = None):
        """One step of the per-frame loop (training's free run, and the rollout): predict the
        frame after `prev`.

        prev [B,3,H,W] the frame the step is given; pose_feat [B,L,H,W] the pose features of
        the frame to predict; comp the pose_region plan, t the step (0: predicting frame 1).
        z [B,N,h,w] (the posterior's draw, in training) or eps [B,N,h,w] (a rollout's draw of
        N(0, I), then z = eps, or z = mu + std * eps from the learned prior); first_feat
        [B,F,H,W] frame 0's features (model.first_frame_skip) or None; posed [B,4,H,W] frame 0's
        colours on this step's pose (model.first_frame_posed) or None.
        Returns (pred [B,3,H,W], not clamped; mask [B,1,H,W] or None; the learned prior's
        (mu, logvar) [B,N,h,w] given prev, or None without one).
        """
        frame = self.compiled_frame or self._frame
        change, base = composite_args(comp, t, prev) or (None, None)
        return frame(prev, pose_feat, z, eps, self.with_posed(first_feat, posed), change, base,
                     posed if self.posed_base else None)

    def _frame(self, prev, pose_feat, z, eps, first_feat, change=None, base=None, posed=None):
        """`_next_frame` on tensors alone (change, base: pose_region's, of this step; posed:
        model.posed_base's painted pose), so that torch.compile makes one graph of it whatever
        the step."""
        prev_feat = self.frame_encoder(prev)  # [B,F,H,W]
        prior = None if self.prior is None else self.prior.gaussian(prev_feat, pose_feat)
        if z is None:
            z = eps if prior is None else reparameterize(*prior, eps)
        pred, mask = self._step(prev, self.fusion_features(prev_feat, first_feat), pose_feat, z,
                                change, base, posed)
        return pred, mask, prior

    def compile_frames(self) -> None:
        """torch.compile the per-frame step of free-running training and of rollouts (run.compile):
        a generated frame is ~170 small operations, launch-bound on a GPU; compiled, it is a few
        fused kernels. Shapes are static (one graph per batch size and mode, compiled at first
        sight); the numbers match eager's to float rounding."""
        self.compiled_frame = torch.compile(self._frame, dynamic=False)

    @torch.no_grad()
    def generate(self, first_frame: torch.Tensor, poses: torch.Tensor,
                 rng: torch.Generator | None = None, progress=None,
                 noise: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive rollout with z drawn from the prior (N(0, I), or the learned one).

        first_frame [B,3,H,W], poses [B,T,3,H,W] -> frames [B,T,3,H,W] (frame 0 = first_frame).
        Predictions are clamped to [0,1] before being fed back: they are images, and a long
        rollout otherwise drifts out of range.

        noise: eps [B,T-1,N,h,w] (h x w: latent_shape), all the rollout's draws of N(0, I),
        moved to first_frame's device and dtype at once. Without it, eps is drawn frame by frame
        ([B,N,h,w] each) from `rng` (on rng's device; the global CPU generator if None) and
        copied over per frame.
        """
        B, T, _, H, W = poses.shape
        if noise is not None and rng is not None:
            raise ValueError("generate: pass the noise or an rng to draw it from, not both")
        noise = None if noise is None else noise.to(first_frame)  # one copy
        comp = self.composite(first_frame, poses)
        first_feat = self.first_features(first_frame)
        look = None if self.attention is None else self.first_look(
            self.pose_encoder(self.first_pose(poses)[:, 0]), first_feat, comp)
        frames = [first_frame]
        prev = first_frame
        for t in range(1, T):
            # [B,L,H,W]
            pose_feat = self.pose_encoder(self.step_poses(poses[:, t - 1:t + 1])[:, 0])
            eps = noise[:, t - 1] if noise is not None else torch.randn(
                B, *self.latent_shape(H, W), generator=rng,
                device="cpu" if rng is None else rng.device).to(first_frame)
            step_first = self.step_first_features(first_feat, look, pose_feat,
                                                  None if comp is None else comp.change[:, t - 1])
            posed = paint(first_frame, poses[:, 0], poses[:, t]) if self.first_frame_posed \
                else None  # [B,4,H,W]
            prev = self._next_frame(prev, pose_feat, comp, t - 1, eps=eps, first_feat=step_first,
                                    posed=posed)[0].clamp(0.0, 1.0)
            frames.append(prev)
            if progress is not None:
                progress.update(B)
        return torch.stack(frames, 1)


def init_copy_last(model: CVAE) -> None:
    """Start the model as the copy-the-last-frame predictor, with the posterior at the prior.

    The last layer of every residual branch and the posterior's head (and the learned prior's)
    start at zero, so each block is its skip path and mu = logvar = 0 (KL 0). The skip path
    itself (the 1x1 adaptors and the frame encoder's, decoder fusion's and generator's last
    convolutions) starts as the identity on the channels it keeps (dirac), and the channels
    that carry the previous frame come first at every narrowing: the untrained model predicts
    the previous frame exactly. Training then learns the change from the pose, from a stable
    rollout on. With PyTorch's default init (`model.init=torch`) the chained adaptors damp the
    previous frame ~1e6x on its way to the prediction, which starts constant and stays there
    for hundreds of steps. Branch internals keep PyTorch's defaults; architecture and parameter
    count are unchanged. With `predict_change` the generator's last convolution starts at zero
    instead: no change. With `blend_mask` the mask channel's weights start at zero and its bias
    at `blend_mask_init` (e.g. -4: the mask starts almost closed, sigmoid(-4) = 0.018,
    everywhere). With `posed_base` the (zero) change is added to the painted pose instead of
    the previous frame (CVAE.change_reference): the untrained model predicts frame 0's colours
    on the skeleton pixels it could paint and the previous frame (pose_region: what the step
    keeps) elsewhere; with `posed_gate` (its gate logit starts at 0 with the rest of the
    head) halfway between that and the previous frame.
    """
    head = model.generator[-1] if isinstance(model.generator[-1], nn.Conv2d) \
        else model.generator[-2]
    skip_path = [model.frame_encoder[-1], model.decoder_fusion[-1]]
    zero = [model.posterior[-1]] + ([] if model.prior is None else [model.prior[-1]])
    (zero if model.predict_change else skip_path).append(head)
    for module in model.modules():
        if isinstance(module, (ResidualBlock, DepthConv)):
            zero.append(module.conv2)
            if module.adaptor is not None:
                skip_path.append(module.adaptor)
        elif isinstance(module, ConvFFN):
            zero.append(module.conv_out)
    with torch.no_grad():
        for conv in skip_path:
            nn.init.dirac_(conv.weight)
            conv.bias.zero_()
        for conv in zero:
            conv.weight.zero_()
            conv.bias.zero_()
        if model.blend_mask:
            head.weight[3:4].zero_()
            head.bias[3:4].fill_(model.mask_init_logit)


def parameter_table(model: CVAE) -> list[tuple[str, int]]:
    """(part, parameter count) for the five parts (and the learned prior, first_frame_attend's
    attention), then ("total", n)."""
    parts = PARTS + (() if model.prior is None else ("prior",)) \
        + (() if model.attention is None else ("attention",))
    rows = [(name, sum(p.numel() for p in getattr(model, name).parameters())) for name in parts]
    rows.append(("total", sum(p.numel() for p in model.parameters())))
    return rows


def unwrap(model: nn.Module) -> CVAE:
    """The CVAE inside a DDP (or other `.module`) wrapper."""
    return getattr(model, "module", model)
