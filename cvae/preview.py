"""Contact sheet of a lab-layout data folder: RGB frames with their pose labels below."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cvae.errors import DataError
from cvae.storage import atomic_path

_GAP = 2  # pixels between tiles
_CAPTION = 12  # pixels of caption text above each video's pair of rows
_FRAME_RE = re.compile(r"^frame(\d+)\.png$")


def contact_sheet(
    root: str | Path, out: str | Path, *, videos: int = 4, frames: int = 8, scale: int = 2
) -> Path:
    """Write one PNG showing, per train video, `frames` evenly spaced RGB frames over their labels.

    Videos come from ``train/manifest.json`` when present, else from evenly spaced chunks of
    the train frames. Returns the path written.
    """
    for name, value in (("videos", videos), ("frames", frames), ("scale", scale)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name}={value!r}: must be an integer >= 1")
    root, out = Path(root), Path(out)
    img_dir, label_dir = root / "train" / "train_img", root / "train" / "train_label"
    for folder in (img_dir, label_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found (expected the lab layout)")
    spans = _video_spans(root, img_dir)[:videos]
    rows = [(caption, _pick(first, count, frames)) for caption, first, count in spans]
    sheet = _compose(rows, img_dir, label_dir, frames, scale)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
    return out


def _video_spans(root: Path, img_dir: Path) -> list[tuple[str, int, int]]:
    """[(caption, first_frame, num_frames)] per train video, from the manifest if any."""
    manifest = root / "train" / "manifest.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text(encoding="utf-8"))["videos"]
            return [(f"video {e['video_id']}: frames {e['first_frame']}.."
                     f"{e['first_frame'] + e['num_frames'] - 1}",
                     int(e["first_frame"]), int(e["num_frames"])) for e in entries]  # fmt: skip
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{manifest}: not a valid manifest ({err})") from None
    numbers = sorted(int(m.group(1)) for p in img_dir.iterdir() if (m := _FRAME_RE.match(p.name)))
    if not numbers:
        raise DataError(f"{img_dir}: no frameN.png files")
    return [(f"frames {numbers[0]}..{numbers[-1]} (no manifest)", numbers[0], len(numbers))]


def _pick(first: int, count: int, frames: int) -> list[int]:
    """Up to `frames` evenly spaced frame numbers of a video (no repeats)."""
    picks = np.linspace(first, first + count - 1, num=min(frames, count))
    return sorted({int(round(x)) for x in picks})


def _load(path: Path) -> Image.Image:
    """Open one frame as RGB, or raise DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except OSError as err:
        raise DataError(f"{path}: cannot read image ({err})") from None


def _compose(rows, img_dir: Path, label_dir: Path, frames: int, scale: int) -> Image.Image:
    """Paste captions, RGB rows and label rows onto one dark canvas."""
    first = _load(img_dir / f"frame{rows[0][1][0]}.png")
    tw, th = first.width * scale, first.height * scale
    width = _GAP + frames * (tw + _GAP)
    block = _CAPTION + 2 * (th + _GAP)
    sheet = Image.new("RGB", (width, _GAP + len(rows) * block), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for r, (caption, numbers) in enumerate(rows):
        y = _GAP + r * block
        draw.text((_GAP, y), caption, fill=(230, 230, 230), font=font)
        for c, n in enumerate(numbers):
            x = _GAP + c * (tw + _GAP)
            for k, folder in enumerate((img_dir, label_dir)):
                tile = _load(folder / f"frame{n}.png").resize((tw, th), Image.Resampling.NEAREST)
                sheet.paste(tile, (x, y + _CAPTION + k * (th + _GAP)))
    return sheet
