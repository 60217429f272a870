"""The data entry point (cvae.datasets): what `data.root` opens as (a lab folder or a Parquet
pack), the validation video, and each epoch's shuffled batches for a single process."""

from __future__ import annotations

import pytest
import torch

import cvae.packs as cp
from cvae.config import load_config
from cvae.datasets import check_root, is_pack, loader_epochs, train_dataset, val_videos
from cvae.errors import DataError
from cvae.lab_folder import ClipDataset

T, H, W = 2, 8, 16


@pytest.fixture
def packed(lab, tmp_path):
    """(lab root, pack folder): 5 clips of 2 frames, 2 rows per file -> 3 train files."""
    out = tmp_path / "pack"
    cp.pack(lab, out, clip_len=T, height=H, width=W, rows_per_file=2, progress=False)
    return lab, out


def cfg_for(root, *sets: str):
    return load_config(None, overrides=[f"data.root={root}", f"data.clip_len={T}",
                                        f"data.height={H}", f"data.width={W}", *sets])


def test_is_pack(packed):
    lab, pack = packed
    assert is_pack(pack) and is_pack(pack / "train") and is_pack(pack / "val")
    assert not is_pack(lab) and not is_pack(lab / "train")


def test_check_root_names_the_problem(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match="data folder not found.*cvae-data synth"):
        check_root(cfg_for(missing))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        check_root(cfg_for(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data folder is empty"):
        check_root(cfg_for(tmp_path / "empty"))


def test_a_pack_and_its_lab_folder_give_the_same_clips(packed):
    lab, pack = packed
    from_lab, from_pack = train_dataset(cfg_for(lab)), train_dataset(cfg_for(pack))
    assert isinstance(from_lab, ClipDataset)
    assert isinstance(from_pack, cp.ParquetClipDataset)
    assert len(from_lab) == len(from_pack) == 5
    for i in range(5):
        a, b = from_lab[i], from_pack[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    frames, poses = val_videos(cfg_for(pack, "validation.val_len=4"))
    lab_frames, lab_poses = val_videos(cfg_for(lab, "validation.val_len=4"))
    assert frames.shape == (1, 4, 3, H, W)
    assert torch.equal(frames, lab_frames) and torch.equal(poses, lab_poses)


def test_partial_keeps_the_first_clips_of_a_pack(packed):
    subset = train_dataset(cfg_for(packed[1], "data.partial=0.5"))
    assert len(subset) == 2 and [subset[i][2] for i in range(2)] == [0, 1]


def test_a_pack_of_another_frame_size_is_refused(packed):
    with pytest.raises(DataError):
        train_dataset(cfg_for(packed[1], "data.height=16"))


def test_loader_epochs_replays_an_epoch_and_reshuffles_the_next(packed):
    cfg = cfg_for(packed[0], "train.batch_size=2")
    dataset = train_dataset(cfg)
    data = loader_epochs(dataset, cfg, torch.device("cpu"))
    assert data.steps_per_epoch == 3  # 5 clips, batches of 2

    def order(epoch):
        return [int(i) for _, _, ids in data.batches(epoch) for i in ids]

    assert sorted(order(0)) == list(range(5))
    assert order(0) == order(0)  # a resumed run sees the same order
    assert any(order(e) != order(0) for e in range(1, 6))  # other epochs, other orders
    unshuffled = cfg_for(packed[0], "train.batch_size=2", "data.shuffle=false")
    assert [int(i) for _, _, ids in loader_epochs(dataset, unshuffled, torch.device("cpu"))
            .batches(0) for i in ids] == list(range(5))


def test_shuffled_training_batches_decode_each_shard_once(packed, monkeypatch):
    dataset = cp.ParquetClipDataset(packed[1])
    assert len(dataset.files) > 2  # more shards than the dataset keeps decoded
    decoded = []
    real_table = cp._Table
    monkeypatch.setattr(cp, "_Table", lambda path, shape: decoded.append(path)
                        or real_table(path, shape))
    cfg = load_config(None, overrides=["train.batch_size=1"])
    data = loader_epochs(dataset, cfg, torch.device("cpu"))
    ids = [int(i) for _, _, batch_ids in data.batches(0) for i in batch_ids]
    assert sorted(decoded) == sorted(dataset.files)  # once each, in a shuffled order
    assert sorted(ids) == sorted(int(dataset[i][2]) for i in range(len(dataset)))
