"""Rendering of a planned synthetic video: the RGB frame and the OpenPose-style label."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from cvae.synth_events import Event, frame_state
from cvae.synth_look import SS
from cvae.synth_motion import IDX, KEYPOINT_NAMES, POINTS, VideoPlan

# The 17 limb pairs OpenPose draws for COCO-18 (0-based), in its drawing order.
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
# The usual OpenPose palette: colour i for limb i and for keypoint i.
PALETTE = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def render_label(video: VideoPlan, i: int) -> Image.Image:
    """(H, W) RGB OpenPose-style skeleton of frame i on black."""
    size = (video.width * SS, video.height * SS)
    img = Image.new("RGB", size, (0, 0, 0))
    draw = ImageDraw.Draw(img)
    xy, vis = video.xy[i] * SS, video.visible[i]
    stick = SS * max(2, round(0.045 * video.height))
    radius = SS * max(1.5, 0.03 * video.height)
    for k, (a, b) in enumerate(LIMBS):
        if vis[a] and vis[b]:
            _capsule(draw, xy[a], xy[b], stick, PALETTE[k])
    for k in range(len(KEYPOINT_NAMES)):
        if vis[k]:
            _disc(draw, xy[k], radius, PALETTE[k])
    return img.reduce(SS)


def render_rgb(video: VideoPlan, i: int) -> Image.Image:
    """(H, W) RGB frame i: the room, a floor shadow and the person, far parts first.

    The video's events (cvae.synth_events) add the objects shown so far to the room, recolour
    the shirt and scale the whole frame's brightness; without an active event frame i is
    drawn exactly as without events.
    """
    state = frame_state(video.events, i)
    img = video.background.copy()
    draw = ImageDraw.Draw(img)
    for obj in state.objects:
        _paint_object(draw, obj)
    xy, depth = video.xy[i] * SS, video.depth[i] * SS
    _shadow(draw, video, xy)
    look = video.look if state.shirt is None else {**video.look, "shirt": state.shirt}
    for _, paint in sorted(_parts(video, look, xy, depth, i), key=lambda part: part[0]):
        paint(draw)
    img = img.reduce(SS)
    return img if state.brightness is None else _light(img, state.brightness)


def _paint_object(draw: ImageDraw.ImageDraw, obj: Event) -> None:
    """A ball or a box in the room (2x coordinates), with a darker outline."""
    x0, y0, x1, y1 = (SS * c for c in obj.box)
    rim = tuple(int(c * 0.55) for c in obj.colour)
    paint = draw.ellipse if obj.shape == "ball" else draw.rectangle
    paint([x0, y0, x1 - 1, y1 - 1], fill=obj.colour, outline=rim, width=SS)


def _light(img: Image.Image, factor: float) -> Image.Image:
    """The frame with every pixel value scaled by `factor` (a flicker of the light)."""
    arr = np.asarray(img, dtype=np.float64) * factor
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _shadow(draw: ImageDraw.ImageDraw, video: VideoPlan, xy: np.ndarray) -> None:
    """A dark ellipse on the floor under the person, smaller when in the air."""
    feet_y = xy[[IDX["r_toe"], IDX["l_toe"]], 1].max() / SS
    lift = max(0.0, video.floor_y - feet_y - 0.5 * video.body["w_shin"])
    rx = SS * video.body["h"] * 0.22 / (1 + lift / video.body["h"] * 4)
    ry = SS * video.body["h"] * 0.035
    cx, cy = xy[IDX["pelvis"], 0], SS * video.floor_y
    shade = video.background.getpixel((int(min(max(cx, 0), SS * video.width - 1)),
                                       int(min(cy, SS * video.height - 1))))  # fmt: skip
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=tuple(int(c * 0.6) for c in shade))


def _parts(video: VideoPlan, look: dict, xy: np.ndarray, depth: np.ndarray, i: int) -> list:
    """[(depth, paint(draw))] for torso, head, arms and legs of frame i (2x coordinates), in
    the colours of `look` (the video's own, or with the shirt of an active event)."""
    body, s = video.body, SS
    p = {name: xy[IDX[name]] for name in POINTS}
    d = {name: depth[IDX[name]] for name in POINTS}
    parts = []
    for side in ("r", "l"):
        arm = [(p[f"{side}_shoulder"], p[f"{side}_elbow"], s * body["w_upper_arm"], look["shirt"]),
               (p[f"{side}_elbow"], p[f"{side}_wrist"], s * body["w_forearm"], look["skin"]),
               (p[f"{side}_wrist"], p[f"{side}_hand"], s * body["w_forearm"] * 1.15,
                look["skin"])]  # fmt: skip
        leg = [
            (p[f"{side}_hip"], p[f"{side}_knee"], s * body["w_thigh"], look["trousers"]),
            (p[f"{side}_knee"], p[f"{side}_ankle"], s * body["w_shin"], look["trousers"]),
            (p[f"{side}_ankle"], p[f"{side}_toe"], s * body["w_shin"], look["shoes"]),
        ]
        arm_d = (d[f"{side}_elbow"] + d[f"{side}_wrist"]) / 2 + 0.02 * s * body["h"]
        leg_d = (d[f"{side}_knee"] + d[f"{side}_ankle"]) / 2 - 0.06 * s * body["h"]
        parts.append((arm_d, _chain_painter(arm)))
        parts.append((leg_d, _chain_painter(leg)))
    parts.append((0.0, lambda draw: _paint_torso(draw, p, s * body["w_torso"], look["shirt"])))
    head_d = d["head"] + 0.01 * s * body["h"]
    parts.append((head_d, lambda draw: _paint_head(draw, p, video, i)))
    return parts


def _chain_painter(segments: list) -> Callable:
    """A painter drawing connected rounded segments [(a, b, width, colour)] in order."""

    def paint(draw: ImageDraw.ImageDraw) -> None:
        for a, b, w, colour in segments:
            _capsule(draw, a, b, w, colour)

    return paint


def _paint_torso(draw, p: dict, width: float, colour) -> None:
    """Torso: the shoulder-hip quad plus a thick spine so it keeps volume when side-on."""
    quad = [p["r_shoulder"], p["l_shoulder"], p["l_hip"], p["r_hip"]]
    draw.polygon([tuple(map(float, q)) for q in quad], fill=colour)
    _capsule(draw, p["neck"] + (p["pelvis"] - p["neck"]) * 0.1, p["pelvis"], width, colour)
    for q in quad:
        _disc(draw, q, width * 0.35, colour)


def _paint_head(draw, p: dict, video: VideoPlan, i: int) -> None:
    """Neck, hair-coloured head, and a skin face that slides sideways as the head turns."""
    body, look = video.body, video.look
    r = SS * body["head_r"]
    _capsule(draw, p["neck"], p["head"], SS * body["w_neck"], look["skin"])
    cx, cy = p["head"]
    draw.ellipse([cx - 0.88 * r, cy - 1.05 * r, cx + 0.88 * r, cy + r], fill=look["hair"])
    c, s = math.cos(video.facing[i]), math.sin(video.facing[i])
    if c > -0.15:  # the face is visible unless the head looks away
        fx, fy = cx + 0.3 * r * s, cy + 0.22 * r
        rx, ry = 0.7 * r * (0.45 + 0.55 * abs(c)), 0.78 * r
        draw.ellipse([fx - rx, fy - ry, fx + rx, fy + ry], fill=look["skin"])


def _capsule(draw: ImageDraw.ImageDraw, a, b, width: float, colour) -> None:
    """A thick line with round caps from a to b."""
    draw.line([(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))], fill=colour,
              width=max(1, int(round(width))))  # fmt: skip
    _disc(draw, a, width / 2, colour)
    _disc(draw, b, width / 2, colour)


def _disc(draw: ImageDraw.ImageDraw, c, radius: float, colour) -> None:
    """A filled circle of the given radius around c."""
    x, y = float(c[0]), float(c[1])
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour)
