"""Parquet clip packs (cvae.packs)."""

from __future__ import annotations

import json
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import cvae.packs as cp
from cvae.errors import DataError
from cvae.lab_folder import ClipDataset, load_videos
from cvae.packs import (
    ParquetClipDataset,
    check_pack,
    decode_batch,
    load_val_videos,
    pack,
    read_meta,
)

T, H, W = 2, 8, 16


@pytest.fixture
def packed(lab, tmp_path):
    """(lab root, pack folder): 5 clips of 2 frames, 2 rows per file -> 3 train files."""
    out = tmp_path / "pack"
    pack(lab, out, clip_len=T, height=H, width=W, rows_per_file=2, progress=False)
    return lab, out


def test_pack_matches_clip_dataset(packed):
    lab, out = packed
    ref = ClipDataset(lab, "train", clip_len=T, height=H, width=W)
    ds = ParquetClipDataset(out)
    assert len(ds) == len(ref) == 5
    for i in range(len(ref)):
        f1, p1, c1 = ref[i]
        f2, p2, c2 = ds[i]
        assert f2.dtype == torch.uint8 and f2.shape == (T, 3, H, W)
        assert torch.equal(f1, f2) and torch.equal(p1, p2) and c1 == c2
    assert torch.equal(ds[-1][0], ref[4][0])
    with pytest.raises(IndexError):
        ds[5]
    # picklable for DataLoader workers, without its decoded tables
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._cache and torch.equal(clone[3][1], ref[3][1])


def test_metadata_recorded(packed):
    lab, out = packed
    assert sorted(p.name for p in (out / "train").iterdir()) == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    meta = read_meta(out)
    assert meta == json.loads((out / "meta.json").read_text())
    tr, va = meta["splits"]["train"], meta["splits"]["val"]
    assert (tr["height"], tr["width"], tr["clip_len"], tr["num_clips"]) == (H, W, T, 5)
    assert tr["rows"] == [2, 2, 1] and va["clip_len"] == 6 and va["num_clips"] == 1
    schema = pq.read_schema(out / "train/part-00001.parquet")
    shard = json.loads(schema.metadata[b"cvae"])
    assert shard == {"format": "cvae-clips/1", "height": H, "width": W, "clip_len": T,
                     "num_clips": 5, "source": str(lab.absolute()), "split": "train"}
    assert schema.field("clip_id").type == pa.int64()
    assert schema.field("video_id").type == pa.int32()
    table = pq.read_table(out / "train/part-00001.parquet")
    assert table.column("video_id").to_pylist() == [1, 1]
    assert table.column("start_frame").to_pylist() == [5, 7]
    check_pack(out, height=H, width=W, clip_len=T)
    check_pack(out / "train", height=H, width=W, clip_len=T)  # a split folder works too


def test_val_row_equals_load_videos(packed):
    lab, out = packed
    frames, poses = load_val_videos(out)
    f, p = load_videos(lab, "val", height=H, width=W)
    assert frames.shape == (1, 6, 3, H, W)
    assert torch.equal(frames, f) and torch.equal(poses, p)


def test_several_val_videos_are_one_row_each_at_the_shortest_length(make_lab, tmp_path):
    lab = make_lab(tmp_path / "lab", val=(6, 4, 5))
    out = tmp_path / "pack"
    made = pack(lab, out, clip_len=T, height=H, width=W, progress=False)
    assert made["splits"]["val"]["num_clips"] == 3 and made["splits"]["val"]["clip_len"] == 4
    table = pq.read_table(out / "val/part-00000.parquet")
    assert table.column("video_id").to_pylist() == [0, 1, 2]
    assert table.column("start_frame").to_pylist() == [0, 6, 10]
    frames, poses = load_val_videos(out)
    f, p = load_videos(lab, "val", height=H, width=W)
    assert frames.shape == (3, 4, 3, H, W)
    assert torch.equal(frames, f) and torch.equal(poses, p)


def test_decode_batch(packed):
    lab, out = packed
    table = pq.read_table(out / "train/part-00000.parquet")
    batch = {k: table.column(k).to_numpy(zero_copy_only=False) for k in table.column_names}
    frames, poses, ids = decode_batch(batch, height=H, width=W, clip_len=T)
    ref = ClipDataset(lab, "train", clip_len=T, height=H, width=W)
    assert frames.shape == (2, T, 3, H, W) and ids.tolist() == [0, 1]
    assert torch.equal(frames[1], ref[1][0]) and torch.equal(poses[0], ref[0][1])
    with pytest.raises(DataError, match="frames row has"):
        decode_batch(batch, height=H, width=W, clip_len=T + 1)


def test_wrong_frame_size_and_clip_len(packed):
    _, out = packed
    with pytest.raises(DataError, match=r"meta.json: frame size 8x16 .* but 32x64 expected"):
        check_pack(out, height=32, width=64, clip_len=T)
    with pytest.raises(DataError, match=r"meta.json: clip length 2 .* but 16 expected"):
        check_pack(out, height=H, width=W, clip_len=16)
    # a shard that disagrees with meta.json is named
    shard = out / "train/part-00002.parquet"
    table = pq.read_table(shard)
    meta = json.loads(table.schema.metadata[b"cvae"])
    meta["clip_len"] = 3
    pq.write_table(table.replace_schema_metadata({b"cvae": json.dumps(meta)}), shard)
    with pytest.raises(DataError, match=r"part-00002.parquet: clip length 3 .* but 2 expected"):
        check_pack(out, height=H, width=W, clip_len=T)


def test_wrong_schema_and_missing_metadata(packed):
    _, out = packed
    shard = out / "train/part-00001.parquet"
    table = pq.read_table(shard)
    pq.write_table(table.drop_columns(["poses"]), shard)
    with pytest.raises(DataError, match=r"part-00001.parquet: wrong schema"):
        check_pack(out, height=H, width=W, clip_len=T)
    with pytest.raises(DataError, match=r"part-00001.parquet: wrong schema"):
        ParquetClipDataset(out)
    pq.write_table(table.replace_schema_metadata(None), shard)
    with pytest.raises(DataError, match=r"part-00001.parquet: missing 'cvae'"):
        check_pack(out, height=H, width=W, clip_len=T)


def test_not_a_pack(tmp_path, lab):
    with pytest.raises(DataError, match="not a clip pack"):
        read_meta(lab)
    (tmp_path / "m").mkdir()
    (tmp_path / "m/meta.json").write_text(json.dumps({"format": "cvae-clips/1"}))
    with pytest.raises(DataError, match=r"m/meta.json: malformed metadata"):
        ParquetClipDataset(tmp_path / "m")


def test_pack_into_non_empty_out(lab, tmp_path):
    out = tmp_path / "pack"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="pack: exists, not empty"):
        pack(lab, out, clip_len=T, height=H, width=W, progress=False)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    # an empty out folder is fine
    (out / "keep.txt").unlink()
    pack(lab, out, clip_len=T, height=H, width=W, progress=False)
    assert (out / "meta.json").is_file()


def test_failed_pack_leaves_nothing(lab, tmp_path, monkeypatch):
    real = cp._write_shard
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(cp, "_write_shard", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        pack(lab, tmp_path / "pack", clip_len=T, height=H, width=W, rows_per_file=2,
             progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab"]  # no out, no temp dir


@pytest.mark.ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from inside Ray Data
def test_ray_reads_shards(packed):
    ray = pytest.importorskip("ray")
    lab, out = packed
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(str(out / "train"))
        assert ds.count() == 5
        ref = ClipDataset(lab, "train", clip_len=T, height=H, width=W)
        seen = []
        for batch in ds.iter_batches(batch_format="numpy", batch_size=2):
            frames, poses, ids = decode_batch(batch, height=H, width=W, clip_len=T)
            for j, cid in enumerate(ids.tolist()):
                assert torch.equal(frames[j], ref[cid][0]) and torch.equal(poses[j], ref[cid][1])
                seen.append(cid)
        assert sorted(seen) == list(range(5))
    finally:
        ray.shutdown()


def test_shard_shuffle_sampler_visits_every_clip_once_shard_by_shard():
    from cvae.packs import ShardShuffleSampler

    shards = [range(0, 4), range(4, 8), range(8, 11)]
    order = list(ShardShuffleSampler(shards, torch.Generator().manual_seed(0)))
    assert sorted(order) == list(range(11)) and len(order) == 11
    # each shard's clips come together, so each shard is decoded once per epoch
    runs = [next(k for k, r in enumerate(shards) if i in r) for i in order]
    assert sum(1 for a, b in zip(runs[:-1], runs[1:], strict=True) if a != b) == len(shards) - 1
    again = list(ShardShuffleSampler(shards, torch.Generator().manual_seed(0)))
    other = list(ShardShuffleSampler(shards, torch.Generator().manual_seed(1)))
    assert order == again and order != other  # seeded: a resumed run replays its order

