"""Strict lab-layout inputs: every PNG mode decoded to 8-bit RGB by its bit depth (or refused),
no gaps in frame numbering, one source size per folder; each error names the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cvae.errors import DataError
from cvae.heldout import load_truth
from cvae.lab_folder import ClipDataset, load_image, load_test_sequences, load_videos

# ---------------------------------------------------------------- PNG modes


def _rgb16_png(path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): pixels uint16 [H,W,3]."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0,
                                                                          0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _grey(values) -> list[int]:
    return [[v, v, v] for v in values]


CASES = {
    # mode: (write the image, expected RGB of its 3 pixels)
    "I;16": (lambda p: Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(p),
             _grey([0, 128, 255])),
    "I": (lambda p: Image.fromarray(np.array([[0, 257, 65535]], np.int32), "I").save(
        p, format="TIFF"), _grey([0, 1, 255])),  # Pillow reads by content, writes no I PNG
    "RGB;16": (lambda p: _rgb16_png(p, np.array([[[65535, 0, 0], [0, 32896, 0],
                                                    [0, 0, 65535]]], np.uint16)),
               [[255, 0, 0], [0, 128, 0], [0, 0, 255]]),
    "1": (lambda p: Image.fromarray(np.array([[0, 255, 0]], np.uint8)).convert("1").save(p),
          _grey([0, 255, 0])),
    "LA": (lambda p: Image.fromarray(np.array([[[10, 0], [20, 128], [30, 255]]], np.uint8),
                                     "LA").save(p), _grey([10, 20, 30])),
    "RGBA": (lambda p: Image.fromarray(np.array([[[1, 2, 3, 0], [4, 5, 6, 9], [7, 8, 9, 255]]],
                                                np.uint8), "RGBA").save(p),
             [[1, 2, 3], [4, 5, 6], [7, 8, 9]]),
    "P": (lambda p: _palette().save(p), [[255, 0, 0], [0, 255, 0], [255, 0, 0]]),
}


def _palette() -> Image.Image:
    im = Image.fromarray(np.array([[0, 1, 0]], np.uint8), "P")
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    return im


@pytest.mark.parametrize("mode", list(CASES))
def test_every_png_mode_is_decoded_to_8_bit_rgb_by_its_depth(mode, tmp_path):
    path = tmp_path / "frame0.png"
    write, expected = CASES[mode]
    write(path)
    x = load_image(path, 1, 3)  # [3,1,3]
    assert x.permute(1, 2, 0)[0].tolist() == expected


def test_a_mode_without_an_rgb_meaning_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "frame0.png"
    Image.fromarray(np.zeros((2, 2), np.float32), "F").save(path, format="TIFF")
    with pytest.raises(DataError, match=f"{path}: image mode F cannot be read as 8-bit RGB"):
        load_image(path, 2, 2)


# ---------------------------------------------------------------- gaps


def _drop(lab, split: str, n: int) -> None:
    for d in ("img", "label"):
        (lab / split / f"{split}_{d}" / f"frame{n}.png").unlink()


def test_a_gap_in_the_train_frames_without_a_manifest_is_an_error(make_lab, tmp_path):
    lab = make_lab(tmp_path / "lab", manifest=False)
    _drop(lab, "train", 3)
    with pytest.raises(DataError, match=r"train_img/frame3.png: missing \(the frames of .* are "
                                        r"numbered with a gap before frame4.png\)"):
        ClipDataset(lab, clip_len=2)


def test_a_gap_in_the_validation_video_is_an_error(make_lab, tmp_path):
    lab = make_lab(tmp_path / "lab", manifest=False)
    _drop(lab, "val", 2)
    with pytest.raises(DataError, match=r"val_img/frame2.png: missing"):
        load_videos(lab, "val")


def test_a_gap_in_a_test_sequences_poses_is_an_error_not_a_shorter_sequence(lab):
    (lab / "test/test_label/1/frame2.png").unlink()
    with pytest.raises(DataError, match=r"test_label/1/frame2.png: missing"):
        load_test_sequences(lab)
    (lab / "test/test_label/0/frame0.png").unlink()
    with pytest.raises(DataError, match=r"test_label/0/frame0.png: missing"):
        load_test_sequences(lab)


def test_a_gap_in_the_true_test_frames_is_an_error(lab, png):
    for f in (0, 2):
        png(lab / "test/test_truth/0" / f"frame{f}.png")
    with pytest.raises(DataError, match=r"test_truth/0/frame1.png: missing"):
        load_truth(lab, [0], 10, 20, 2)


# ---------------------------------------------------------------- one size per folder


@pytest.mark.parametrize(("file", "load"), [
    ("train/train_img/frame6.png", lambda lab: ClipDataset(lab, clip_len=2)),
    ("train/train_label/frame2.png", lambda lab: ClipDataset(lab, clip_len=2)),
    ("val/val_img/frame3.png", lambda lab: load_videos(lab, "val")),
    ("val/val_label/frame0.png", lambda lab: load_videos(lab, "val")),
    ("test/test_img/1/frame0.png", load_test_sequences),
    ("test/test_label/1/frame3.png", load_test_sequences),
    ("test/test_truth/1/frame1.png", lambda lab: load_truth(lab, [0, 1], 10, 20, 3)),
])
def test_a_frame_of_another_source_size_is_an_error_naming_it(file, load, lab, png):
    for k in (0, 1):
        for f in range(3):
            png(lab / "test/test_truth" / str(k) / f"frame{f}.png")
    png(lab / file, size=(22, 10))
    with pytest.raises(DataError, match=rf"{file}: 22x10 pixels, the other frames are 20x10"):
        load(lab)
