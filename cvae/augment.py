"""Training augmentation: more rooms and dancers than the training videos hold."""

from __future__ import annotations

import random

import torch


def augment(frames: torch.Tensor, poses: torch.Tensor,
            rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """Training augmentation, drawn per clip: a horizontal flip of frames and poses together,
    and a permutation of the frames' colour channels (the poses keep theirs: their colours name
    the limbs).

    frames, poses: [B,T,3,H,W] -> the same shapes. A few training videos hold only a few rooms
    and dancers; mirrored and recoloured ones push the model to carry appearance over from the
    previous frame rather than learn the training set's colours.
    """
    out_frames, out_poses = [], []
    for clip_frames, clip_poses in zip(frames, poses, strict=True):
        if rng.random() < 0.5:
            clip_frames, clip_poses = clip_frames.flip(-1), clip_poses.flip(-1)
        channels = rng.sample(range(3), 3)
        out_frames.append(clip_frames[:, channels])
        out_poses.append(clip_poses)
    return torch.stack(out_frames), torch.stack(out_poses)
