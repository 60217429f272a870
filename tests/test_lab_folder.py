"""Lab-layout readers (cvae.lab_folder): images, clips, videos, test sequences, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cvae.errors import DataError
from cvae.lab_folder import (
    ClipDataset,
    clip_index,
    frame_files,
    load_image,
    load_test_sequences,
    load_videos,
)

# ---------------------------------------------------------------- images

def test_load_image_shape_dtype_and_resize(tmp_path, png):
    p = png(tmp_path / "frame0.png", size=(20, 10))
    x = load_image(p, 8, 16)
    assert x.shape == (3, 8, 16) and x.dtype == torch.uint8
    assert int(x.max()) <= 255 and int(x.min()) >= 0 and int(x.max()) > 0
    # same size: exactly the file's pixels, channel-first
    y = load_image(p, 10, 20)
    assert torch.equal(y, torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1))
    assert torch.equal(load_image(p, 8, 16), x)  # deterministic


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_grey_and_rgba_become_rgb(tmp_path, png, mode):
    p = png(tmp_path / "frame0.png", size=(6, 4), mode=mode)
    x = load_image(p, 4, 6)
    assert x.shape == (3, 4, 6)
    if mode == "L":
        assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_palette_image(tmp_path):
    im = Image.new("P", (6, 4), 1)
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    im.info["transparency"] = 0
    im.save(tmp_path / "frame0.png")
    x = load_image(tmp_path / "frame0.png", 4, 6)
    assert x[:, 0, 0].tolist() == [10, 20, 30]


def test_frame_files_sorted_by_number(tmp_path, png):
    for n in (10, 2, 1, 9):
        png(tmp_path / f"frame{n}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    png(tmp_path / "other3.png")
    assert [p.name for p in frame_files(tmp_path)] == [
        "frame1.png", "frame2.png", "frame9.png", "frame10.png"]


def test_frame_files_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match="nope.*not found"):
        frame_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*no frameN.png"):
        frame_files(tmp_path / "empty")


def test_corrupt_image_names_file(tmp_path):
    bad = tmp_path / "frame3.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="frame3.png.*not a readable image"):
        load_image(bad, 4, 4)
    # a truncated PNG
    good = tmp_path / "frame4.png"
    Image.new("RGB", (32, 32), (5, 6, 7)).save(good)
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(DataError, match="frame4.png"):
        load_image(good, 4, 4)


# ---------------------------------------------------------------- clips

def test_clips_respect_video_boundaries(lab):
    # videos: frames 0-4 and 5-11; clip_len 3 -> [0..2], [5..7], [8..10]
    refs = clip_index(lab, "train", 3)
    assert [r.clip_id for r in refs] == [0, 1, 2]
    assert [r.video_id for r in refs] == [0, 1, 1]
    assert [r.frame_numbers for r in refs] == [(0, 1, 2), (5, 6, 7), (8, 9, 10)]
    assert [r.start_frame for r in refs] == [0, 5, 8]


def test_plain_chunks_without_manifest(make_lab, tmp_path):
    root = make_lab(tmp_path / "lab", manifest=False)
    refs = clip_index(root, "train", 3)  # 12 frames, one video
    assert [r.frame_numbers for r in refs] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11)]
    assert {r.video_id for r in refs} == {0}


def test_clip_dataset_items(lab):
    ds = ClipDataset(lab, "train", clip_len=3, height=8, width=16)
    assert len(ds) == 3
    frames, poses, clip_id = ds[1]
    assert frames.shape == poses.shape == (3, 3, 8, 16)
    assert frames.dtype == poses.dtype == torch.uint8
    assert clip_id == 1
    assert torch.equal(frames[0], load_image(lab / "train/train_img/frame5.png", 8, 16))
    assert torch.equal(poses[2], load_image(lab / "train/train_label/frame7.png", 8, 16))
    with pytest.raises(IndexError):
        ds[3]


def test_partial(make_lab, tmp_path):
    root = make_lab(tmp_path / "lab", train=(20,), manifest=False)
    assert len(ClipDataset(root, clip_len=2, partial=0.5)) == 5
    tiny = ClipDataset(root, clip_len=2, partial=0.01)
    assert len(tiny) == 1 and tiny[0][2] == 0  # at least one clip, the first


def test_too_short_for_clip_len(lab):
    with pytest.raises(DataError, match="longest video 7 frames.*clip length 8"):
        ClipDataset(lab, "train", clip_len=8)


def test_load_videos(lab):
    frames, poses = load_videos(lab, "val", height=8, width=16)
    assert frames.shape == poses.shape == (1, 6, 3, 8, 16) and frames.dtype == torch.uint8
    f4, p4 = load_videos(lab, "val", height=8, width=16, max_len=4)
    assert torch.equal(f4, frames[:, :4]) and torch.equal(p4, poses[:, :4])


def test_load_videos_cuts_every_video_to_the_shortest(make_lab, tmp_path):
    root = make_lab(tmp_path / "lab", val=(6, 4, 5))
    frames, poses = load_videos(root, "val", height=8, width=16)
    assert frames.shape == poses.shape == (3, 4, 3, 8, 16)
    # video 1 starts at frame6.png: its own frames, not video 0's continued
    assert torch.equal(frames[1, 0], load_image(root / "val/val_img/frame6.png", 8, 16))
    assert torch.equal(poses[2, 3], load_image(root / "val/val_label/frame13.png", 8, 16))
    assert load_videos(root, "val", height=8, width=16, max_len=3)[0].shape[1] == 3


def test_load_videos_too_short(make_lab, tmp_path):
    root = make_lab(tmp_path / "lab", val=1)
    with pytest.raises(DataError, match="val_img: video 0 has 1 frame"):
        load_videos(root)
    root = make_lab(tmp_path / "two", val=(5, 1))
    with pytest.raises(DataError, match="val_img: video 1 has 1 frame"):
        load_videos(root)


def test_test_sequences(make_lab, tmp_path):
    root = make_lab(tmp_path / "lab", test=(3, 4, 2, 2, 2, 2, 2, 2, 2, 2, 5))
    seqs = load_test_sequences(root, height=8, width=16)
    assert [s.index for s in seqs] == list(range(11))  # 10 after 9
    assert seqs[1].first_frame.shape == (3, 8, 16)
    assert seqs[1].poses.shape == (4, 3, 8, 16) and seqs[10].poses.shape[0] == 5
    assert torch.equal(seqs[0].first_frame,
                       load_image(root / "test/test_img/0/frame0.png", 8, 16))
    assert load_test_sequences(root, 8, 16, max_len=2)[1].poses.shape[0] == 2


def test_test_sequence_errors(lab, png):
    (lab / "test/test_img/1/frame0.png").unlink()
    with pytest.raises(DataError, match=r"test_img/1/frame0.png"):
        load_test_sequences(lab)
    png(lab / "test/test_img/1/frame0.png")
    png(lab / "test/test_img/5/frame0.png")  # a sequence without poses
    with pytest.raises(DataError, match=r"test_label/5.*not found"):
        load_test_sequences(lab)


# ---------------------------------------------------------------- bad inputs

def test_missing_label(lab):
    (lab / "train/train_label/frame6.png").unlink()
    with pytest.raises(DataError, match=r"train_img/frame6.png: no label"):
        ClipDataset(lab, clip_len=2)


def test_label_without_frame(lab):
    (lab / "train/train_img/frame6.png").unlink()
    with pytest.raises(DataError, match=r"train_label/frame6.png: label without a frame"):
        clip_index(lab, "train", 2)


def test_missing_split_folder(tmp_path):
    with pytest.raises(DataError, match="train_img: folder not found"):
        ClipDataset(tmp_path)


def test_non_image_frame_caught_when_the_split_is_listed(lab):
    (lab / "train/train_img/frame1.png").write_text("junk")
    with pytest.raises(DataError, match="frame1.png: not a readable image"):
        ClipDataset(lab, clip_len=2, height=4, width=4)  # every header is read


def test_mixed_sizes(lab, png):
    png(lab / "train/train_img/frame5.png", size=(30, 10))  # first frame of video 1
    with pytest.raises(DataError, match=r"train_img/frame5.png: 30x10 pixels, the other frames "
                                        r"are 20x10"):
        ClipDataset(lab, clip_len=2)


@pytest.mark.parametrize("text", [
    "{not json",
    json.dumps({"format": "other", "videos": []}),
    json.dumps({"format": "cvae-synth/1", "videos": [{"video_id": 0, "first_frame": 0}]}),
    json.dumps({"format": "cvae-synth/1", "videos": [
        {"video_id": 0, "first_frame": 0, "num_frames": 6},
        {"video_id": 1, "first_frame": 5, "num_frames": 7}]}),
])
def test_malformed_manifest(lab, text):
    (lab / "train/manifest.json").write_text(text)
    with pytest.raises(DataError, match=r"manifest.json: malformed manifest"):
        clip_index(lab, "train", 2)


def test_manifest_disagrees_with_files(lab):
    (lab / "train/train_img/frame3.png").unlink()
    (lab / "train/train_label/frame3.png").unlink()
    with pytest.raises(DataError, match=r"manifest.json: video 0 .*frame3.png is missing"):
        clip_index(lab, "train", 2)
