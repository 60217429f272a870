"""Events the pose cannot foretell, for ``generate(stochastic=LEVEL)``.

Without them every synthetic RGB frame is a function of the pose and the video's fixed look,
so the next frame follows from the previous frame and the pose, and a VAE's latent has
nothing to carry. With LEVEL in (0, 1] each video gets random events of three kinds:

- ``shirt``: the shirt takes a new hue (same saturation and value) for 8-40 frames, then its
  own colour again;
- ``flicker``: the light dims (x0.55-0.75) or brightens (x1.3-1.6) the whole frame for 1-4
  frames;
- ``object``: a ball or a box appears at a random place in the room, behind the dancer, and
  stays to the end of the video.

Every frame after a video's first starts an event of each kind with probability
``RATES[kind] / 100 * LEVEL``: the expected events per 100 frames are 2 x LEVEL colour
changes, 4 x LEVEL flickers and 1 x LEVEL objects. A newer shirt or flicker event replaces
an active one of its kind; objects add up. Events change the RGB frames only, never the pose
labels, and the frames before a video's first event are those of LEVEL 0 byte for byte.

The draws come from a child of the video's own seeded stream and do not depend on LEVEL:
every frame gets one candidate of each kind and LEVEL only decides which candidates happen,
so the data stays deterministic from the seed and a higher LEVEL keeps a lower one's events.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np

from cvae.errors import DataError
from cvae.synth_look import hsv
from cvae.synth_motion import VideoPlan

RATES = {"shirt": 2.0, "flicker": 4.0, "object": 1.0}  # events per 100 frames at LEVEL 1
KINDS = tuple(RATES)
_DRAWS = 8  # uniform numbers per frame and kind: the trigger, then the event's parameters


@dataclass(frozen=True)
class Event:
    """One event of a video: what happens from frame `start` (index in the video) on."""

    kind: str  # "shirt", "flicker" or "object"
    start: int
    frames: int  # how many frames it lasts (an object: to the end of the video)
    colour: tuple[int, int, int] | None = None  # shirt, object: RGB
    brightness: float | None = None  # flicker: the factor on every pixel value
    shape: str | None = None  # object: "ball" or "box"
    box: tuple[int, int, int, int] | None = None  # object: x0, y0, x1, y1 in frame pixels

    def active(self, i: int) -> bool:
        """Whether frame i (index in the video) shows this event."""
        return self.start <= i < self.start + self.frames

    def record(self, first_frame: int) -> dict:
        """The manifest entry; "frame" is the N of the frameN.png where the event starts."""
        out: dict = {"kind": self.kind, "frame": first_frame + self.start, "frames": self.frames}
        for key in ("colour", "brightness", "shape", "box"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class FrameState:
    """What the events change in one frame (None/empty: nothing)."""

    shirt: tuple[int, int, int] | None
    brightness: float | None
    objects: tuple[Event, ...]


def check_level(level: object, name: str = "stochastic") -> float:
    """The level as a float in [0, 1], or DataError naming `name`."""
    number = isinstance(level, (int, float, np.integer, np.floating))
    if isinstance(level, bool) or not number or not 0.0 <= float(level) <= 1.0:
        raise DataError(f"{name}={level!r}: must be a number from 0 to 1 (0 = no events)")
    return float(level) + 0.0  # -0.0 -> 0.0


def sample_events(rng: np.random.Generator, video: VideoPlan, level: float) -> tuple:
    """The video's events at `level`, ordered by first frame (() at level 0: nothing drawn)."""
    n = len(video.facing)
    if level <= 0.0:
        return ()
    events = []
    for kind in KINDS:
        draws = rng.uniform(size=(n, _DRAWS))  # the same draws at every level
        starts = np.nonzero(draws[1:, 0] < RATES[kind] / 100.0 * level)[0] + 1
        events += [_MAKERS[kind](video, int(i), draws[i, 1:]) for i in starts]
    return tuple(sorted(events, key=lambda e: (e.start, KINDS.index(e.kind))))


def frame_state(events: tuple, i: int) -> FrameState:
    """What frame i shows: the newest active shirt colour and flicker, every object so far."""
    active = [e for e in events if e.active(i)]
    newest = {e.kind: e for e in active}  # events are in start order: the newest wins
    shirt, flicker = newest.get("shirt"), newest.get("flicker")
    return FrameState(
        shirt=shirt.colour if shirt else None,
        brightness=flicker.brightness if flicker else None,
        objects=tuple(e for e in active if e.kind == "object"),
    )


def counts(events: tuple) -> dict[str, int]:
    """{kind: number of events}, every kind listed."""
    return {kind: sum(e.kind == kind for e in events) for kind in KINDS}


# ---------------------------------------------------------------------------- the kinds


def _span(video: VideoPlan, start: int, frames: int) -> int:
    """`frames`, cut at the end of the video."""
    return min(frames, len(video.facing) - start)


def _shirt(video: VideoPlan, start: int, u: np.ndarray) -> Event:
    """A new shirt hue, at least a fifth of the colour wheel away from its own."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in video.look["shirt"]))
    colour = hsv((h + 0.2 + 0.6 * u[0]) % 1.0, s, v)
    return Event("shirt", start, _span(video, start, 8 + int(u[1] * 33)), colour=colour)


def _flicker(video: VideoPlan, start: int, u: np.ndarray) -> Event:
    """The whole frame dimmed or brightened for 1-4 frames."""
    factor = 0.55 + 0.2 * u[0] if u[1] < 0.5 else 1.3 + 0.3 * u[0]
    frames = _span(video, start, 1 + int(u[2] * 4))
    return Event("flicker", start, frames, brightness=round(float(factor), 3))


def _object(video: VideoPlan, start: int, u: np.ndarray) -> Event:
    """A ball or a box, 10-18 % of the frame height, somewhere above the floor line."""
    size = video.height * (0.1 + 0.08 * u[0])
    top = 0.05 * video.height
    x0 = u[1] * (video.width - size)
    y0 = top + u[2] * max(0.0, video.floor_y - size - top)
    box = tuple(int(math.floor(c)) for c in (x0, y0, x0 + size, y0 + size))
    colour = hsv(u[3], 0.6 + 0.35 * u[4], 0.55 + 0.4 * u[5])
    shape = "ball" if u[6] < 0.5 else "box"
    frames = len(video.facing) - start
    return Event("object", start, frames, colour=colour, shape=shape, box=box)


_MAKERS = {"shirt": _shirt, "flicker": _flicker, "object": _object}
