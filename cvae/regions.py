"""model.pose_region: what each predicted step may change, found from the poses alone.

A pose image is a skeleton drawn on black; the pixels near it are the dancer's. A step keeps
frame 0 where the dancer never was and replaces only the dancer's area (`Composite`).

Shapes: B batch, T frames per clip, S = T-1 predicted steps, H x W frame size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F_nn

# A pose pixel brighter than this in any channel is part of the skeleton (drawn on black).
POSE_ON = 0.05


def skeleton_area(pose: torch.Tensor, radius: int) -> torch.Tensor:
    """1 within `radius` pixels (a square neighbourhood) of the pose's skeleton, else 0.

    pose: [*,3,H,W] in [0,1], a skeleton drawn on black -> [*,1,H,W] of 0.0 / 1.0.
    """
    on = pose.amax(-3, keepdim=True) > POSE_ON
    lead = on.shape[:-3]
    on = on.reshape(-1, *on.shape[-3:]).to(pose.dtype)  # [M,1,H,W]
    area = F_nn.max_pool2d(on, 2 * radius + 1, stride=1, padding=radius)
    return area.reshape(*lead, *area.shape[-3:])


@dataclass
class Composite:
    """model.pose_region: what a step may change and what it keeps, from the poses alone.

    `hidden` [B,1,H,W] is the dancer's area in frame 0 (the only place where frame 0 does not
    show the static background); `change` [B,S,1,H,W] is, for each predicted step, the dancer's
    area now plus, inside `hidden`, its area one frame before (background the dancer uncovers
    there is not in frame 0). A step keeps frame 0 outside `hidden` and the previous frame
    inside it, and replaces that with the generated frame where `change` is 1.
    """

    first: torch.Tensor  # frame 0 [B,3,H,W]
    hidden: torch.Tensor
    change: torch.Tensor

    @classmethod
    def plan(cls, first: torch.Tensor, poses: torch.Tensor, radius: int) -> Composite:
        """first [B,3,H,W], poses [B,T,3,H,W] (pose 0 is frame 0's)."""
        area = skeleton_area(poses, radius)  # [B,T,1,H,W]
        hidden = area[:, 0]
        return cls(first, hidden, torch.maximum(area[:, 1:], area[:, :-1] * hidden[:, None]))

    def base(self, prev: torch.Tensor) -> torch.Tensor:
        """What a step keeps: frame 0 outside `hidden`, prev inside. prev [B,3,H,W] or
        [B,S,3,H,W]."""
        first, hidden = (self.first, self.hidden) if prev.dim() == 4 else \
            (self.first[:, None], self.hidden[:, None])
        return first + hidden * (prev - first)

    def step_args(self, t: int | slice, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(change, base) for step t (a slice: several steps, prev [B,S,3,H,W]) from prev."""
        return self.change[:, t], self.base(prev)


def composite_args(comp: Composite | None, t: int | slice, prev: torch.Tensor) -> tuple:
    """The extra arguments of cvae.model.CVAE._step for step t: none when model.pose_region
    is off."""
    return () if comp is None else comp.step_args(t, prev)
