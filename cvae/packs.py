"""Parquet shards of clips, for Ray Data (and a plain Dataset over the same files).

A pack folder::

    <out>/meta.json                 {"format": "cvae-clips/1", "height", "width", "source",
                                     "splits": {"train": {...}, "val": {...}}}
    <out>/train/part-00000.parquet  rows_per_file clips each
    <out>/val/part-00000.parquet    one row per validation video (all of one length)

Row schema: clip_id int64, video_id int32, start_frame int32, frames binary, poses binary,
where frames/poses are the raw C-contiguous uint8 bytes of a [T,3,H,W] tensor. Each file's
schema metadata ``b"cvae"`` holds the split's JSON metadata, so a shard is self-describing.
"""

from __future__ import annotations

import bisect
import json
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from cvae import storage
from cvae.errors import ConfigError, DataError
from cvae.lab_folder import ClipDataset, frame_number, load_videos, split_videos
from cvae.storage import atomic_path

__all__ = [
    "FORMAT",
    "SCHEMA",
    "ParquetClipDataset",
    "check_pack",
    "decode_batch",
    "load_val_videos",
    "pack",
    "read_meta",
    "split_meta",
]

FORMAT = "cvae-clips/1"
META_KEY = b"cvae"
SPLITS = ("train", "val")
SCHEMA = pa.schema([
    ("clip_id", pa.int64()),
    ("video_id", pa.int32()),
    ("start_frame", pa.int32()),
    ("frames", pa.binary()),
    ("poses", pa.binary()),
])


# ---------------------------------------------------------------- writing

def _write_shard(path: Path, rows: list[tuple[int, int, int, bytes, bytes]],
                 meta: dict) -> None:
    cols = list(zip(*rows, strict=True))
    schema = SCHEMA.with_metadata({META_KEY: json.dumps(meta).encode()})
    arrays = [pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA, strict=True)]
    table = pa.Table.from_arrays(arrays, schema=schema)
    pq.write_table(table, path, row_group_size=len(rows))


def _split_info(meta: dict, split: str, clip_len: int, num_clips: int, files: list[str],
                rows: list[int]) -> dict:
    return {"format": FORMAT, "height": meta["height"], "width": meta["width"],
            "clip_len": clip_len, "num_clips": num_clips, "source": meta["source"],
            "split": split, "files": files, "rows": rows}


def _shard_meta(info: dict) -> dict:
    """What goes into each file's schema metadata (no file list: a shard describes itself)."""
    return {k: info[k] for k in ("format", "height", "width", "clip_len", "num_clips",
                                 "source", "split")}


def pack(root: str | Path, out: str | Path, *, clip_len: int = 16, height: int = 32,
         width: int = 64, rows_per_file: int = 64, progress: bool = True) -> dict:
    """Write the train clips and the val video of a lab-layout folder as Parquet shards.

    All-or-nothing: files are written to a temp sibling of ``out`` which is renamed at the
    end. Returns the contents of meta.json plus ``out`` and ``seconds``.
    """
    t0 = time.perf_counter()
    if rows_per_file < 1:
        raise ConfigError(f"rows_per_file must be >= 1, got {rows_per_file}")
    root, out = Path(root).absolute(), Path(out).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists, not empty")
    # check both splits before the long part, so a bad val folder fails fast
    train = ClipDataset(root, "train", clip_len=clip_len, height=height, width=width)
    split_videos(root, "val")
    meta = {"format": FORMAT, "height": height, "width": width, "source": str(root)}
    with atomic_path(out) as tmp:
        meta["splits"] = {
            "train": _write_train(train, tmp / "train", meta, rows_per_file, progress),
            "val": _write_val(root, tmp / "val", meta),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {**meta, "out": str(out), "seconds": time.perf_counter() - t0}


def _write_train(train: ClipDataset, folder: Path, meta: dict, rows_per_file: int,
                 progress: bool) -> dict:
    """The training clips as shards of `rows_per_file` clips; returns the split's metadata."""
    folder.mkdir(parents=True)
    n = len(train)
    files, counts = [], []
    info = _split_info(meta, "train", train.clip_len, n, files, counts)
    rows = []
    for i in tqdm(range(n), desc="pack train", unit="clip", disable=not progress):
        frames, poses, clip_id = train[i]  # uint8 [T,3,H,W] each
        ref = train.clips[i]
        rows.append((clip_id, ref.video_id, ref.start_frame,
                     frames.numpy().tobytes(), poses.numpy().tobytes()))
        if len(rows) == rows_per_file or i == n - 1:
            name = f"part-{len(files):05d}.parquet"
            _write_shard(folder / name, rows, _shard_meta(info))
            files.append(name)
            counts.append(len(rows))
            rows = []
    return info


def _write_val(root: Path, folder: Path, meta: dict) -> dict:
    """The validation videos, one row each, all cut to the shortest one's length (they roll
    out together as one batch); returns the split's metadata."""
    folder.mkdir(parents=True)
    frames, poses = load_videos(root, "val", height=meta["height"], width=meta["width"])
    _, _, videos = split_videos(root, "val")
    count = len(videos)
    info = _split_info(meta, "val", frames.shape[1], count, ["part-00000.parquet"], [count])
    rows = [(i, video.video_id, frame_number(Path(video.names[0])), video_frames.numpy().tobytes(),
             video_poses.numpy().tobytes())
            for i, (video, video_frames, video_poses)
            in enumerate(zip(videos, frames, poses, strict=True))]
    _write_shard(folder / "part-00000.parquet", rows, _shard_meta(info))
    return info


# ---------------------------------------------------------------- reading / checking

def pack_root(folder: str | Path) -> str:
    """The pack's location (a local path or a URI); a split folder (``<pack>/train``) is
    accepted too."""
    folder = str(folder)
    if storage.name(folder) in SPLITS and not storage.exists(storage.join(folder, "meta.json")):
        parent = storage.parent(folder)
        if storage.exists(storage.join(parent, "meta.json")):
            return parent
    return folder


def read_meta(folder: str | Path) -> dict:
    """meta.json of a pack, checked for shape (not against the shards; see check_pack)."""
    root = pack_root(folder)
    path = storage.join(root, "meta.json")
    if not storage.exists(path):
        raise DataError(f"{root}: not a clip pack (no meta.json)")
    meta = storage.read_json(path, "pack metadata")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a clip pack (format is not {FORMAT!r})")
    try:
        for split in SPLITS:
            s = meta["splits"][split]
            for k in ("height", "width", "clip_len", "num_clips"):
                int(s[k])
            if len(s["files"]) != len(s["rows"]) or sum(s["rows"]) != s["num_clips"]:
                raise ValueError("file list does not add up to num_clips")
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed metadata ({type(err).__name__}: {err})") from None
    return meta


def split_meta(folder: str | Path, split: str = "train") -> dict:
    """The metadata of one split of a pack (height, width, clip_len, num_clips, files, rows)."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    return read_meta(folder)["splits"][split]


def _shard_schema_meta(path: str) -> dict:
    """Check one shard's schema; return its ``cvae`` metadata."""
    fs, inner = storage.open_location(path)
    try:
        schema = pq.read_schema(inner, filesystem=fs)
    except FileNotFoundError:
        raise DataError(f"{path}: shard not found") from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"{path}: not a Parquet file ({err})") from None
    got = pa.schema([(f.name, f.type) for f in schema])
    if not got.equals(SCHEMA):
        raise DataError(f"{path}: wrong schema ({', '.join(f'{f.name}: {f.type}' for f in got)}),"
                        f" expected ({', '.join(f'{f.name}: {f.type}' for f in SCHEMA)})")
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(f"{path}: missing {META_KEY.decode()!r} schema metadata")
    try:
        meta = json.loads(raw)
        for k in ("height", "width", "clip_len"):
            int(meta[k])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed {META_KEY.decode()!r} metadata ({err})") from None
    return meta


def _compare(path: str, meta: dict, *, height: int | None, width: int | None,
             clip_len: int | None) -> None:
    if height is not None and width is not None \
            and (meta["height"], meta["width"]) != (height, width):
        raise DataError(f"{path}: frame size {meta['height']}x{meta['width']} (HxW) in the "
                        f"pack, but {height}x{width} expected")
    if clip_len is not None and meta["clip_len"] != clip_len:
        raise DataError(f"{path}: clip length {meta['clip_len']} in the pack, "
                        f"but {clip_len} expected")


def check_pack(folder: str | Path, *, height: int, width: int, clip_len: int) -> dict:
    """Check a pack against the model's frame size and clip length; return its metadata.

    Reads meta.json and every train shard's footer (cheap); val is checked for frame size.
    """
    root = pack_root(folder)
    meta = read_meta(root)
    _compare(storage.join(root, "meta.json"), meta["splits"]["train"], height=height, width=width,
             clip_len=clip_len)
    for split in SPLITS:
        s = meta["splits"][split]
        for name in s["files"]:
            path = storage.join(root, split, name)
            shard = _shard_schema_meta(path)
            _compare(path, shard, height=height, width=width,
                     clip_len=clip_len if split == "train" else s["clip_len"])
    return meta


# ---------------------------------------------------------------- decoding

def _binary_views(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int, data uint8) of a binary column, zero-copy."""
    arr = col.combine_chunks()
    if arr.null_count:
        raise ValueError("null values")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None \
        else np.zeros(0, np.uint8)
    return offsets, data


class _Table:
    """One decoded shard: the binary columns as (offsets, bytes) plus the clip ids."""

    def __init__(self, path: str, shape: tuple[int, ...]):
        self.path, self.shape = path, shape
        fs, inner = storage.open_location(path)
        try:
            table = pq.read_table(inner, filesystem=fs)
            self.clip_ids = table.column("clip_id").to_numpy()
            self.frames = _binary_views(table.column("frames"))
            self.poses = _binary_views(table.column("poses"))
        except (OSError, KeyError, ValueError, pa.ArrowException) as err:
            raise DataError(f"{path}: unreadable shard ({err})") from None

    def tensor(self, views: tuple[np.ndarray, np.ndarray], row: int) -> torch.Tensor:
        offsets, data = views
        buf = data[offsets[row]:offsets[row + 1]]
        if buf.size != int(np.prod(self.shape)):
            raise DataError(f"{self.path}: row {row} has {buf.size} bytes, expected "
                            f"{int(np.prod(self.shape))} for a {list(self.shape)} uint8 clip")
        return torch.from_numpy(buf.copy()).view(self.shape)  # copy: arrow memory is read-only


class ParquetClipDataset(torch.utils.data.Dataset):
    """A pack's split as a Dataset: item i -> (frames uint8 [T,3,H,W], poses, clip_id).

    Lazy: construction reads meta.json and the shard footers; items decode one shard at a
    time, keeping the two most recent in memory. Shuffle it with `ShardShuffleSampler`, which
    decodes every shard once per epoch; a plain random sampler would decode one per clip.
    """

    CACHE = 2

    def __init__(self, folder: str | Path, split: str = "train"):
        self.root = pack_root(folder)
        self.split = split
        self.meta = split_meta(self.root, split)
        self.height, self.width = self.meta["height"], self.meta["width"]
        self.clip_len = self.meta["clip_len"]
        self.shape = (self.clip_len, 3, self.height, self.width)  # [T,3,H,W]
        self.files = [storage.join(self.root, split, n) for n in self.meta["files"]]
        for path in self.files:
            _compare(path, _shard_schema_meta(path), height=self.height, width=self.width,
                     clip_len=self.clip_len)
        self._ends = np.cumsum(self.meta["rows"]).tolist()  # row i lives in the first end > i
        self._cache: OrderedDict[int, _Table] = OrderedDict()

    def __len__(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __getstate__(self) -> dict:
        # DataLoader workers get a copy: don't ship decoded tables to them
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()
        return state

    def _table(self, k: int) -> _Table:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        table = _Table(self.files[k], self.shape)
        if len(table.clip_ids) != self.meta["rows"][k]:
            raise DataError(f"{self.files[k]}: {len(table.clip_ids)} rows, meta.json says "
                            f"{self.meta['rows'][k]}")
        self._cache[k] = table
        while len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)
        return table

    def shard_ranges(self) -> list[range]:
        """The dataset indices each shard holds, in shard order."""
        starts = [0, *self._ends[:-1]]
        return [range(a, b) for a, b in zip(starts, self._ends, strict=True)]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"clip {i} out of range for {n} clips")
        k = bisect.bisect_right(self._ends, i)
        row = i - (self._ends[k - 1] if k else 0)
        t = self._table(k)
        return t.tensor(t.frames, row), t.tensor(t.poses, row), int(t.clip_ids[row])


class ShardShuffleSampler(torch.utils.data.Sampler[int]):
    """Shards in a random order, the clips of each shard in a random order.

    Every shard is decoded once per epoch (a uniform shuffle over a pack of many shards decodes
    one shard per clip: 6.7x slower reads with 3 shards, BENCHMARKS.md section 4); batches mix
    clips of one shard, except at shard boundaries.
    """

    def __init__(self, shards: list[range], generator: torch.Generator):
        self.shards, self.generator = shards, generator

    def __len__(self) -> int:
        return sum(len(r) for r in self.shards)

    def __iter__(self):
        for k in torch.randperm(len(self.shards), generator=self.generator).tolist():
            rows = self.shards[k]
            order = torch.randperm(len(rows), generator=self.generator).tolist()
            yield from (rows[i] for i in order)


def decode_batch(batch: dict, *, height: int, width: int, clip_len: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A Ray Data numpy batch -> (frames uint8 [B,T,3,H,W], poses uint8 [B,T,3,H,W],
    clip_ids int64 [B]). ``batch["frames"]`` is an object array of bytes, one per row."""
    shape = (clip_len, 3, height, width)
    size = int(np.prod(shape))
    out = []
    for key in ("frames", "poses"):
        items = batch[key]
        for b in items:
            if len(b) != size:
                raise DataError(f"a {key} row has {len(b)} bytes, expected {size} for "
                                f"{list(shape)} uint8 (pack made with another frame size "
                                f"or clip length?)")
        buf = np.frombuffer(b"".join(bytes(b) for b in items), dtype=np.uint8)
        out.append(torch.from_numpy(buf.copy()).view(len(items), *shape))
    clip_ids = torch.from_numpy(np.array(batch["clip_id"], dtype=np.int64))  # a writable copy
    return out[0], out[1], clip_ids


def load_val_videos(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The pack's validation videos (one in a pack made from a single video): (frames, poses)
    uint8 [V,T,3,H,W]."""
    ds = ParquetClipDataset(folder, "val")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([f for f, _, _ in items]), torch.stack([p for _, p, _ in items])


def pack_to(root: str | Path, out: str | Path, **options) -> dict:
    """`pack` into a local folder or a URI (s3://bucket/prefix...): a remote pack is written
    locally first and uploaded whole; an existing pack there is never overwritten."""
    if not storage.is_uri(out):
        return pack(root, out, **options)
    if storage.list_names(out):
        raise DataError(f"{out}: exists, not empty")
    with tempfile.TemporaryDirectory(prefix="cvae-pack-") as tmp:
        result = pack(root, Path(tmp) / "pack", **options)
        storage.copy_tree(Path(tmp) / "pack", out)
    return {**result, "out": str(out)}
