"""The look of a synthetic video: the person's colours and the static room behind them."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

SS = 2  # supersampling factor: draw at 2x, then Image.reduce(2) for anti-aliased edges


def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    """HSV in [0, 1] -> RGB bytes."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return tuple(int(round(255 * c)) for c in rgb)


_SKIN = ((255, 219, 172), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36),
         (92, 58, 30), (234, 192, 160))  # fmt: skip


def sample_look(rng: np.random.Generator) -> dict:
    """Per-video colours of the person (and the room hues, kept apart from the shirt)."""
    shirt_h = rng.uniform()
    wall_h = (shirt_h + rng.uniform(0.25, 0.75)) % 1.0  # the shirt stands out from the wall
    skin = np.array(_SKIN[rng.integers(len(_SKIN))]) * rng.uniform(0.92, 1.05)
    hair = hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.5))
    return {
        "shirt": hsv(shirt_h, rng.uniform(0.55, 0.95), rng.uniform(0.6, 0.95)),
        "trousers": hsv(rng.uniform(), rng.uniform(0.3, 0.8), rng.uniform(0.18, 0.5)),
        "skin": tuple(int(c) for c in np.clip(skin, 0, 255)),
        "hair": hair,
        "shoes": hsv(rng.uniform(), rng.uniform(0, 0.3), float(rng.choice([0.1, 0.9]))),
        "wall_h": wall_h,
    }


def make_background(rng, height: int, width: int, floor_y: float) -> Image.Image:
    """(2H, 2W) static room: textured wall with a few panels, perspective floor."""
    hh, ww = height * SS, width * SS
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64) / SS  # (2H, 2W) 1x pixel coords
    horizon = floor_y - height * rng.uniform(0.1, 0.2)
    hue = rng.uniform()
    wall = _gradient(rng, yy / height, xx / width, hue, sat=(0.1, 0.45), val=(0.45, 0.9))
    wall += _texture(rng, yy, xx, height)[..., None]
    _add_panels(rng, wall, height, width, horizon)
    floor = _floor(rng, yy, xx, horizon, height, width)
    img = np.where((yy < horizon)[..., None], wall, floor)
    board = (yy >= horizon) & (yy < horizon + max(1.0, 0.03 * height))  # skirting board
    img[board] = np.array(hsv(hue, 0.2, rng.uniform(0.2, 0.95))) * 1.0
    img += rng.normal(0.0, 2.5, img.shape)  # fine grain, so no region is perfectly flat
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def _gradient(rng, v: np.ndarray, u: np.ndarray, hue: float, sat, val) -> np.ndarray:
    """(2H, 2W, 3) blend of two related colours along a random, mostly vertical direction."""
    c0 = np.array(hsv(hue, rng.uniform(*sat), rng.uniform(*val)), dtype=np.float64)
    c1 = np.array(hsv((hue + rng.uniform(-0.08, 0.08)) % 1, rng.uniform(*sat),
                       rng.uniform(*val)), dtype=np.float64)  # fmt: skip
    angle = rng.uniform(-0.9, 0.9)
    s = v * math.cos(angle) + u * math.sin(angle)  # (2H, 2W)
    s = (s - s.min()) / max(float(s.max() - s.min()), 1e-9)
    return c0 * (1 - s[..., None]) + c1 * s[..., None]


def _texture(rng, yy: np.ndarray, xx: np.ndarray, height: int) -> np.ndarray:
    """(2H, 2W) brightness offsets: stripes, tiles, diagonal stripes or soft blobs."""
    kind = rng.integers(4)
    period = height * rng.uniform(0.1, 0.3)
    amp = rng.uniform(8, 20)
    if kind == 0:  # wallpaper stripes
        return amp * np.sin(2 * np.pi * xx / period)
    if kind == 1:  # tiles with grout lines
        gy, gx = (yy % period) < 1.0, (xx % period) < 1.0
        return np.where(gy | gx, -2.0 * amp, amp * 0.2 * np.sin(xx // period + yy // period))
    if kind == 2:  # diagonal stripes
        return amp * np.sign(np.sin(2 * np.pi * (xx + yy) / period)) * 0.6
    return amp * 1.5 * _smooth_noise(rng, yy.shape, cells=rng.integers(4, 9))


def _smooth_noise(rng, shape: tuple, cells: int) -> np.ndarray:
    """(shape) low-frequency noise in about [-1, 1]: a random grid upsampled bicubically."""
    grid = rng.uniform(0, 255, (cells, cells * 2)).astype(np.uint8)
    up = Image.fromarray(grid, "L").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.asarray(up, dtype=np.float64) / 127.5 - 1.0


def _add_panels(rng, wall: np.ndarray, height: int, width: int, horizon: float) -> None:
    """Paint 1-3 framed rectangles (windows/posters) onto the wall in place."""
    for _ in range(int(rng.integers(1, 4))):
        w, h = width * rng.uniform(0.08, 0.22), height * rng.uniform(0.12, 0.35)
        x0, y0 = rng.uniform(0, width - w), rng.uniform(0.05 * height, max(1, horizon - h))
        x0, y0, x1, y1 = (int(SS * c) for c in (x0, y0, x0 + w, min(y0 + h, horizon - 1)))
        if y1 <= y0 + 2 or x1 <= x0 + 2:
            continue
        frame = np.array(hsv(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.1, 0.9)))
        fill = np.array(hsv(rng.uniform(), rng.uniform(0.2, 0.7), rng.uniform(0.3, 1.0)))
        wall[y0:y1, x0:x1] = frame
        b = max(1, SS * height // 64)
        wall[y0 + b : y1 - b, x0 + b : x1 - b] = fill + 12 * np.sin(
            np.arange(y1 - y0 - 2 * b)[:, None, None] / 3.0
        )  # a little shading inside


def _floor(rng, yy, xx, horizon: float, height: int, width: int) -> np.ndarray:
    """(2H, 2W, 3) floor with planks: rows getting wider towards the camera, converging seams."""
    hue = rng.uniform()
    base = _gradient(rng, yy / height, xx / width, hue, sat=(0.2, 0.55), val=(0.3, 0.65))
    depth = np.maximum(yy - horizon, 0.0) + 1.0  # grows towards the viewer
    rows = np.sin(np.log(depth) * rng.uniform(5, 9))
    vanishing = width * rng.uniform(0.3, 0.7)
    seams = np.sin((xx - vanishing) / depth * rng.uniform(2.0, 4.0))
    pattern = rng.uniform(6, 14) * (0.6 * rows + 0.4 * np.sign(seams))
    if rng.integers(2):  # checker instead of planks
        pattern = rng.uniform(10, 22) * np.sign(rows * seams)
    return base + pattern[..., None]
