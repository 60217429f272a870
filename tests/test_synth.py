"""Tests of the synthetic dance data set generator and the contact sheet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvae import synth
from cvae.errors import DataError
from cvae.preview import contact_sheet

TINY = {
    "train_videos": 2, "frames_per_video": 12, "val_frames": 20, "test_sequences": 2,
    "test_frames": 10, "height": 32, "width": 64, "progress": False,
}  # fmt: skip


def _make(root: Path, **overrides) -> Path:
    """Generate the tiny data set under root/data and return that folder."""
    out = root / "data"
    synth.generate(out, **{**TINY, **overrides})
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _make(tmp_path_factory.mktemp("synth"), seed=3)


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _frames(n: int, first: int = 0) -> set[str]:
    return {f"frame{i}.png" for i in range(first, first + n)}


def _array(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)  # (H, W, 3) uint8


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------- layout


def test_layout_names_and_counts(data):
    assert _names(data) == {"train", "val", "test"}
    assert _names(data / "train") == {"train_img", "train_label", "manifest.json"}
    assert _names(data / "val") == {"val_img", "val_label", "manifest.json"}
    assert _names(data / "test") == {"test_img", "test_label", "test_truth", "manifest.json"}
    assert _names(data / "train" / "train_img") == _frames(24)
    assert _names(data / "train" / "train_label") == _frames(24)
    assert _names(data / "val" / "val_img") == _frames(20)
    assert _names(data / "val" / "val_label") == _frames(20)
    assert _names(data / "test" / "test_img") == {"0", "1"}
    assert _names(data / "test" / "test_label") == {"0", "1"}
    assert _names(data / "test" / "test_truth") == {"0", "1"}
    for k in ("0", "1"):
        assert _names(data / "test" / "test_img" / k) == {"frame0.png"}
        assert _names(data / "test" / "test_label" / k) == _frames(10)
        assert _names(data / "test" / "test_truth" / k) == _frames(10)
    assert not list(data.parent.glob(".data.tmp-*"))


def test_images_are_rgb_of_requested_size(data):
    for path in [*data.rglob("frame0.png"), data / "train" / "train_label" / "frame23.png"]:
        with Image.open(path) as img:
            assert img.mode == "RGB", path
            assert img.size == (64, 32), path
        assert _array(path).shape == (32, 64, 3)


def test_manifests_match_files(data):
    train = json.loads((data / "train" / "manifest.json").read_text())
    assert train["format"] == synth.FORMAT == "cvae-synth/1"
    assert (train["seed"], train["height"], train["width"]) == (3, 32, 64)
    assert train["videos"] == [
        {"video_id": 0, "first_frame": 0, "num_frames": 12},
        {"video_id": 1, "first_frame": 12, "num_frames": 12},
    ]
    covered = set().union(*(_frames(v["num_frames"], v["first_frame"]) for v in train["videos"]))
    assert covered == _names(data / "train" / "train_img")
    val = json.loads((data / "val" / "manifest.json").read_text())
    assert val["videos"] == [{"video_id": 0, "first_frame": 0, "num_frames": 20}]
    test = json.loads((data / "test" / "manifest.json").read_text())
    assert [(v["video_id"], v["subdir"], v["num_frames"]) for v in test["videos"]] == [
        (0, "0", 10),
        (1, "1", 10),
    ]
    for v in test["videos"]:
        label_dir = data / "test" / "test_label" / v["subdir"]
        assert _names(label_dir) == _frames(v["num_frames"], v["first_frame"])
    assert test["truth_dir"] == "test_truth"
    assert "truth_dir" not in train and "truth_dir" not in val


def test_test_truth_is_the_whole_video_from_the_given_frame(data):
    for k in ("0", "1"):
        truth = data / "test" / "test_truth" / k
        frames = [_array(truth / f"frame{i}.png") for i in range(10)]
        assert all(f.shape == (32, 64, 3) for f in frames)
        # frame 0 of the truth is the frame the Tester is given, byte for byte
        given = data / "test" / "test_img" / k / "frame0.png"
        assert (truth / "frame0.png").read_bytes() == given.read_bytes()
        assert not np.array_equal(frames[0], frames[9])  # the dancer moves


# -------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(data, tmp_path):
    again = _make(tmp_path, seed=3)
    assert _digests(again) == _digests(data)


def test_different_seed_gives_different_bytes(data, tmp_path):
    other = _digests(_make(tmp_path, seed=4))
    mine = _digests(data)
    pngs = [k for k in mine if k.endswith(".png")]
    assert sum(other[k] != mine[k] for k in pngs) == len(pngs)


def test_test_videos_do_not_depend_on_train_count(data, tmp_path):
    other = _make(tmp_path, seed=3, train_videos=1, frames_per_video=5)
    for rel in ("test/test_img/1/frame0.png", "test/test_label/1/frame9.png"):
        assert (other / rel).read_bytes() == (data / rel).read_bytes()


# ------------------------------------------------------------------------------ content


def test_labels_are_skeletons_on_black(data):
    for n in (0, 7, 15):
        label = _array(data / "train" / "train_label" / f"frame{n}.png")
        black = (label.max(axis=-1) == 0).mean()
        assert 0.6 < black < 0.99
        colours = {tuple(c) for c in label.reshape(-1, 3)}
        assert len(colours & set(synth.PALETTE)) >= 5


def test_backgrounds_are_textured(data):
    for path in (data / "val" / "val_img" / "frame0.png", data / "test" / "test_img" / "1"
                 / "frame0.png"):  # fmt: skip
        corner = _array(path)[:10, :16].reshape(-1, 3)  # (160, 3), away from the figure
        assert len({tuple(c) for c in corner}) > 20


def test_consecutive_frames_differ_but_are_close(data):
    frames = [_array(data / "val" / "val_img" / f"frame{n}.png").astype(float)
              for n in range(20)]  # fmt: skip
    diffs = [np.abs(a - b).mean() for a, b in zip(frames[:-1], frames[1:], strict=True)]
    assert min(diffs) > 0.0
    assert max(diffs) < 8.0
    # the room is static: most pixels are exactly equal between neighbours
    assert (frames[0] == frames[1]).all(axis=-1).mean() > 0.7


def test_figure_moves_over_the_video(data):
    centres = []
    for n in range(20):
        ys, xs = np.nonzero(_array(data / "val" / "val_label" / f"frame{n}.png").max(axis=-1))
        centres.append(((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2))
    centres = np.array(centres)  # (20, 2)
    assert np.ptp(centres, axis=0).max() >= 1.0


def test_long_video_stays_mostly_in_view():
    video = synth.plan_video(np.random.default_rng(0), 400, 64, 128)
    pelvis = video.xy[:, synth._IDX["pelvis"]]  # (T, 2)
    assert pelvis[:, 0].min() >= 0 and pelvis[:, 0].max() <= 128
    assert np.ptp(pelvis[:, 0]) > 10  # it travels
    step = np.linalg.norm(np.diff(video.xy[:, :18], axis=0), axis=-1)  # (T-1, 18)
    assert 0.2 < step.mean() < 3.0 and step.max() < 12.0


# ------------------------------------------------------------------------------- errors


def test_non_empty_out_is_refused(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "x.txt").write_text("keep me")
    with pytest.raises(DataError, match="already exists and is not empty"):
        synth.generate(out, **TINY)
    assert (out / "x.txt").read_text() == "keep me"


def test_empty_out_dir_is_used(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    synth.generate(out, **TINY)
    assert (out / "train" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("arg", "value"),
    [("train_videos", 0), ("frames_per_video", 0), ("val_frames", -1), ("test_sequences", 0),
     ("test_frames", 0), ("height", 15), ("width", 8), ("frames_per_video", 2.5)],
)  # fmt: skip
def test_bad_arguments_are_refused(tmp_path, arg, value):
    with pytest.raises(DataError, match=arg):
        synth.generate(tmp_path / "data", **{**TINY, arg: value})
    assert not (tmp_path / "data").exists()


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real_save = synth._save_png

    def flaky_save(img, path):
        calls.append(path)
        if len(calls) > 30:
            raise RuntimeError("disk on fire")
        real_save(img, path)

    monkeypatch.setattr(synth, "_save_png", flaky_save)
    with pytest.raises(RuntimeError, match="disk on fire"):
        synth.generate(tmp_path / "data", **TINY)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ preview


def test_contact_sheet_size(data, tmp_path):
    out = contact_sheet(data, tmp_path / "sheet.png", videos=2, frames=4, scale=2)
    with Image.open(out) as img:
        width, height = img.size
    assert 4 * 128 <= width <= 4 * 128 + 40
    assert 2 * 2 * 64 <= height <= 2 * 2 * 64 + 2 * 30
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]


def test_contact_sheet_without_manifest(data, tmp_path):
    copy = tmp_path / "copy" / "train"
    for sub in ("train_img", "train_label"):
        (copy / sub).mkdir(parents=True)
        for p in (data / "train" / sub).iterdir():
            (copy / sub / p.name).write_bytes(p.read_bytes())
    out = contact_sheet(copy.parent, tmp_path / "sheet.png", frames=3, scale=1)
    with Image.open(out) as img:
        assert img.width >= 3 * 64


def test_contact_sheet_missing_folder(tmp_path):
    with pytest.raises(DataError, match="train_img"):
        contact_sheet(tmp_path / "nowhere", tmp_path / "sheet.png")
