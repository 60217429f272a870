"""model.first_frame_posed: frame 0's colours painted on the pose of the frame to predict.

A pose image is a skeleton drawn on black, each limb in its own colour (the OpenPose palette:
the right forearm is always the same yellow, the left thigh the same blue). So the limb a pixel
of pose t belongs to can be found in pose 0 by its colour, and frame 0 shows what that limb looks
like: the pixel takes frame 0's colour where pose 0 has the same limb colour. The result is a
sharp picture of the dancer in frame 0's colours, standing in pose t, computed from the given
frame and the poses alone (no parameters, nothing generated): the decoder gets it beside its
other inputs, so the dancer's look need not be carried through t-1 generated frames, which blur
it step by step.

The match compares chromaticity (a colour divided by its largest channel), so the anti-aliased
edge of a stroke, a darker version of its colour, matches its limb too. Where two limbs overlap
the colours mix, and a limb hidden in frame 0 borrows the nearest colour it finds: the decoder
sees how good the match was (the `cover` channel) and corrects the rest.

Shapes: M pictures (clips, or clips x steps folded into the batch), H x W frame size,
K = H*W // 4 slots (cvae.appearance.area_slots: a skeleton covers ~10% of a frame; pixels past
the first K of a larger one are left unpainted). Memory: an [M,K,K] match per call.
"""

from __future__ import annotations

import torch

from cvae.appearance import MASKED_LOGIT, area_slots, gather_pixels

# Channels the decoder fusion gains: the painted colour (3) and the match quality (1).
POSED_CHANNELS = 4
# A pixel of pose t is matched when any channel is brighter than this (the skeleton's
# anti-aliased edge included), a pixel of pose 0 is a colour sample when brighter than this
# (its edge, half blended with black, is left out: frame 0's colour there is the body's edge).
QUERY_ON, KEY_ON = 0.05, 0.3
# Chromaticity distance at which a match's weight falls to e^-1/2: the palette's neighbours
# differ by 1/3 in one channel, so a limb takes its own colour and not its neighbour's.
SIGMA = 0.15
# A pixel whose best match is weaker than this keeps no colour (cover 0).
MIN_COVER = 0.1


def chromaticity(pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pose [M,3,H,W] in [0,1] -> (colour / its largest channel [M,3,H,W], that channel
    [M,1,H,W]): black stays black, and a stroke's darker edge gets its stroke's chromaticity."""
    peak = pose.amax(1, keepdim=True)
    return pose / peak.clamp_min(1e-3), peak


def paint(first: torch.Tensor, pose0: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """first [M,3,H,W] frame 0, pose0 [M,3,H,W] its pose, pose [M,3,H,W] the pose to paint ->
    [M,4,H,W]: frame 0's colour on pose's skeleton (3 channels, 0 off it) and the match
    quality in [0,1] (1: pose 0 has this exact limb colour; 0: off the skeleton or no match).

    Each pixel of `pose`'s skeleton averages frame 0's colour over pose 0's pixels, weighted by
    exp(-d^2 / 2 SIGMA^2), d the distance of their chromaticities."""
    key_chroma, key_peak = chromaticity(pose0)
    query_chroma, query_peak = chromaticity(pose)
    key_index, key_in = area_slots((key_peak > KEY_ON).to(pose.dtype))  # [M,K]
    query_index, query_in = area_slots((query_peak > QUERY_ON).to(pose.dtype))
    keys = gather_pixels(key_chroma, key_index)  # [M,K,3]
    values = gather_pixels(first, key_index)  # [M,K,3]
    queries = gather_pixels(query_chroma, query_index)  # [M,K,3]
    logits = -torch.cdist(queries, keys).square() / (2 * SIGMA**2)  # [M,K,K]
    logits = logits + torch.where(key_in, 0.0, MASKED_LOGIT).to(logits.dtype)[:, None, :]
    colour = torch.softmax(logits, dim=-1) @ values  # [M,K,3]
    cover = logits.amax(-1).exp() * query_in  # [M,K], the best match's weight
    cover = torch.where(cover > MIN_COVER, cover, 0.0)
    update = torch.cat([colour * (cover > 0)[..., None], cover[..., None]], -1)  # [M,K,4]
    out = pose.new_zeros(pose.shape[0], POSED_CHANNELS, pose.shape[-2] * pose.shape[-1])
    out = out.scatter(2, query_index[:, None, :].expand(-1, POSED_CHANNELS, -1),
                      update.transpose(1, 2))
    return out.unflatten(2, pose.shape[-2:])


def paint_steps(first: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """first [B,3,H,W] frame 0, poses [B,T,3,H,W] (pose 0 is frame 0's) -> [B,T-1,4,H,W]:
    `paint` for each step's pose, pose 1..T-1."""
    B, S = poses.shape[0], poses.shape[1] - 1
    repeat = lambda x: x[:, None].expand(-1, S, -1, -1, -1).flatten(0, 1)  # noqa: E731
    out = paint(repeat(first), repeat(poses[:, 0]), poses[:, 1:].flatten(0, 1))
    return out.unflatten(0, (B, S))
