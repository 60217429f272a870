"""Readers for the lab layout: frames + pose images as uint8 tensors [C,H,W].

Layout::

    <root>/train/train_img/frameN.png   <root>/train/train_label/frameN.png
    <root>/val/val_img/frameN.png       <root>/val/val_label/frameN.png
    <root>/test/test_img/<k>/frame0.png <root>/test/test_label/<k>/frameN.png
    <root>/<split>/manifest.json        (synthetic data only: video boundaries)

Every reader returns uint8 tensors resized to the configured H x W; the training code
converts to float on the device, which keeps host memory and transfers small.

Inputs are strict, each error naming the file: every PNG mode is decoded to 8-bit RGB by its
bit depth (16-bit grey 65535 -> 255) or refused; frame numbers have no gaps (a folder without a
manifest is one video only if its numbering is contiguous); all the frames of a folder have
one source size (a stray size is an error, not silently resized).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from cvae.errors import ConfigError, DataError
from cvae.storage import read_json

__all__ = [
    "MANIFEST_FORMAT",
    "ClipDataset",
    "ClipRef",
    "TestSequence",
    "Video",
    "check_one_size",
    "clip_index",
    "contiguous_frames",
    "frame_files",
    "frame_number",
    "image_size",
    "load_image",
    "load_test_sequences",
    "load_videos",
    "split_dirs",
    "split_videos",
]

MANIFEST_FORMAT = "cvae-synth/1"
_FRAME_RE = re.compile(r"frame(\d+)\.png")
# Errors Pillow raises for files that are not (complete) images; SyntaxError is what its
# PNG plugin raises for a broken chunk, DecompressionBombError for absurd sizes.
_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError,
                 Image.DecompressionBombError)


def frame_number(path: Path) -> int | None:
    """N of a ``frameN.png`` path, else None."""
    m = _FRAME_RE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def frame_files(folder: str | Path) -> list[Path]:
    """The ``frameN.png`` files of a folder, sorted by the integer N (frame10 after frame9)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    numbered: dict[int, Path] = {}
    for p in folder.iterdir():
        n = frame_number(p)
        if n is None:
            continue  # other files (thumbnails, notes) are not frames
        if n in numbered:
            a, b = sorted([numbered[n].name, p.name])
            raise DataError(f"{folder}: two files for frame {n}: {a} and {b}")
        numbered[n] = p
    if not numbered:
        raise DataError(f"{folder}: no frameN.png files")
    return [numbered[n] for n in sorted(numbered)]


def contiguous_frames(folder: str | Path, first: int | None = None) -> list[Path]:
    """`frame_files` whose numbers run without a gap (from `first` when given): a missing
    frame is one DataError naming it, never a shorter, shifted sequence."""
    files = frame_files(folder)
    start = frame_number(files[0]) if first is None else first
    for expected, path in enumerate(files, start=start):
        if frame_number(path) != expected:
            raise DataError(f"{Path(folder) / f'frame{expected}.png'}: missing (the frames of "
                            f"{folder} are numbered with a gap before {path.name})")
    return files


def check_one_size(files: list[Path]) -> tuple[int, int]:
    """All the files have one (width, height) (headers only); returns it. The error names a
    file whose size is not the most common one."""
    sizes = [image_size(p) for p in files]
    size = Counter(sizes).most_common(1)[0][0]
    for path, other in zip(files, sizes, strict=True):
        if other != size:
            raise DataError(f"{path}: {other[0]}x{other[1]} pixels, the other frames are "
                            f"{size[0]}x{size[1]}")
    return size


def _check_size(height: int, width: int) -> None:
    if height < 1 or width < 1:
        raise ConfigError(f"frame size must be positive, got {height}x{width} (HxW)")


# Modes Pillow converts to 8-bit RGB correctly; 16/32-bit integer grey is scaled by hand.
_RGB_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
_WIDE_GREY = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """8-bit RGB from any PNG mode (16-bit grey: 0..65535 -> 0..255, not clipped to white);
    alpha is dropped. A mode with no such meaning is one DataError."""
    if im.mode in _WIDE_GREY:
        wide = np.asarray(im).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise DataError(f"{path}: {im.mode} pixel values outside 0..65535")
        im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif im.mode not in _RGB_MODES:
        raise DataError(f"{path}: image mode {im.mode} cannot be read as 8-bit RGB")
    if im.mode in ("P", "PA"):
        # via RGBA: Pillow warns when a palette image with transparency goes to RGB
        im = im.convert("RGBA")
    return im if im.mode == "RGB" else im.convert("RGB")


def load_image(path: str | Path, height: int, width: int) -> torch.Tensor:
    """One image as uint8 [3,H,W], converted to 8-bit RGB and resized (bilinear) to H x W."""
    _check_size(height, width)
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = _to_rgb(im, path)
            if im.size != (width, height):
                im = im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
            arr = np.array(im, dtype=np.uint8)  # [H,W,3], a writable copy
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except _IMAGE_ERRORS as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header only."""
    try:
        with Image.open(path) as im:
            return im.size
    except _IMAGE_ERRORS as err:
        raise DataError(f"{path}: not a readable image ({err})") from None


def split_dirs(root: str | Path, split: str) -> tuple[Path, Path]:
    """(image folder, label folder) of a split: ``<root>/<split>/<split>_img``, ``..._label``."""
    base = Path(root) / split
    return base / f"{split}_img", base / f"{split}_label"


@dataclass(frozen=True)
class ClipRef:
    """One clip: ``names`` are the file names (same in the img and label folders)."""

    clip_id: int
    video_id: int
    start_frame: int
    names: tuple[str, ...]

    @property
    def frame_numbers(self) -> tuple[int, ...]:
        return tuple(int(_FRAME_RE.fullmatch(n).group(1)) for n in self.names)


@dataclass(frozen=True)
class Video:
    """One video of a split: its frame file names in order."""

    video_id: int
    names: tuple[str, ...]  # file names in frame order


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _read_manifest(path: Path) -> list[tuple[int, int, int]]:
    """[(video_id, first_frame, num_frames)] from a synth manifest."""
    doc = read_json(path, "manifest")
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: malformed manifest (expected format {MANIFEST_FORMAT!r})")
    videos = doc.get("videos")
    if not isinstance(videos, list) or not videos:
        raise DataError(f"{path}: malformed manifest ('videos' must be a non-empty list)")
    out = []
    for i, v in enumerate(videos):
        keys = ("video_id", "first_frame", "num_frames")
        if not isinstance(v, dict) or not all(_is_int(v.get(k)) for k in keys):
            raise DataError(f"{path}: malformed manifest (videos[{i}] needs integer {keys})")
        if v["first_frame"] < 0 or v["num_frames"] < 1:
            raise DataError(f"{path}: malformed manifest (videos[{i}] has an empty range)")
        out.append((v["video_id"], v["first_frame"], v["num_frames"]))
    out.sort(key=lambda t: t[1])
    for (va, fa, na), (vb, fb, _) in itertools.pairwise(out):
        if fa + na > fb:
            raise DataError(f"{path}: malformed manifest (videos {va} and {vb} overlap)")
    if len({v[0] for v in out}) != len(out):
        raise DataError(f"{path}: malformed manifest (duplicate video_id)")
    return out


def split_videos(root: str | Path, split: str) -> tuple[Path, Path, list[Video]]:
    """List a split once -> (img folder, label folder, videos).

    Checks that images and labels pair up by name and that the manifest (if any) matches the
    files; without a manifest the split is one video (as real recorded data comes).
    """
    img_dir, label_dir = split_dirs(root, split)
    imgs = frame_files(img_dir)
    labels = frame_files(label_dir)
    check_one_size(imgs)
    check_one_size(labels)
    label_names = {p.name for p in labels}
    for p in imgs:
        if p.name not in label_names:
            raise DataError(f"{p}: no label {label_dir / p.name}")
    img_names = {p.name for p in imgs}
    for p in labels:
        if p.name not in img_names:
            raise DataError(f"{p}: label without a frame {img_dir / p.name}")

    manifest = Path(root) / split / "manifest.json"
    if not manifest.exists():
        # lab data: one long video in frame order, which a gap would silently splice
        imgs = contiguous_frames(img_dir)
        return img_dir, label_dir, [Video(0, tuple(p.name for p in imgs))]

    by_number = {frame_number(p): p.name for p in imgs}
    videos, covered = [], 0
    for video_id, first, count in _read_manifest(manifest):
        names = []
        for n in range(first, first + count):
            if n not in by_number:
                raise DataError(
                    f"{manifest}: video {video_id} spans frames {first}..{first + count - 1} "
                    f"but {img_dir / f'frame{n}.png'} is missing")
            names.append(by_number[n])
        covered += count
        videos.append(Video(video_id, tuple(names)))
    if covered != len(imgs):
        inside = {n for v in videos for n in v.names}
        stray = next(p for p in imgs if p.name not in inside)
        raise DataError(f"{stray}: frame is in no video of {manifest}")
    return img_dir, label_dir, videos


def _chunk(videos: list[Video], clip_len: int) -> list[ClipRef]:
    refs: list[ClipRef] = []
    for v in videos:
        for s in range(0, len(v.names) - clip_len + 1, clip_len):
            names = v.names[s:s + clip_len]
            start = frame_number(Path(names[0]))
            refs.append(ClipRef(len(refs), v.video_id, start, names))
    return refs


def _check_clip_len(clip_len: int) -> None:
    if clip_len < 1:
        raise ConfigError(f"clip_len must be >= 1, got {clip_len}")


def clip_index(root: str | Path, split: str, clip_len: int) -> list[ClipRef]:
    """Non-overlapping clips of ``clip_len`` consecutive frames, never spanning two videos.

    With a manifest each video is chunked on its own (the remainder at its end is dropped);
    without one the whole split is one video, chunked in order. May be empty.
    """
    _check_clip_len(clip_len)
    _, _, videos = split_videos(root, split)
    return _chunk(videos, clip_len)


class ClipDataset(torch.utils.data.Dataset):
    """Clips of a split: item i -> (frames uint8 [T,3,H,W], poses uint8 [T,3,H,W], clip_id)."""

    def __init__(self, root: str | Path, split: str = "train", clip_len: int = 16,
                 height: int = 32, width: int = 64, partial: float = 1.0):
        _check_clip_len(clip_len)
        _check_size(height, width)
        if not 0.0 < partial <= 1.0:
            raise ConfigError(f"partial must be in (0, 1], got {partial}")
        self.root, self.split = Path(root), split
        self.clip_len, self.height, self.width = clip_len, height, width
        # the only directory listing: items build their paths from the cached names
        self.img_dir, self.label_dir, videos = split_videos(root, split)
        self.all_clips = _chunk(videos, clip_len)
        if not self.all_clips:
            longest = max(len(v.names) for v in videos)
            what = f"{longest} frames" if len(videos) == 1 else f"longest video {longest} frames"
            raise DataError(f"{self.img_dir}: {what}, fewer than the clip length {clip_len}")
        # `partial` keeps the first fraction of the clips (not a random subset)
        self.clips = self.all_clips[:max(1, int(len(self.all_clips) * partial))]

    def __len__(self) -> int:
        return len(self.clips)

    def _stack(self, folder: Path, names: tuple[str, ...]) -> torch.Tensor:
        return _stack_images(folder, names, self.height, self.width)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        ref = self.clips[i]  # IndexError past the end, as Dataset users expect
        frames = self._stack(self.img_dir, ref.names)  # [T,3,H,W]
        poses = self._stack(self.label_dir, ref.names)  # [T,3,H,W]
        return frames, poses, ref.clip_id


def load_videos(root: str | Path, split: str = "val", height: int = 32, width: int = 64,
                max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video of a split, each cut to the first ``max_len`` frames and all to the shortest
    one's length, so that they roll out together as one batch (a rollout never jumps from one
    video into the next): (frames, poses) uint8 [V,T,3,H,W]. Without a manifest the split is one
    video (V = 1).
    """
    if max_len is not None and max_len < 2:
        raise ConfigError(f"max_len must be >= 2, got {max_len}")
    img_dir, label_dir, videos = split_videos(root, split)
    length = min(len(v.names) for v in videos)
    if max_len is not None:
        length = min(length, max_len)
    if length < 2:
        short = min(videos, key=lambda v: len(v.names))
        raise DataError(f"{img_dir}: video {short.video_id} has {length} frame, need at least 2 "
                        "for a video")
    names = [v.names[:length] for v in videos]
    frames = torch.stack([_stack_images(img_dir, n, height, width) for n in names])
    poses = torch.stack([_stack_images(label_dir, n, height, width) for n in names])
    return frames, poses


def _stack_images(folder: Path, names: tuple[str, ...], height: int, width: int
                  ) -> torch.Tensor:
    """The named images of a folder: uint8 [T,3,H,W]."""
    return torch.stack([load_image(folder / n, height, width) for n in names])


@dataclass(frozen=True)
class TestSequence:
    """A test sequence: the first frame [3,H,W] and the poses to drive it [T,3,H,W]."""

    __test__ = False  # not a pytest test class despite the name

    index: int
    first_frame: torch.Tensor
    poses: torch.Tensor


def _int_subdirs(folder: Path) -> dict[int, Path]:
    return {int(p.name): p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()}


def load_test_sequences(root: str | Path, height: int = 32, width: int = 64,
                        max_len: int | None = None) -> list[TestSequence]:
    """All test sequences sorted by k: first frame from test_img/k/frame0.png, poses from
    test_label/k (first ``max_len`` of them)."""
    if max_len is not None and max_len < 1:
        raise ConfigError(f"max_len must be >= 1, got {max_len}")
    img_dir, label_dir = split_dirs(root, "test")
    for d in (img_dir, label_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found")
    img_ks, label_ks = _int_subdirs(img_dir), _int_subdirs(label_dir)
    ks = sorted(set(img_ks) | set(label_ks))
    if not ks:
        raise DataError(f"{img_dir}: no sequence folders (0, 1, ...)")
    firsts, labels = {}, {}
    for k in ks:
        firsts[k] = img_ks.get(k, img_dir / str(k)) / "frame0.png"
        if not firsts[k].is_file():
            raise DataError(f"{firsts[k]}: first frame of test sequence {k} not found")
        labels[k] = contiguous_frames(label_ks.get(k, label_dir / str(k)), first=0)[:max_len]
    check_one_size(list(firsts.values()))
    check_one_size([p for k in ks for p in labels[k]])
    return [TestSequence(k, load_image(firsts[k], height, width),
                         torch.stack([load_image(p, height, width) for p in labels[k]]))
            for k in ks]
