"""Views of a test rollout a person can judge, written atomically.

- ``write_compare_gif``: an animated GIF with one labelled panel per source side by side
  (truth | prediction | copy-frame-0 baseline where the true frames exist, else prediction |
  poses).
- ``write_strip``: a PNG of the frames at fixed steps (STRIP_STEPS, capped to the rollout's
  length), one labelled row per source, one column per step.

Every source is uint8 [T,3,H,W], all of the same shape; tiles are enlarged ``scale`` times
(nearest neighbour) so small frames stay legible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cvae.storage import atomic_path

STRIP_STEPS = (1, 10, 50, 100, 200, 400, 629)
_BAND = 14  # pixels of the label band above panels and columns
_GAP = 2  # pixels between tiles
_BACK, _INK = (255, 255, 255), (0, 0, 0)


def strip_steps(length: int) -> list[int]:
    """The frames a strip shows for a rollout of ``length`` frames: STRIP_STEPS, the ones past
    the end replaced by the last frame, each once."""
    return sorted({min(step, length - 1) for step in STRIP_STEPS})


def _tile(frame: np.ndarray, scale: int) -> Image.Image:
    """uint8 [3,H,W] -> an RGB image enlarged ``scale`` times."""
    image = Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0)))
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _check(sources: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(T, H, W) shared by every source [T,3,H,W]."""
    shapes = {name: a.shape for name, a in sources.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"sources differ in shape: {shapes}")
    t, _, h, w = next(iter(shapes.values()))
    return t, h, w


def _side_by_side(sources: dict[str, np.ndarray], t: int, scale: int) -> Image.Image:
    """Frame t of every source in a row, each under its name."""
    _, h, w = _check(sources)
    tw, th = w * scale, h * scale
    canvas = Image.new("RGB", (len(sources) * (tw + _GAP) - _GAP, _BAND + th), _BACK)
    draw, font = ImageDraw.Draw(canvas), _font()
    for i, (name, frames) in enumerate(sources.items()):
        x = i * (tw + _GAP)
        draw.text((x + 2, 1), name, fill=_INK, font=font)
        canvas.paste(_tile(frames[t], scale), (x, _BAND))
    return canvas


def write_compare_gif(sources: dict[str, np.ndarray], path: str | Path, fps: int,
                      scale: int = 2) -> Path:
    """An animated GIF of every source side by side, labelled with its name."""
    length, _, _ = _check(sources)
    return save_gif([_side_by_side(sources, t, scale) for t in range(length)], path, fps)


def write_gif(frames: np.ndarray, path: str | Path, fps: int, scale: int = 2) -> Path:
    """uint8 [T,3,H,W] -> an animated GIF, enlarged `scale` times so a person can see it."""
    return save_gif([_tile(f, scale) for f in frames], path, fps)


def save_gif(images: list[Image.Image], path: str | Path, fps: int) -> Path:
    """Each frame gets its own 256-colour palette by fast octree quantization: ~10x faster than
    Pillow's default median cut (a 630-frame rollout: 0.25 s against 2.4 s), within ~2 of 255 per
    channel of the RGB frame."""
    images = [im.quantize(256, method=Image.Quantize.FASTOCTREE) for im in images]
    return _save(images, Path(path), format="GIF", save_all=True, append_images=images[1:],
                 duration=int(1000 / fps), loop=0)


def write_strip(sources: dict[str, np.ndarray], path: str | Path, scale: int = 2,
                steps: list[int] | None = None) -> Path:
    """A PNG grid: one row per source (its name on the left), one column per step (t=N above);
    `steps` defaults to `strip_steps` of the rollout's length."""
    length, h, w = _check(sources)
    steps = strip_steps(length) if steps is None else steps
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = int(max(probe.textlength(name, font=font) for name in sources)) + 6
    tw, th = w * scale, h * scale
    canvas = Image.new("RGB", (left + len(steps) * (tw + _GAP), _BAND + len(sources) * (th + _GAP)),
                       _BACK)
    draw = ImageDraw.Draw(canvas)
    for j, step in enumerate(steps):
        draw.text((left + j * (tw + _GAP) + 2, 1), f"t={step}", fill=_INK, font=font)
    for i, (name, frames) in enumerate(sources.items()):
        y = _BAND + i * (th + _GAP)
        draw.text((2, y + th // 2 - 6), name, fill=_INK, font=font)
        for j, step in enumerate(steps):
            canvas.paste(_tile(frames[step], scale), (left + j * (tw + _GAP), y))
    return _save([canvas], Path(path), format="PNG")


def _save(images: list[Image.Image], path: Path, **options) -> Path:
    """Save atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        images[0].save(tmp, **options)
    return path
