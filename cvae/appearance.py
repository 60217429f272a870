"""model.first_frame_attend: frame 0's look moved to where the pose puts each body part.

The decoder sees frame 0's features beside the previous frame's (model.first_frame_skip), but a
stack of 3x3 convolutions can copy a feature only from nearby pixels: once the dancer has moved
away from where it stood in frame 0, the one sharp picture of it is out of reach, and its look
is carried through the generated frames instead, which blur it step by step. Here each pixel of
the dancer's area now attends to frame 0's dancer: the query is the pose's features there (which
limb, which way it moved), the keys are pose 0's features over frame 0's dancer, the values frame
0's features there. A shirt pixel of pose t then takes the features of frame 0's shirt, wherever
the shirt was. Outside the dancer's area now the frame-0 features stay as they are.

Shapes: B clips, M = B (a step) or B*S (steps folded into the batch), L pose / F frame channels,
D key channels, K = H*W // 4 slots (the dancer's area is ~15% of the frame at 32 x 64).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F_nn
from torch import nn

# Attention weight of a slot that holds no dancer pixel: its logit is pushed this far down (a
# finite number: a frame without a dancer then averages its slots instead of giving NaN).
MASKED_LOGIT = -1e4


class FirstFrameLook(NamedTuple):
    """Frame 0's dancer as keys and values: keys [B,K,D], values [B,K,F], mask [B,K] (0 for a
    slot on frame 0's dancer, MASKED_LOGIT for a slot that the dancer's area did not fill)."""

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor

    def per_step(self, steps: int) -> FirstFrameLook:
        """Each clip's look repeated for its `steps` steps folded into the batch: [B*S,...]."""
        return FirstFrameLook(*(x.repeat_interleave(steps, dim=0) for x in self))


def slots(height: int, width: int) -> int:
    """Pixels of the dancer's area that attention takes (the area's first K pixels in raster
    order; a larger area keeps its first K)."""
    return max(1, height * width // 4)


def area_slots(area: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """area [M,1,H,W] of 0/1 -> (index [M,K] of the pixels taken, inside [M,K] bool).

    The same K whatever the area (no host synchronisation, one shape for torch.compile): the
    area's pixels first, in raster order, then pixels outside it, marked by `inside`."""
    flat = area.flatten(1)  # [M,H*W]
    k = slots(*area.shape[-2:])
    # A stable sort of 1 - area puts the area's pixels first, each group in raster order.
    index = torch.sort(1.0 - flat, dim=1, stable=True).indices[:, :k]
    return index, flat.gather(1, index) > 0.5


def gather_pixels(feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """feat [M,C,H,W], index [M,K] -> the indexed pixels' features [M,K,C]."""
    flat = feat.flatten(2)  # [M,C,H*W]
    return flat.gather(2, index[:, None, :].expand(-1, flat.shape[1], -1)).transpose(1, 2)


class FirstFrameAttention(nn.Module):
    """Queries from the pose features of a step, keys from pose 0's: 1x1 projections L -> D."""

    def __init__(self, label_ch: int, key_ch: int = 16):
        super().__init__()
        self.query = nn.Conv2d(label_ch, key_ch, 1)
        self.key = nn.Conv2d(label_ch, key_ch, 1)

    def look(self, pose0_feat: torch.Tensor, first_feat: torch.Tensor,
             first_area: torch.Tensor) -> FirstFrameLook:
        """pose0_feat [B,L,H,W], first_feat [B,F,H,W], first_area [B,1,H,W] (frame 0's dancer's
        area) -> frame 0's dancer as keys and values."""
        index, inside = area_slots(first_area)
        keys = gather_pixels(self.key(pose0_feat), index)  # [B,K,D]
        values = gather_pixels(first_feat, index)  # [B,K,F]
        mask = torch.where(inside, 0.0, MASKED_LOGIT).to(keys.dtype)  # [B,K]
        return FirstFrameLook(keys, values, mask)

    def forward(self, pose_feat: torch.Tensor, first_feat: torch.Tensor, area: torch.Tensor,
                look: FirstFrameLook) -> torch.Tensor:
        """pose_feat [M,L,H,W] the step's pose features, first_feat [M,F,H,W] frame 0's, area
        [M,1,H,W] the dancer's area now, look (per step: [M,...]) -> [M,F,H,W]: inside the area
        frame 0's dancer features by attention, elsewhere first_feat."""
        index, inside = area_slots(area)  # [M,K]
        queries = gather_pixels(self.query(pose_feat), index)  # [M,K,D]
        keys, values = look.keys.to(queries.dtype), look.values.to(queries.dtype)
        mask = look.mask.to(queries.dtype)[:, None, :]  # [M,1,K], the same for every query
        moved = F_nn.scaled_dot_product_attention(queries, keys, values, attn_mask=mask)
        kept = gather_pixels(first_feat, index)  # [M,K,F]
        update = torch.where(inside[..., None], moved.to(kept.dtype), kept)  # [M,K,F]
        flat = first_feat.flatten(2)  # [M,F,H*W]
        out = flat.scatter(2, index[:, None, :].expand(-1, flat.shape[1], -1),
                           update.transpose(1, 2))
        return out.unflatten(2, first_feat.shape[-2:])
