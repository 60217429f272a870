"""model.pose_region: what each predicted step may change, found from the poses alone.

A pose image is a skeleton drawn on black; the pixels near it are the dancer's. A step keeps
frame 0 where the dancer never was and replaces only the dancer's area (`Composite`). The room
behind frame 0's dancer is in no given frame: it is painted by the step that uncovers it, or
(model.hidden_fill=surround) filled once from the room around it (`fill_from_surround`).

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


def fill_from_surround(image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """`image` with its holes filled from the pixels around them (push-pull): the known pixels
    are averaged down a pyramid of halvings until every coarse pixel has some, and each hole
    pixel takes the bilinear upsampling of the first level that covers it. Known pixels are
    kept exactly; a hole gets a smooth blend of its surround's colours, not its texture.

    image [B,C,H,W], hole [B,1,H,W] (1: unknown) -> [B,C,H,W]. An image without a known pixel
    is filled with 0. No host synchronisation: the pyramid's depth follows from the shape.
    """
    known = 1.0 - hole
    levels = [(image * known, known)]  # (colour x weight, weight) per level, finest first
    # Down to 1 pixel whatever the holes: a level under one without holes changes nothing (the
    # where() below keeps every covered pixel), and a loop that looked at the weights would
    # wait on the device once per level in every training step.
    while min(levels[-1][1].shape[-2:]) > 1:
        levels.append(tuple(F_nn.avg_pool2d(x, 2, ceil_mode=True) for x in levels[-1]))
    filled = None
    for colour, weight in reversed(levels):  # coarsest first
        mean = colour / weight.clamp_min(1e-12)
        if filled is not None:
            up = F_nn.interpolate(filled, size=mean.shape[-2:], mode="bilinear",
                                  align_corners=False)
            mean = torch.where(weight > 0, mean, up)
        filled = mean
    return torch.where(hole > 0, filled, image)


@dataclass
class Composite:
    """model.pose_region: what a step may change and what it keeps, from the poses alone.

    `background` [B,3,H,W] is frame 0, or with model.hidden_fill=surround frame 0 with its
    dancer's area filled from the room around it. A step keeps the previous frame where `keep`
    [B,S,1,H,W] is 1 and the background elsewhere, and replaces that with the generated frame
    where `change` [B,S,1,H,W] is 1.

    - generated: `keep` is frame 0's dancer's area (the background there is the dancer), and
      `change` is the dancer's area now plus, inside that, its area one frame before (the room
      the dancer uncovers there is in no given frame).
    - surround: `change` is the dancer's area now. With `keep_room`, `keep` is everywhere the
      dancer was not one frame before: from a true previous frame (one step) a kept pixel is
      that frame's room, what the dancer has uncovered since frame 0 included. Without it,
      `keep` is None: every step keeps the filled background. A rollout is the same either way
      (its previous frame is the filled background wherever the dancer was not); training's
      teacher-forced steps go without, so that they are given what a rollout's steps are.
    """

    background: torch.Tensor
    keep: torch.Tensor | None  # None: keep the background everywhere
    change: torch.Tensor
    first_area: torch.Tensor  # [B,1,H,W] frame 0's dancer's area

    @classmethod
    def plan(cls, first: torch.Tensor, poses: torch.Tensor, radius: int,
             hidden_fill: str = "generated", keep_room: bool = True) -> Composite:
        """first [B,3,H,W] frame 0, poses [B,T,3,H,W] (pose 0 is frame 0's); hidden_fill:
        "generated" (frame 0's dancer's area is painted by the steps) or "surround";
        keep_room: see the class (surround only)."""
        area = skeleton_area(poses, radius)  # [B,T,1,H,W]
        hidden = area[:, :1]  # [B,1,1,H,W] frame 0's dancer's area
        if hidden_fill == "surround":
            keep = 1.0 - area[:, :-1] if keep_room else None
            return cls(fill_from_surround(first, hidden[:, 0]), keep, area[:, 1:], hidden[:, 0])
        return cls(first, hidden.expand_as(area[:, 1:]),
                   torch.maximum(area[:, 1:], area[:, :-1] * hidden), hidden[:, 0])

    def step_args(self, t: int | slice, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(change, base) for step t (a slice: several steps, prev [B,S,3,H,W]) from prev
        [B,3,H,W]: base is what the step keeps."""
        background = self.background if prev.dim() == 4 else self.background[:, None]
        if self.keep is None:  # no work per step: what a rollout keeps is the background
            return self.change[:, t], background.expand_as(prev)
        return self.change[:, t], background + self.keep[:, t] * (prev - background)


def composite_args(comp: Composite | None, t: int | slice, prev: torch.Tensor) -> tuple:
    """The extra arguments of cvae.model.CVAE._step for step t: none when model.pose_region
    is off."""
    return () if comp is None else comp.step_args(t, prev)
