"""Dance moves of the synthetic data set: joint-angle curves over the dance phase.

A move maps the dance phase t (T,) (radians, 2*pi per beat cycle) and its own random
parameters to {param: (T,) array}; missing params take their neutral value. ``MOVES`` lists
them with their selection weight and tempo; `cvae.synth_motion` blends them into a timeline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Joint-angle parameters a move produces (angles in radians, lengths in body heights).
PARAMS = (
    "root_dx", "lean", "twist", "jump", "head_tilt",
    "r_sh_a", "r_sh_b", "r_el", "l_sh_a", "l_sh_b", "l_el",
    "r_hip_a", "r_hip_b", "r_knee", "l_hip_a", "l_hip_b", "l_knee",
)  # fmt: skip
NEUTRAL = {
    "r_sh_a": 0.25, "l_sh_a": 0.25, "r_el": 0.3, "l_el": 0.3,
    "r_hip_a": 0.08, "l_hip_a": 0.08, "r_knee": 0.1, "l_knee": 0.1,
}  # fmt: skip

Move = Callable[[np.ndarray, dict], dict]


def _up(x: np.ndarray, p: float = 2.0) -> np.ndarray:
    """Smooth one-sided pulse in [0, 1] that peaks where x = 1 (x in [-1, 1])."""
    return ((1.0 + x) / 2.0) ** p


def _move_wave(t, r):
    """Both arms raised, waving in alternation, with a knee bounce."""
    j, p = r["amp"], r["phase"]
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 2.0 + 0.55 * j * np.sin(t + p), "l_sh_a": 2.0 + 0.55 * j * np.sin(t + p + np.pi),
        "r_el": 0.5 + 0.6 * np.sin(2 * t), "l_el": 0.5 - 0.6 * np.sin(2 * t),
        "r_knee": 0.1 + 0.35 * bounce, "l_knee": 0.1 + 0.35 * bounce,
        "r_hip_b": 0.18 * bounce, "l_hip_b": 0.18 * bounce,
        "twist": 0.25 * np.sin(0.5 * t), "head_tilt": 0.15 * np.sin(t), "lean": 0.08 * np.sin(t),
    }  # fmt: skip


def _move_squat(t, r):
    """Deep knee bends with the arms opening as the body goes down."""
    s = _up(-np.cos(t), 1.0) * r["amp"]
    return {
        "r_hip_a": 0.1 + 0.35 * s, "l_hip_a": 0.1 + 0.35 * s, "r_hip_b": 1.0 * s,
        "l_hip_b": 1.0 * s, "r_knee": 0.1 + 2.0 * s, "l_knee": 0.1 + 2.0 * s,
        "r_sh_a": 0.3 + 1.2 * s, "l_sh_a": 0.3 + 1.2 * s, "r_el": 0.3 + 0.5 * s,
        "l_el": 0.3 + 0.5 * s, "head_tilt": 0.1 * np.sin(2 * t),
    }  # fmt: skip


def _move_side_step(t, r):
    """Stepping side to side: hip sway, alternating leg spread and arm swing."""
    j = r["amp"]
    return {
        "root_dx": 0.22 * j * np.sin(t), "lean": -0.1 * np.sin(t),
        "r_hip_a": 0.08 + 0.3 * _up(np.sin(t)), "l_hip_a": 0.08 + 0.3 * _up(-np.sin(t)),
        "r_knee": 0.15 + 0.3 * _up(-np.cos(2 * t)), "l_knee": 0.15 + 0.3 * _up(-np.cos(2 * t)),
        "r_sh_a": 0.7 + 0.5 * np.sin(t), "l_sh_a": 0.7 - 0.5 * np.sin(t),
        "r_el": 0.9 + 0.3 * np.cos(t), "l_el": 0.9 - 0.3 * np.cos(t),
        "twist": 0.3 * np.sin(t + r["phase"]),
    }  # fmt: skip


def _move_kick(t, r):
    """Alternating kicks, mostly to the side, with arms out for balance."""
    kr, kl = _up(np.sin(t), 3.0) * r["amp"], _up(-np.sin(t), 3.0) * r["amp"]
    side = r["mix"]  # 1 = pure side kick, 0 = pure front kick (foreshortened)
    return {
        "r_hip_a": 0.08 + 1.1 * side * kr, "r_hip_b": 1.2 * (1 - side) * kr + 0.2 * kr,
        "r_knee": 0.1 + 0.5 * kr * (1 - kr),
        "l_hip_a": 0.08 + 1.1 * side * kl, "l_hip_b": 1.2 * (1 - side) * kl + 0.2 * kl,
        "l_knee": 0.1 + 0.5 * kl * (1 - kl),
        "lean": 0.25 * (kl - kr), "root_dx": 0.06 * (kl - kr),
        "r_sh_a": 1.3 + 0.3 * np.sin(t), "l_sh_a": 1.3 - 0.3 * np.sin(t),
        "r_el": 0.3, "l_el": 0.3,
    }  # fmt: skip


def _move_arm_circles(t, r):
    """Big arm circles (in the frontal plane and towards the camera) with a bounce."""
    j, p = r["amp"], r["phase"]
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 1.6 + 1.15 * j * np.cos(t), "r_sh_b": 0.6 * np.sin(t),
        "l_sh_a": 1.6 + 1.15 * j * np.cos(t + p), "l_sh_b": 0.6 * np.sin(t + p),
        "r_el": 0.15, "l_el": 0.15,
        "r_knee": 0.1 + 0.3 * bounce, "l_knee": 0.1 + 0.3 * bounce,
        "r_hip_b": 0.15 * bounce, "l_hip_b": 0.15 * bounce,
    }  # fmt: skip


def _move_jump(t, r):
    """Crouch, jump with the arms thrown up, land."""
    air, crouch = _up(np.sin(t), 4.0), _up(-np.sin(t), 2.0)
    up = _up(np.sin(t - 0.4), 2.0)
    return {
        "jump": 0.12 * r["amp"] * air,
        "r_knee": 0.1 + 1.3 * crouch, "l_knee": 0.1 + 1.3 * crouch,
        "r_hip_b": 0.65 * crouch, "l_hip_b": 0.65 * crouch,
        "r_hip_a": 0.08 + 0.2 * air, "l_hip_a": 0.08 + 0.2 * air,
        "r_sh_a": 0.3 + 2.3 * up, "l_sh_a": 0.3 + 2.3 * up,
        "r_el": 0.6 * (1 - up), "l_el": 0.6 * (1 - up),
    }  # fmt: skip


def _move_spin(t, r):
    """Arms out while turning (the turn itself is added by _facing)."""
    return {
        "r_sh_a": 1.35 + 0.2 * np.sin(2 * t), "l_sh_a": 1.35 + 0.2 * np.sin(2 * t + 1.0),
        "r_el": 0.3 + 0.3 * np.sin(t), "l_el": 0.3 - 0.3 * np.sin(t),
        "r_knee": 0.2 + 0.3 * _up(np.sin(2 * t)), "l_knee": 0.2 + 0.3 * _up(-np.sin(2 * t)),
        "r_hip_b": 0.15 * _up(np.sin(2 * t)), "l_hip_b": 0.15 * _up(-np.sin(2 * t)),
    }  # fmt: skip


def _move_travel(t, r):
    """Walking/strutting across the floor, body turned towards the travel direction."""
    s = np.sin(t)
    return {
        "twist": 0.75 * r["direction"],
        "r_hip_b": 0.5 * s, "l_hip_b": -0.5 * s,
        "r_knee": 0.1 + 0.7 * _up(-s, 2.0), "l_knee": 0.1 + 0.7 * _up(s, 2.0),
        "r_sh_b": -0.55 * s, "l_sh_b": 0.55 * s, "r_sh_a": 0.2, "l_sh_a": 0.2,
        "r_el": 0.5, "l_el": 0.5, "head_tilt": 0.06 * np.sin(2 * t),
    }  # fmt: skip


def _move_point(t, r):
    """Disco point: one arm up to the sky, then down across, with the hips swaying."""
    sq = np.tanh(2.5 * np.sin(t + r["phase"]))  # smooth square wave in [-1, 1]
    hi = (1 + sq) / 2
    return {
        "r_sh_a": 0.5 + 2.0 * hi, "r_el": 0.1,
        "l_sh_a": 0.35 + 0.3 * hi, "l_el": 1.6,
        "lean": -0.12 * sq, "root_dx": 0.07 * sq, "head_tilt": -0.12 * sq,
        "r_hip_a": 0.15 + 0.1 * hi, "l_hip_a": 0.15 + 0.1 * (1 - hi),
        "r_knee": 0.15 + 0.4 * (1 - hi), "l_knee": 0.15 + 0.4 * hi,
    }  # fmt: skip


def _move_groove(t, r):
    """Relaxed groove: bent arms pumping, knees bouncing, torso twisting."""
    bounce = _up(-np.cos(2 * t))
    return {
        "r_sh_a": 0.6 + 0.35 * np.sin(t), "l_sh_a": 0.6 - 0.35 * np.sin(t),
        "r_sh_b": 0.4 + 0.3 * np.sin(t), "l_sh_b": 0.4 - 0.3 * np.sin(t),
        "r_el": 1.3 + 0.4 * np.sin(t), "l_el": 1.3 - 0.4 * np.sin(t),
        "r_knee": 0.15 + 0.45 * bounce, "l_knee": 0.15 + 0.45 * bounce,
        "r_hip_b": 0.22 * bounce, "l_hip_b": 0.22 * bounce,
        "twist": 0.4 * np.sin(0.5 * t + r["phase"]), "lean": 0.1 * np.sin(t),
        "root_dx": 0.05 * np.sin(t),
    }  # fmt: skip


# name: (function, selection weight, tempo multiplier)
MOVES: dict[str, tuple[Move, float, float]] = {
    "wave": (_move_wave, 1.0, 1.0),
    "squat": (_move_squat, 0.8, 0.75),
    "side_step": (_move_side_step, 1.0, 1.0),
    "kick": (_move_kick, 0.9, 0.9),
    "arm_circles": (_move_arm_circles, 0.9, 0.9),
    "jump": (_move_jump, 0.7, 0.8),
    "spin": (_move_spin, 0.7, 1.0),
    "travel": (_move_travel, 1.0, 1.1),
    "point": (_move_point, 0.8, 0.8),
    "groove": (_move_groove, 1.0, 1.2),
}
