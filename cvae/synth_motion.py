"""The motion of one synthetic video: a person, a room and a dance timeline, posed per frame.

The figure is a small 3-D kinematic skeleton (orthographic camera) whose joint angles come
from a timeline of dance moves (`cvae.synth_moves`, sums of sinusoids) blended with cosine
cross-fades. `plan_video` draws everything random about a video; rendering is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cvae.synth_look import make_background, sample_look
from cvae.synth_moves import MOVES, NEUTRAL, PARAMS

# OpenPose COCO-18 keypoint order.
KEYPOINT_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear",
    "l_ear",
)  # fmt: skip


@dataclass
class VideoPlan:
    """Everything needed to render one video's frames.

    xy: (T, 18+6, 2) image coordinates (pixels) of the keypoints followed by the extra
    render points (pelvis, head, hands, toes); depth: (T, 24) towards-camera depth (pixels);
    visible: (T, 18) whether OpenPose would report the keypoint (face points hide when the
    head turns away); facing: (T,) body rotation about the vertical axis (radians).
    """

    height: int
    width: int
    xy: np.ndarray
    depth: np.ndarray
    visible: np.ndarray
    facing: np.ndarray
    body: dict  # segment lengths/widths in pixels
    look: dict  # RGB colours of the person
    floor_y: float
    background: Image.Image  # (2H, 2W) RGB, static for the whole video
    moves: list  # [(name, first_frame, num_frames)]
    events: tuple = ()  # what the pose does not foretell (cvae.synth_events), by first frame


_EXTRA = ("pelvis", "head", "r_hand", "l_hand", "r_toe", "l_toe")
POINTS = KEYPOINT_NAMES + _EXTRA
IDX = {name: i for i, name in enumerate(POINTS)}


def plan_video(rng: np.random.Generator, n: int, height: int, width: int) -> VideoPlan:
    """Draw a person, a room and a dance for n frames (all randomness happens here)."""
    body = _sample_body(rng, height)
    look = sample_look(rng)
    floor_y = height * rng.uniform(0.88, 0.94)
    background = make_background(rng, height, width, floor_y)
    moves = _sample_timeline(rng, n)
    weights = _blend_weights(moves, n)  # (K, T)
    phase = _phase(rng, moves, weights, n)  # (T,)
    params = _blend_params(rng, moves, weights, phase, n)
    root_x = _root_path(rng, moves, n, width, body["h"])
    facing = _facing(rng, moves, params["twist"], n)
    xy, depth, visible = _pose(body, params, facing, root_x, floor_y)
    return VideoPlan(height, width, xy, depth, visible, facing, body, look, floor_y, background,
                 moves)  # fmt: skip


def _sample_body(rng: np.random.Generator, height: int) -> dict:
    """Per-video proportions; lengths in pixels at 1x (h = standing height)."""
    h = height * rng.uniform(0.6, 0.72)

    def jit(v: float, spread: float = 0.08) -> float:
        return float(v * h * rng.uniform(1 - spread, 1 + spread))

    return {
        "h": h, "head_r": jit(0.068), "neck": jit(0.04), "torso": jit(0.29),
        "shoulder": jit(0.115, 0.15), "hip": jit(0.075, 0.15), "upper_arm": jit(0.165),
        "forearm": jit(0.145), "hand": jit(0.045), "thigh": jit(0.245), "shin": jit(0.235),
        "foot": jit(0.065), "w_torso": jit(0.15, 0.2), "w_upper_arm": jit(0.07, 0.15),
        "w_forearm": jit(0.058, 0.15), "w_thigh": jit(0.095, 0.15), "w_shin": jit(0.075, 0.15),
        "w_neck": jit(0.06),
    }  # fmt: skip


def _sample_timeline(rng: np.random.Generator, n: int) -> list:
    """Consecutive moves covering n frames: [(name, start, length, params)]."""
    names = list(MOVES)
    prob = np.array([MOVES[k][1] for k in names])
    moves, start, last = [], 0, None
    while start < n:
        p = prob.copy()
        if last is not None:
            p[names.index(last)] = 0.0  # never the same move twice in a row
        name = names[rng.choice(len(names), p=p / p.sum())]
        length = int(rng.integers(40, 76) if name == "spin" else rng.integers(30, 66))
        if n - (start + length) < 20:  # avoid a tiny last move
            length = n - start
        params = {"amp": rng.uniform(0.75, 1.2), "phase": rng.uniform(0, 2 * np.pi),
                  "mix": rng.uniform(0.55, 1.0), "mirror": bool(rng.integers(2)),
                  "direction": 1.0, "turns": float(rng.choice([-1, 1]))}  # fmt: skip
        moves.append((name, start, length, params))
        start, last = start + length, name
    return moves


def _blend_weights(moves: list, n: int) -> np.ndarray:
    """(K, T) partition of unity: cosine cross-fades of +-blend frames at move boundaries."""
    f = np.arange(n, dtype=np.float64)
    w = np.zeros((len(moves), n))
    for k, (_, start, length, _) in enumerate(moves):
        rise = _ramp(f, start, k > 0, length)
        fall = _ramp(f, start + length, k < len(moves) - 1, length)
        w[k] = rise * (1.0 - fall)
    return w / w.sum(axis=0, keepdims=True)


def _ramp(f: np.ndarray, at: float, smooth: bool, length: int) -> np.ndarray:
    """0 -> 1 around frame `at`, a cosine over +-blend frames (a hard step if not smooth)."""
    if not smooth:
        return (f >= at).astype(np.float64)
    blend = min(10.0, length / 3.0)
    u = np.clip((f - at + blend) / (2 * blend), 0.0, 1.0)
    return (1.0 - np.cos(np.pi * u)) / 2.0


def _phase(rng: np.random.Generator, moves: list, weights: np.ndarray, n: int) -> np.ndarray:
    """(T,) dance phase: integral of a tempo that varies smoothly and per move."""
    period = rng.uniform(10.0, 16.0)  # frames per beat cycle: ~120-180 BPM at 30 fps
    f = np.arange(n)
    wobble = 0.2 * np.sin(2 * np.pi * f / rng.uniform(90, 200) + rng.uniform(0, 2 * np.pi))
    wobble += 0.1 * np.sin(2 * np.pi * f / rng.uniform(35, 70) + rng.uniform(0, 2 * np.pi))
    tempo = np.array([MOVES[name][2] for name, *_ in moves])  # (K,)
    per_move = (tempo[:, None] * weights).sum(axis=0)  # (T,); no BLAS, so bit-stable
    omega = 2 * np.pi / period * np.exp(wobble) * per_move
    return rng.uniform(0, 2 * np.pi) + np.cumsum(omega)


def _blend_params(rng, moves: list, weights: np.ndarray, phase: np.ndarray, n: int) -> dict:
    """{param: (T,)}: each move evaluated over the whole video, mixed by its weight."""
    out = {name: np.zeros(n) for name in PARAMS}
    for k, (name, _, _, params) in enumerate(moves):
        values = MOVES[name][0](phase, params)
        if params["mirror"]:
            values = _mirror(values)
        for key in PARAMS:
            out[key] += weights[k] * np.broadcast_to(values.get(key, NEUTRAL.get(key, 0.0)), n)
    # Asymmetric idle jitter so the two sides never move in perfect lockstep.
    for key in ("r_sh_a", "l_sh_a", "r_el", "l_el"):
        out[key] += 0.08 * np.sin(phase * rng.uniform(0.3, 0.7) + rng.uniform(0, 2 * np.pi))
    return out


def _mirror(values: dict) -> dict:
    """Swap the left and right sides of a move (and flip the sideways quantities)."""
    out = {}
    for key, v in values.items():
        if key.startswith("r_"):
            out["l_" + key[2:]] = v
        elif key.startswith("l_"):
            out["r_" + key[2:]] = v
        elif key in ("root_dx", "lean", "twist", "head_tilt"):
            out[key] = -v
        else:
            out[key] = v
    return out


def _root_path(rng, moves: list, n: int, width: int, h: float) -> np.ndarray:
    """(T,) horizontal pelvis position: travel moves cross the floor, others drift slightly."""
    margin = min(0.4 * h, width / 2)
    lo, hi = margin, width - margin
    x = np.empty(n)
    pos = rng.uniform(lo, hi)
    for name, start, length, params in moves:
        if name == "travel":
            far = hi if pos < (lo + hi) / 2 else lo
            target = pos + (far - pos) * rng.uniform(0.6, 1.0)
            params["direction"] = 1.0 if target >= pos else -1.0  # turn towards where it goes
        else:
            target = float(np.clip(pos + rng.normal(0, 0.06 * width), lo, hi))
        u = (np.arange(length) + 0.5) / length
        x[start : start + length] = pos + (target - pos) * (1 - np.cos(np.pi * u)) / 2
        pos = target
    return x


def _facing(rng, moves: list, twist: np.ndarray, n: int) -> np.ndarray:
    """(T,) rotation about the vertical axis: a per-video bias, the moves' twist and spins.

    A spin move adds one full turn eased over its frames, so the figure faces the camera
    again after it and the turn never blends with the other moves' angles.
    """
    phi = rng.uniform(-0.25, 0.25) + twist
    f = np.arange(n)
    for name, start, length, params in moves:
        if name == "spin":
            u = np.clip((f - start) / length, 0.0, 1.0)
            phi = phi + params["turns"] * 2 * np.pi * (1 - np.cos(np.pi * u)) / 2
    return phi


# ----------------------------------------------------------------------------- kinematics


def _dirs(a: np.ndarray, b: np.ndarray, side: float) -> np.ndarray:
    """(T, 3) unit vectors: a = frontal angle from hanging down (outwards positive), b = angle
    towards the camera. Axes: x right in the image, y down, z towards the camera."""
    a, b = np.broadcast_arrays(a, b)
    return np.stack([side * np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), np.sin(b)], -1)


def _pose(body: dict, p: dict, facing: np.ndarray, root_x: np.ndarray, floor_y: float):
    """Forward kinematics + orthographic camera -> (xy (T,24,2), depth (T,24), visible (T,18))."""
    n = len(facing)
    pts = {k: np.zeros((n, 3)) for k in POINTS}
    neck = np.array([0.0, -body["torso"], 0.0])
    pts["neck"][:] = neck
    for side, s in (("r", -1.0), ("l", 1.0)):  # the person's right is image-left (facing us)
        sh = neck + np.array([s * body["shoulder"], 0.02 * body["h"], 0.0])
        upper = _dirs(p[f"{side}_sh_a"], p[f"{side}_sh_b"], s)
        lower = _dirs(p[f"{side}_sh_a"] + p[f"{side}_el"], p[f"{side}_sh_b"], s)
        pts[f"{side}_shoulder"][:] = sh
        pts[f"{side}_elbow"] = sh + body["upper_arm"] * upper
        pts[f"{side}_wrist"] = pts[f"{side}_elbow"] + body["forearm"] * lower
        pts[f"{side}_hand"] = pts[f"{side}_wrist"] + body["hand"] * lower
        hip = np.array([s * body["hip"], 0.0, 0.0])
        thigh = _dirs(p[f"{side}_hip_a"], p[f"{side}_hip_b"], s)
        shin = _dirs(0.6 * p[f"{side}_hip_a"], p[f"{side}_hip_b"] - p[f"{side}_knee"], s)
        pts[f"{side}_hip"][:] = hip
        pts[f"{side}_knee"] = hip + body["thigh"] * thigh
        pts[f"{side}_ankle"] = pts[f"{side}_knee"] + body["shin"] * shin
        pts[f"{side}_toe"] = pts[f"{side}_ankle"] + body["foot"] * np.array([0.0, 0.35, 0.94])
    _place_head(pts, body, p["head_tilt"])
    upper_body = [k for k in POINTS if k not in _LOWER_BODY]
    for k in upper_body:  # lean the upper body about the pelvis (frontal plane)
        pts[k] = _rotate_xy(pts[k], p["lean"])
    local = np.stack([pts[k] for k in POINTS], axis=1)  # (T, 24, 3)
    c, s_ = np.cos(facing)[:, None], np.sin(facing)[:, None]
    x = local[..., 0] * c + local[..., 2] * s_  # (T, 24)
    depth = -local[..., 0] * s_ + local[..., 2] * c
    y = local[..., 1]
    feet = [IDX[k] for k in ("r_ankle", "l_ankle", "r_toe", "l_toe")]
    lowest = y[:, feet].max(axis=1) + 0.5 * body["w_shin"]  # sole of the lowest foot
    pelvis_y = floor_y - lowest - p["jump"] * body["h"]  # (T,) feet on the floor
    pelvis_x = root_x + p["root_dx"] * body["h"]
    xy = np.stack([x + pelvis_x[:, None], y + pelvis_y[:, None]], axis=-1)
    return xy, depth, _visibility(depth, body["head_r"])


_LOWER_BODY = ("pelvis", "r_hip", "l_hip", "r_knee", "l_knee", "r_ankle", "l_ankle",
               "r_toe", "l_toe")  # fmt: skip


def _rotate_xy(v: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(T, 3) points rotated in the image plane by (T,) angles (positive leans to +x)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([v[:, 0] * c - v[:, 1] * s, v[:, 0] * s + v[:, 1] * c, v[:, 2]], -1)


def _place_head(pts: dict, body: dict, tilt: np.ndarray) -> None:
    """Head centre above the neck (tilted sideways) and the face keypoints on it."""
    r = body["head_r"]
    centre = np.array([0.0, -(body["neck"] + r), 0.0])
    pts["head"] = pts["neck"] + _rotate_xy(np.broadcast_to(centre, pts["neck"].shape), tilt)
    face = {  # offsets on a head looking at the camera (+z)
        "nose": (0.0, 0.3, 0.95), "r_eye": (-0.38, -0.08, 0.85), "l_eye": (0.38, -0.08, 0.85),
        "r_ear": (-0.95, 0.0, -0.1), "l_ear": (0.95, 0.0, -0.1),
    }  # fmt: skip
    for name, off in face.items():
        off3 = np.broadcast_to(np.array(off) * r, pts["neck"].shape)
        pts[name] = pts["head"] + _rotate_xy(off3, tilt)


def _visibility(depth: np.ndarray, head_r: float) -> np.ndarray:
    """(T, 18) OpenPose-like detection: face points vanish when turned away from the camera."""
    vis = np.ones(depth.shape[:1] + (len(KEYPOINT_NAMES),), dtype=bool)
    rel = depth - depth[:, [IDX["head"]]]  # (T, 24) depth relative to the head centre
    for name, limit in (("nose", -0.2), ("r_eye", 0.1), ("l_eye", 0.1), ("r_ear", -0.5),
                        ("l_ear", -0.5)):  # fmt: skip
        vis[:, IDX[name]] = rel[:, IDX[name]] > limit * head_r
    return vis
