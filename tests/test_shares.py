"""A DDP rank's share of each epoch (cvae.shares): clips kept on the device and gathered by
index, or Parquet files dealt to the ranks; no Ray needed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvae import packs, shares
from cvae.config import load_config
from cvae.errors import DataError

CLIP_LEN = 4


@pytest.fixture(scope="module")
def pack(tiny_data, tmp_path_factory) -> Path:
    """The tiny data set packed 2 clips per Parquet file (6 clips: 3 files)."""
    out = tmp_path_factory.mktemp("shares") / "pack"
    packs.pack(tiny_data, out, clip_len=CLIP_LEN, rows_per_file=2, progress=False)
    return out


def config(*sets: str):
    return load_config(overrides=[f"data.clip_len={CLIP_LEN}", "train.batch_size=2", *sets])


def resident(pack: Path) -> shares.ResidentClips:
    dataset = packs.ParquetClipDataset(pack)
    # Batches as a pass over the pack gives them, out of order: the store sorts them by id.
    items = [dataset[i] for i in reversed(range(len(dataset)))]
    batches = [(torch.stack([f for f, _, _ in items[k:k + 4]]),
                torch.stack([p for _, p, _ in items[k:k + 4]]),
                torch.tensor([i for _, _, i in items[k:k + 4]])) for k in range(0, len(items), 4)]
    return shares.ResidentClips.gather(batches, torch.device("cpu"))


def epoch_ids(data, epoch: int) -> list[int]:
    return [int(i) for batch in data.batches(epoch) for i in batch[2]]


def test_the_deal_gives_every_rank_as_many_items_and_never_one_twice():
    for seed in (None, 7):
        dealt = [shares.deal(10, 3, rank, seed).tolist() for rank in range(3)]
        assert [len(d) for d in dealt] == [3, 3, 3]
        assert len({i for d in dealt for i in d}) == 9
    assert shares.deal(10, 3, 0, None).tolist() == [0, 3, 6]
    assert shares.deal(10, 3, 0, 1).tolist() != shares.deal(10, 3, 0, 2).tolist()


def test_resident_clips_are_kept_in_id_order_and_gathered_whole(pack):
    clips = resident(pack)
    dataset = packs.ParquetClipDataset(pack)
    assert clips.ids.tolist() == list(range(len(dataset)))
    assert clips.nbytes == shares.decoded_bytes(len(dataset), config())
    data = clips.epochs(config(), rank=0, world=1)
    for frames, poses, ids in data.batches(0):
        assert frames.dtype == torch.uint8 and frames.shape[1:] == (CLIP_LEN, 3, 32, 64)
        for k, clip in enumerate(ids.tolist()):
            assert torch.equal(frames[k], dataset[clip][0])
            assert torch.equal(poses[k], dataset[clip][1])


def test_resident_epochs_deal_the_clips_anew_each_epoch_to_every_rank(pack):
    clips, cfg = resident(pack), config()
    ranks = [clips.epochs(cfg, rank, 2) for rank in range(2)]
    assert ranks[0].steps_per_epoch == 2  # 6 clips / 2 ranks = 3 each, batches of 2
    for epoch in range(3):
        dealt = [epoch_ids(r, epoch) for r in ranks]
        assert [len(d) for d in dealt] == [3, 3] and not set(dealt[0]) & set(dealt[1])
        assert epoch_ids(ranks[0], epoch) == dealt[0]  # the same epoch, the same draw
    assert len({tuple(sorted(epoch_ids(ranks[0], e))) for e in range(4)}) > 1
    in_order = clips.epochs(config("data.shuffle=false"), 0, 1)
    assert epoch_ids(in_order, 0) == epoch_ids(in_order, 1) == list(range(6))


def test_a_clip_id_twice_is_refused():
    batch = (torch.zeros(2, 2, 3, 4, 4, dtype=torch.uint8),) * 2 + (torch.tensor([3, 3]),)
    with pytest.raises(DataError, match="clip id twice"):
        shares.ResidentClips.gather([batch], torch.device("cpu"))


def test_the_budget_decides_resident_or_streamed():
    cfg = config("data.resident_mb=1")
    per_clip = 2 * CLIP_LEN * 3 * 32 * 64  # frames and poses, uint8
    assert shares.decoded_bytes(10, cfg) == 10 * per_clip
    assert shares.fits_resident(2**20 // per_clip, cfg)
    assert not shares.fits_resident(2**20 // per_clip + 1, cfg)
    assert not shares.fits_resident(1, config("data.resident_mb=0"))


def test_streamed_ranks_read_only_their_own_files_and_as_many_clips(pack):
    dataset = packs.ParquetClipDataset(pack)
    files = [set(r) for r in dataset.shard_ranges()]  # 3 files of 2 clips
    cfg = config("train.batch_size=1")
    ranks = [shares.streamed_epochs(dataset, cfg, rank, 2) for rank in range(2)]
    assert ranks[0].steps_per_epoch == 2  # 3 files // 2 ranks = 1 file each, 2 clips
    seen_files = set()
    for epoch in range(4):
        dealt = [epoch_ids(r, epoch) for r in ranks]
        assert [len(d) for d in dealt] == [2, 2] and not set(dealt[0]) & set(dealt[1])
        for ids in dealt:  # a rank's clips are one file's, read whole
            owner = [k for k, f in enumerate(files) if set(ids) <= f]
            assert len(owner) == 1
            seen_files.add(owner[0])
    assert len(seen_files) >= 2  # the deal changes from epoch to epoch


def test_streaming_needs_a_file_per_rank(pack):
    with pytest.raises(DataError, match="3 Parquet file.* for 4 workers"):
        shares.streamed_epochs(packs.ParquetClipDataset(pack), config(), 0, 4)
