"""The CVAE's parts, block for block as the reference architecture: residual and depthwise
blocks, the frame and pose encoders, the Gaussian posterior, the decoder fusion and the
generator (cvae.model puts them together).

Shapes: F/L/N/D channel widths (frame, label, latent, decoder), H x W frame size. Every block
keeps H x W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F_nn
from torch import nn


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
    """(frame features, pose features) -> z, mu, logvar, each [*,N,h,w] (the Gaussian
    predictor): h x w = H x W at `cell` 1, H/cell x W/cell (each value the mean over its cell)
    at a coarser cell, 1 x 1 at 0 (model.latent_cell)."""

    def __init__(self, in_ch: int, out_ch: int, cell: int = 1):
        super().__init__(
            ResidualBlock(in_ch, out_ch // 4),
            DepthConvBlock(out_ch // 4, out_ch // 4),
            ResidualBlock(out_ch // 4, out_ch // 2),
            DepthConvBlock(out_ch // 2, out_ch // 2),
            ResidualBlock(out_ch // 2, out_ch),
            nn.LeakyReLU(1.0),  # an identity: the reference passes `True` as the slope
            nn.Conv2d(out_ch, out_ch * 2, 1),
        )
        self.cell = cell  # model.latent_cell: 1 per pixel, c per c x c pixels, 0 per frame

    def gaussian(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor):
        """mu, logvar [*,N,h,w] of the Gaussian, without drawing z."""
        out = super().forward(torch.cat([frame_feat, pose_feat], dim=1))  # [*,2N,H,W]
        # The head is a 1x1 convolution, so averaging its output over a cell is averaging its
        # input: the cell's features decide its one Gaussian.
        grid = latent_grid(self.cell, *out.shape[-2:])
        if grid != tuple(out.shape[-2:]):
            out = F_nn.adaptive_avg_pool2d(out, grid)
        return out.chunk(2, dim=1)

    def forward(self, frame_feat: torch.Tensor, pose_feat: torch.Tensor,
                eps: torch.Tensor | None = None):
        mu, logvar = self.gaussian(frame_feat, pose_feat)
        if eps is None:
            eps = torch.randn_like(mu)
        return reparameterize(mu, logvar, eps), mu, logvar


def latent_grid(cell: int, height: int, width: int) -> tuple[int, int]:
    """z's h x w for frames of height x width at model.latent_cell `cell` (0: one per frame;
    the config checks that a cell divides the frame)."""
    return (1, 1) if cell == 0 else (height // cell, width // cell)


def reparameterize(mu, logvar, eps):
    """z = mu + std * eps, std = exp(logvar / 2): a draw of N(mu, e^logvar). All [*,N,h,w]."""
    return mu + torch.exp(0.5 * logvar) * eps


def relative_to_prior(mu, logvar, prior_mu, prior_logvar):
    """The posterior N(mu, e^logvar) expressed against the prior N(prior_mu, e^prior_logvar):
    both moved by the same affine map that takes the prior to N(0, I). KL divergence does not
    change under a shared invertible map, so KL(N(mu', e^logvar') || N(0, I)) of the returned
    pair is KL(posterior || prior): the loss's KL term needs no second form. All [*,N,h,w]."""
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
