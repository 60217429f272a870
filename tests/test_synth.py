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
    "train_videos": 2, "frames_per_video": 12, "val_frames": 20, "val_videos": 2,
    "test_sequences": 2, "test_frames": 10, "height": 32, "width": 64, "progress": False,
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
    assert _names(data / "val" / "val_img") == _frames(40)  # 2 videos of 20, numbered on
    assert _names(data / "val" / "val_label") == _frames(40)
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
    assert val["videos"] == [{"video_id": 0, "first_frame": 0, "num_frames": 20},
                             {"video_id": 1, "first_frame": 20, "num_frames": 20}]
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


def test_the_first_validation_video_is_the_one_a_single_video_set_has(data, tmp_path):
    one = _make(tmp_path, seed=3, val_videos=1)
    assert _digests(one / "val" / "val_img") == {
        name: digest for name, digest in _digests(data / "val" / "val_img").items()
        if int(name.removeprefix("frame").removesuffix(".png")) < 20}
    assert _digests(one / "train") == _digests(data / "train")  # other splits as they were
    assert synth.VAL_VIDEOS == 4  # the default set's


def test_empty_out_dir_is_used(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    synth.generate(out, **TINY)
    assert (out / "train" / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("arg", "value"),
    [("train_videos", 0), ("frames_per_video", 0), ("val_frames", -1), ("val_videos", 0),
     ("test_sequences", 0),
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


# --------------------------------------------------------------- stochastic events (level)

EVENTFUL = {"frames_per_video": 40, "val_frames": 80, "test_frames": 30}


def _read_manifest(root: Path, split: str) -> dict:
    return json.loads((root / split / "manifest.json").read_text())


def _rgb_folders(root: Path) -> list[tuple[Path, dict]]:
    """[(folder of every RGB frame of the video, its manifest entry)] for train, val, test."""
    out = []
    for split, folder in (("train", "train/train_img"), ("val", "val/val_img")):
        out += [(root / folder, v) for v in _read_manifest(root, split)["videos"]]
    for v in _read_manifest(root, "test")["videos"]:
        out.append((root / "test" / "test_truth" / v["subdir"], v))
    return out


@pytest.fixture(scope="module")
def calm(tmp_path_factory) -> Path:
    """The eventful sizes at level 0."""
    return _make(tmp_path_factory.mktemp("calm"), seed=3, **EVENTFUL)


@pytest.fixture(scope="module")
def eventful(tmp_path_factory) -> Path:
    """The same videos at the highest level."""
    return _make(tmp_path_factory.mktemp("eventful"), seed=3, stochastic=1.0, **EVENTFUL)


def test_level_zero_is_the_default_byte_for_byte(data, tmp_path):
    for i, level in enumerate((0, 0.0, -0.0)):
        zero = _make(tmp_path / str(i), seed=3, stochastic=level)
        assert _digests(zero) == _digests(data)
    for split in ("train", "val", "test"):
        text = (data / split / "manifest.json").read_text()
        assert "stochastic" not in text and "events" not in text


def test_events_are_deterministic_for_a_seed(eventful, tmp_path):
    again = _make(tmp_path / "again", seed=3, stochastic=1.0, **EVENTFUL)
    assert _digests(again) == _digests(eventful)
    other = _make(tmp_path / "other", seed=4, stochastic=1.0, **EVENTFUL)
    mine = [v["events"] for _, v in _rgb_folders(eventful)]
    assert [v["events"] for _, v in _rgb_folders(other)] != mine


def test_events_leave_the_poses_unchanged(calm, eventful):
    calm_d, eventful_d = _digests(calm), _digests(eventful)
    assert calm_d.keys() == eventful_d.keys()
    labels = [k for k in calm_d if "_label" in k]
    assert len(labels) == 2 * 40 + 2 * 80 + 2 * 30
    assert all(calm_d[k] == eventful_d[k] for k in labels)
    for k in ("0", "1"):  # the Tester's given frame: no event starts at a video's frame 0
        rel = f"test/test_img/{k}/frame0.png"
        assert calm_d[rel] == eventful_d[rel]


def test_manifests_list_the_level_the_rates_and_each_videos_events(eventful):
    kinds = set()
    for split in ("train", "val", "test"):
        m = _read_manifest(eventful, split)
        assert m["format"] == "cvae-synth/1" and m["stochastic"] == 1.0
        assert m["events_per_100_frames"] == {"shirt": 2.0, "flicker": 4.0, "object": 1.0}
        for v in m["videos"]:
            last = v["first_frame"] + v["num_frames"]
            for e in v["events"]:
                kinds.add(e["kind"])
                assert v["first_frame"] < e["frame"] < last
                assert 1 <= e["frames"] and e["frame"] + e["frames"] <= last
                if e["kind"] == "object":
                    assert e["frame"] + e["frames"] == last  # it stays
                    assert e["shape"] in ("ball", "box") and len(e["box"]) == 4
    assert kinds == {"shirt", "flicker", "object"}


def test_frames_change_exactly_from_the_first_event_on(calm, eventful):
    videos = _rgb_folders(eventful)
    assert sum(bool(v["events"]) for _, v in videos) >= 4
    for folder, v in videos:
        calm_folder = calm / folder.relative_to(eventful)
        first = min((e["frame"] for e in v["events"]), default=v["first_frame"] + v["num_frames"])
        for n in range(v["first_frame"], first):
            assert (folder / f"frame{n}.png").read_bytes() == (calm_folder / f"frame{n}.png"
                                                                ).read_bytes()  # fmt: skip
        if v["events"]:
            assert not np.array_equal(_array(folder / f"frame{first}.png"),
                                      _array(calm_folder / f"frame{first}.png"))  # fmt: skip


def _events(eventful: Path, calm: Path, kind: str) -> list[tuple[Path, Path, dict]]:
    """[(its video's RGB folder, the same folder at level 0, event)] for every event of kind."""
    return [(folder, calm / folder.relative_to(eventful), e)
            for folder, v in _rgb_folders(eventful) for e in v["events"]
            if e["kind"] == kind]  # fmt: skip


def test_a_flicker_scales_the_brightness_of_its_frames(calm, eventful):
    checked = 0
    for folder, v in _rgb_folders(eventful):
        light = {}  # frame -> brightness of the newest flicker on it (events are in start order)
        for e in (e for e in v["events"] if e["kind"] == "flicker"):
            light.update(dict.fromkeys(range(e["frame"], e["frame"] + e["frames"]),
                                       e["brightness"]))  # fmt: skip
        calm_folder = calm / folder.relative_to(eventful)
        for n, factor in light.items():
            lit = _array(folder / f"frame{n}.png").astype(float).mean()
            plain = _array(calm_folder / f"frame{n}.png").astype(float).mean()
            assert (lit - plain) * (factor - 1.0) > 0 and abs(lit - plain) > 0.1 * plain
            checked += 1
    assert checked >= 5


def test_an_object_appears_and_stays(calm, eventful):
    objects = _events(eventful, calm, "object")
    assert objects
    for folder, calm_folder, e in objects:
        x0, y0, x1, y1 = e["box"]
        for n in range(e["frame"], e["frame"] + e["frames"]):
            box = _array(folder / f"frame{n}.png")[y0:y1, x0:x1].astype(int)
            plain = _array(calm_folder / f"frame{n}.png")[y0:y1, x0:x1].astype(int)
            assert (np.abs(box - plain).max(axis=-1) > 0).mean() > 0.3


def test_a_shirt_colour_change_shows_the_new_colour(eventful):
    checked = 0
    for folder, v in _rgb_folders(eventful):
        lit = {n for e in v["events"] if e["kind"] == "flicker"
               for n in range(e["frame"], e["frame"] + e["frames"])}  # fmt: skip
        shirts = [e for e in v["events"] if e["kind"] == "shirt"]
        for j, e in enumerate(shirts):  # the frames where e is the newest shirt event
            end = min([e["frame"] + e["frames"], *(f["frame"] for f in shirts[j + 1 :])])
            unlit = [n for n in range(e["frame"], end) if n not in lit]
            for n in unlit[:3]:  # (a flicker scales the colour as well)
                pixels = _array(folder / f"frame{n}.png").reshape(-1, 3).astype(int)
                near = np.abs(pixels - np.array(e["colour"])).max(axis=-1) <= 2
                assert near.sum() >= 3, (folder, n)
                checked += 1
    assert checked >= 3


def test_readers_accept_the_eventful_manifests(eventful, tmp_path):
    from cvae.lab_folder import split_videos

    _, _, videos = split_videos(eventful, "train")
    assert [len(v.names) for v in videos] == [40, 40]
    assert contact_sheet(eventful, tmp_path / "sheet.png", frames=3, scale=1).is_file()


def test_rates_per_100_frames_and_higher_levels_keep_lower_ones():
    from cvae.synth_events import RATES, sample_events

    video = synth.plan_video(np.random.default_rng(0), 6000, 32, 64)
    low = sample_events(np.random.default_rng(7), video, 0.3)
    high = sample_events(np.random.default_rng(7), video, 0.8)
    assert set(low) <= set(high)
    for kind, rate in RATES.items():
        expected = rate * 0.8 * 5999 / 100
        count = sum(e.kind == kind for e in high)
        assert abs(count - expected) < 4 * np.sqrt(expected), kind
    assert sample_events(np.random.default_rng(7), video, 0.0) == ()


@pytest.mark.parametrize("level", [1.5, -0.1, float("nan"), "0.5", True, None])
def test_bad_level_is_refused(tmp_path, level):
    with pytest.raises(DataError, match=r"^stochastic=.*: must be a number from 0 to 1"):
        synth.generate(tmp_path / "data", **TINY, stochastic=level)
    assert not (tmp_path / "data").exists()
