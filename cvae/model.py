"""The conditional VAE: frame and pose encoders, a Gaussian posterior, a decoder fusion and a
generator, block for block as the reference architecture (1,585,620 parameters at the default
widths; README, "Where the model comes from").

Shapes: B batch, T frames per clip, F/L/N/D channel widths (frame, label, latent, decoder),
H x W frame size. Every block keeps H x W.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cvae.config import ModelConfig
from cvae.regions import Composite, composite_args


class ResidualBlock(nn.Module):
    """3x3 conv -> LeakyReLU -> 3x3 conv -> LeakyReLU, plus identity or a 1x1 adaptor."""

    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.01):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.act = nn.LeakyReLU(slope)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.act(self.conv2(self.act(self.conv1(x)))) + identity


class DepthConv(nn.Module):
    """1x1 conv -> LeakyReLU -> depthwise 3x3 -> 1x1 conv, plus identity or a 1x1 adaptor."""

    def __init__(self, in_ch: int, out_ch: int, slope: float = 0.01):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_ch, in_ch, 1), nn.LeakyReLU(slope))
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.conv2 = nn.Conv2d(in_ch, out_ch, 1)
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class ConvFFN(nn.Module):
    """Gated 1x1 feed-forward: c -> 4c, a * LeakyReLU(0.1)(b), 2c -> c, plus identity."""

    def __init__(self, ch: int, slope: float = 0.1):
        super().__init__()
        hidden = max(min(ch * 4, 1024), ch * 2)  # the template's width rule (4c for c <= 256)
        self.conv = nn.Conv2d(ch, hidden, 1)
        self.conv_out = nn.Conv2d(hidden // 2, ch, 1)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return x + self.conv_out(a * self.act(b))


class DepthConvBlock(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(DepthConv(in_ch, out_ch), ConvFFN(out_ch))


def frame_encoder(out_ch: int) -> nn.Sequential:
    """RGB frame [*,3,H,W] -> features [*,F,H,W]."""
    return nn.Sequential(
        ResidualBlock(3, out_ch // 8),
        DepthConvBlock(out_ch // 8, out_ch // 8),
        ResidualBlock(out_ch // 8, out_ch // 4),
        DepthConvBlock(out_ch // 4, out_ch // 4),
        ResidualBlock(out_ch // 4, out_ch // 2),
        DepthConvBlock(out_ch // 2, out_ch // 2),
        nn.Conv2d(out_ch // 2, out_ch, 3, padding=1),
    )


def pose_encoder(out_ch: int, in_ch: int = 3) -> nn.Sequential:
    """Pose skeleton image [*,3,H,W] (with model.prev_pose: pose t and pose t-1 stacked,
    [*,6,H,W]) -> features [*,L,H,W]."""
    return nn.Sequential(
        nn.ReflectionPad2d(3),
        nn.Conv2d(in_ch, out_ch // 2, 7),
        nn.BatchNorm2d(out_ch // 2),
        # Negative slope 1.0 makes this LeakyReLU an identity: the reference architecture passes
        # `True` here, kept so that parameter count and outputs match it.
        nn.LeakyReLU(1.0),
        ResidualBlock(out_ch // 2, out_ch),
    )


class Posterior(nn.Sequential):
    """(frame features, pose features) -> z, mu, logvar, each [*,N,H,W] (the Gaussian predictor)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            ResidualBlock(in_ch, out_ch // 4),
            DepthConvBlock(out_ch // 4, out_ch // 4),
            ResidualBlock(out_ch // 4, out_ch // 2),
            DepthConvBlock(out_ch // 2, out_ch // 2),
            ResidualBlock(out_ch // 2, out_ch),
            nn.LeakyReLU(1.0),  # an identity: the reference passes `True` as the slope
            nn.Conv2d(out_ch, out_ch * 2, 1),
        )

    def gaussian(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor):
        """mu, logvar [*,N,H,W] of the Gaussian, without drawing z."""
        return super().forward(torch.cat([frame_feat, pose_feat], dim=1)).chunk(2, dim=1)

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor,
                eps: torch.Tensor | None = None):
        mu, logvar = self.gaussian(frame_feat, pose_feat)
        if eps is None:
            eps = torch.randn_like(mu)
        return reparameterize(mu, logvar, eps), mu, logvar


def reparameterize(mu, logvar, eps):
    """z = mu + std * eps, std = exp(logvar / 2): a draw of N(mu, e^logvar). All [*,N,H,W]."""
    return mu + torch.exp(0.5 * logvar) * eps


def relative_to_prior(mu, logvar, prior_mu, prior_logvar):
    """The posterior N(mu, e^logvar) expressed against the prior N(prior_mu, e^prior_logvar):
    both moved by the same affine map that takes the prior to N(0, I). KL divergence does not
    change under a shared invertible map, so KL(N(mu', e^logvar') || N(0, I)) of the returned
    pair is KL(posterior || prior): the loss's KL term needs no second form. All [*,N,H,W]."""
    return (mu - prior_mu) * torch.exp(-0.5 * prior_logvar), logvar - prior_logvar


class DecoderFusion(nn.Sequential):
    """(prev frame features, pose features, z) [*,F+L+N,H,W] -> [*,D,H,W]; with
    model.first_frame_skip the frame features are the previous frame's and frame 0's, [*,2F,H,W]."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(
            DepthConvBlock(in_ch, in_ch),
            ResidualBlock(in_ch, in_ch // 4),
            DepthConvBlock(in_ch // 4, in_ch // 2),
            ResidualBlock(in_ch // 2, in_ch // 2),
            DepthConvBlock(in_ch // 2, out_ch // 2),
            nn.Conv2d(out_ch // 2, out_ch, 1),
        )

    def forward(self, frame_feat, pose_feat, z):
        return super().forward(torch.cat([frame_feat, pose_feat, z], dim=1))


def generator(in_ch: int, activation: str, out_ch: int = 3) -> nn.Sequential:
    """Decoder features [*,D,H,W] -> RGB frame [*,3,H,W] (plus a mask logit [*,1,H,W] as a 4th
    channel with `out_ch=4`: model.blend_mask)."""
    layers: list[nn.Module] = [
        DepthConvBlock(in_ch, in_ch),
        ResidualBlock(in_ch, in_ch // 2),
        DepthConvBlock(in_ch // 2, in_ch // 2),
        ResidualBlock(in_ch // 2, in_ch // 4),
        DepthConvBlock(in_ch // 4, in_ch // 4),
        ResidualBlock(in_ch // 4, in_ch // 8),
        DepthConvBlock(in_ch // 8, in_ch // 8),
        nn.Conv2d(in_ch // 8, out_ch, 1),
    ]
    if activation == "sigmoid":
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


PARTS = ("frame_encoder", "pose_encoder", "posterior", "decoder_fusion", "generator")
def in_chunks(fn, chunk: int, *tensors: torch.Tensor):
    """fn(*tensors) computed `chunk` items (dim 0) at a time and concatenated; 0: one call.

    Same math either way; on a CPU, chunks of a few frames keep each layer's activations in the
    caches, which the whole folded clip (B*T frames) overflows (BENCHMARKS.md, section 1).
    """
    if chunk <= 0 or tensors[0].shape[0] <= chunk:
        return fn(*tensors)
    outs = [fn(*parts) for parts in zip(*(t.split(chunk) for t in tensors), strict=True)]
    if isinstance(outs[0], tuple):  # an output that is None (no mask) stays None
        return tuple(None if group[0] is None else torch.cat(group)
                     for group in zip(*outs, strict=True))
    return torch.cat(outs)


def stack_steps(values: list, dim: int = 1):
    """Per-step outputs stacked along `dim`: tensors, tuples of tensors (each stacked), or
    None (every step's None: None)."""
    if values[0] is None:
        return None
    if isinstance(values[0], tuple):
        return tuple(torch.stack(group, dim) for group in zip(*values, strict=True))
    return torch.stack(values, dim)


class Prediction(NamedTuple):
    """What CVAE.forward returns for a clip of T frames (S = T-1 predicted steps).

    pred: [B,S,3,H,W] the predictions of frames 1..T-1.
    mu, logvar: [B,S,N,H,W] the posterior's Gaussian; with a learned prior, expressed against
        it (relative_to_prior), so that the KL of (mu, logvar) to N(0, I) is the KL to the
        prior either way.
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
        self.posterior = Posterior(F + L, N)
        self.first_frame_skip = cfg.first_frame_skip
        self.decoder_fusion = DecoderFusion(F * (2 if cfg.first_frame_skip else 1) + L + N, D)
        self.generator = generator(D, cfg.output_activation, 4 if cfg.blend_mask else 3)
        # model.prior=learned: p(z_t | frame t-1, pose t), the posterior's architecture fed the
        # previous frame's features instead of the current one's. None: z ~ N(0, I).
        self.prior = Posterior(F + L, N) if cfg.prior == "learned" else None
        # Frames per chunk of the teacher-forced batched pass (0: the whole clip at once). A
        # speed setting, not architecture: `cvae.training.build_model` sets it from the config.
        self.chunk_frames = 0
        # The per-frame step as torch.compile made it (`compile_frames`), or None: eager.
        self.compiled_frame = None

    def generated_and_mask(self, prev, prev_feat, pose_feat, z):
        """The generator's frame [*,3,H,W] and, with blend_mask, the mask sigmoid(m) [*,1,H,W]
        in [0,1] (else None). prev [*,3,H,W]; features and z [*,C,H,W]."""
        out = self.generator(self.decoder_fusion(prev_feat, pose_feat, z))  # [*,3(+1),H,W]
        mask = None
        if self.blend_mask:
            out, mask = out[:, :3], torch.sigmoid(out[:, 3:])
        return (prev + out if self.predict_change else out), mask

    def _step(self, prev, prev_feat, pose_feat, z, change=None, base=None):
        """One step: (prediction [*,3,H,W], mask [*,1,H,W] or None).

        The mask is the learned one (blend_mask), limited to `change` [*,1,H,W] (pose_region)
        when given. The prediction is mask * generated + (1 - mask) * base, written as base +
        mask * (generated - base): where the mask is closed, `base` (pose_region: see
        Composite; else the previous frame) passes through exactly. Without a mask, the
        prediction is the generated frame.
        """
        generated, mask = self.generated_and_mask(prev, prev_feat, pose_feat, z)
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

        frames, poses: [B,T,3,H,W] in [0,1]; noise: eps [B,T-1,N,H,W] (drawn if None).
        Returns a Prediction: pred [B,T-1,3,H,W], the posterior's mu and logvar
        [B,T-1,N,H,W] and the masks [B,T-1,1,H,W] (or None); see Prediction.

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
        # The pose encoder's BatchNorm sees all S*B poses of the clip as one batch on both
        # paths, which is what makes them equal.
        pose_feat = self.pose_encoder(self.step_poses(poses).flatten(0, 1))  # [B*S,L,H,W]
        if batched:
            feat = in_chunks(self.frame_encoder, k, frames.flatten(0, 1))
            feat = feat.unflatten(0, (B, T))  # [B,T,F,H,W]
            prev_feat, true_feat = feat[:, :-1].flatten(0, 1), feat[:, 1:].flatten(0, 1)
        else:
            # [B*S,F,H,W]
            true_feat = in_chunks(self.frame_encoder, k, frames[:, 1:].flatten(0, 1))
        if noise is None:
            noise = torch.randn(B, S, self.latent_channels, *frames.shape[-2:],
                                device=frames.device, dtype=true_feat.dtype)
        z, mu, logvar = in_chunks(self.posterior, k, true_feat, pose_feat, noise.flatten(0, 1))
        mu, logvar = mu.unflatten(0, (B, S)), logvar.unflatten(0, (B, S))
        if batched:
            pred, mask, prior = self._teacher_forced(frames, prev_feat, pose_feat, z, comp)
        else:
            pred, mask, prior = self._free_run(frames, pose_feat.unflatten(0, (B, S)),
                                               z.unflatten(0, (B, S)), comp, teacher_forced)
        if prior is not None:
            mu, logvar = relative_to_prior(mu, logvar, *prior)
        return Prediction(pred, mu, logvar, mask)

    def _teacher_forced(self, frames, prev_feat, pose_feat, z, comp: Composite | None):
        """Every step at once from the true previous frame, time folded into the batch.

        frames [B,T,3,H,W]; prev_feat [B*S,F,H,W], pose_feat [B*S,L,H,W], z [B*S,N,H,W] ->
        (pred [B,S,3,H,W], mask [B,S,1,H,W] or None, the learned prior's (mu, logvar)
        [B,S,N,H,W] or None).
        """
        B, S, k = frames.shape[0], frames.shape[1] - 1, self.chunk_frames
        prev = frames[:, :-1].flatten(0, 1)  # [B*S,3,H,W]
        extra = [x.flatten(0, 1) for x in composite_args(comp, slice(None), frames[:, :-1])]
        first_feat = None
        if self.first_frame_skip:  # frame 0's features (step 0's prev_feat), for every step
            first_feat = prev_feat.unflatten(0, (B, S))[:, :1].expand(-1, S, -1, -1, -1)
            first_feat = first_feat.flatten(0, 1)  # [B*S,F,H,W]
        fusion_feat = self.fusion_features(prev_feat, first_feat)
        pred, mask = in_chunks(self._step, k, prev, fusion_feat, pose_feat, z, *extra)
        prior = None if self.prior is None else \
            in_chunks(self.prior.gaussian, k, prev_feat, pose_feat)
        fold = lambda x: None if x is None else x.unflatten(0, (B, S))
        return fold(pred), fold(mask), None if prior is None else tuple(map(fold, prior))

    def _free_run(self, frames, pose_feat, z, comp: Composite | None, teacher_forced: bool):
        """The per-frame loop: each step from the true previous frame (teacher_forced) or from
        the last prediction. frames [B,T,3,H,W], pose_feat [B,S,L,H,W], z [B,S,N,H,W] ->
        (pred [B,S,3,H,W], mask [B,S,1,H,W] or None, the learned prior's (mu, logvar)
        [B,S,N,H,W] at each step, from the frame the step was given, or None without one)."""
        steps = []
        prev = frames[:, 0]
        first_feat = self.first_features(prev)
        for t in range(pose_feat.shape[1]):
            pred, mask, prior = self._next_frame(prev, pose_feat[:, t], comp, t, z=z[:, t],
                                                 first_feat=first_feat)
            steps.append((pred, mask, prior))
            # Fed back as a rollout feeds it (generate): clamped to the image range, so a
            # prediction that overshoots cannot compound (with predict_change it would).
            prev = frames[:, t + 1] if teacher_forced else pred.clamp(0.0, 1.0)
        preds, masks, priors = zip(*steps, strict=True)
        return stack_steps(preds), stack_steps(masks), stack_steps(priors)

    def _next_frame(self, prev, pose_feat, comp: Composite | None, t: int, *,
                    z: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                    first_feat: torch.Tensor | None = None):
        """One step of the per-frame loop (training's free run, and the rollout): predict the
        frame after `prev`.

        prev [B,3,H,W] the frame the step is given; pose_feat [B,L,H,W] the pose features of
        the frame to predict; comp the pose_region plan, t the step (0: predicting frame 1).
        z [B,N,H,W] (the posterior's draw, in training) or eps [B,N,H,W] (a rollout's draw of
        N(0, I), then z = eps, or z = mu + std * eps from the learned prior); first_feat
        [B,F,H,W] frame 0's features (model.first_frame_skip) or None.
        Returns (pred [B,3,H,W], not clamped; mask [B,1,H,W] or None; the learned prior's
        (mu, logvar) [B,N,H,W] given prev, or None without one).
        """
        frame = self.compiled_frame or self._frame
        return frame(prev, pose_feat, z, eps, first_feat, *composite_args(comp, t, prev))

    def _frame(self, prev, pose_feat, z, eps, first_feat, change=None, base=None):
        """`_next_frame` on tensors alone (change, base: pose_region's, of this step), so that
        torch.compile makes one graph of it whatever the step."""
        prev_feat = self.frame_encoder(prev)  # [B,F,H,W]
        prior = None if self.prior is None else self.prior.gaussian(prev_feat, pose_feat)
        if z is None:
            z = eps if prior is None else reparameterize(*prior, eps)
        pred, mask = self._step(prev, self.fusion_features(prev_feat, first_feat), pose_feat, z,
                                change, base)
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

        noise: eps [B,T-1,N,H,W], all the rollout's draws of N(0, I), moved to first_frame's
        device and dtype at once. Without it, eps is drawn frame by frame ([B,N,H,W] each) from
        `rng` (on rng's device; the global CPU generator if None) and copied over per frame.
        """
        B, T, _, H, W = poses.shape
        if noise is not None and rng is not None:
            raise ValueError("generate: pass the noise or an rng to draw it from, not both")
        noise = None if noise is None else noise.to(first_frame)  # one copy
        comp = self.composite(first_frame, poses)
        first_feat = self.first_features(first_frame)
        frames = [first_frame]
        prev = first_frame
        for t in range(1, T):
            # [B,L,H,W]
            pose_feat = self.pose_encoder(self.step_poses(poses[:, t - 1:t + 1])[:, 0])
            eps = noise[:, t - 1] if noise is not None else torch.randn(
                B, self.latent_channels, H, W, generator=rng,
                device="cpu" if rng is None else rng.device).to(first_frame)
            prev = self._next_frame(prev, pose_feat, comp, t - 1, eps=eps,
                                    first_feat=first_feat)[0].clamp(0.0, 1.0)
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
    everywhere).
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
            head.weight[3:].zero_()
            head.bias[3:].fill_(model.mask_init_logit)


def parameter_table(model: CVAE) -> list[tuple[str, int]]:
    """(part, parameter count) for the five parts (and the learned prior), then ("total", n)."""
    parts = PARTS + (() if model.prior is None else ("prior",))
    rows = [(name, sum(p.numel() for p in getattr(model, name).parameters())) for name in parts]
    rows.append(("total", sum(p.numel() for p in model.parameters())))
    return rows


def unwrap(model: nn.Module) -> CVAE:
    """The CVAE inside a DDP (or other `.module`) wrapper."""
    return getattr(model, "module", model)
