"""The Ray Train worker's own pieces that run without a Ray start: reading the checkpoint a
restarted run resumes from, as every rank of a node does at once."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
import torch

from cvae.checkpoint import CHECKPOINT_FILE, FORMAT
from cvae.errors import CvaeError
from ray_jobs.worker import checkpoint_state, validation_threads

RANKS = 3  # processes that load one checkpoint at once, as the ranks of one node do
ROUNDS = 2
CHUNK = 2**20  # what one read of the slow storage returns, after a pause


class SlowStorage(pafs.FileSystemHandler):
    """A remote storage as a restarted rank sees it: a local folder behind a pyarrow filesystem
    that is not a LocalFileSystem (so Ray downloads from it) and that returns each read after a
    pause (so a download takes a while, as from a bucket)."""

    def __init__(self, pause: float = 0.02):
        self.fs, self.pause = pafs.LocalFileSystem(), pause

    def __reduce__(self):
        return SlowStorage, (self.pause,)

    def open_input_stream(self, path):
        return pa.PythonFile(_SlowReader(self.fs.open_input_stream(path), self.pause), mode="r")

    def open_input_file(self, path):
        return self.open_input_stream(path)

    def get_type_name(self):
        return "slow-local"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    # Writes, moves and deletes: the local filesystem's own.
    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refused")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_output_stream(self, path, metadata):
        return self.fs.open_output_stream(path)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path)


class _SlowReader:
    def __init__(self, stream, pause: float):
        self.stream, self.pause, self.closed = stream, pause, False

    def read(self, n: int = -1) -> bytes:
        time.sleep(self.pause)
        return self.stream.read(CHUNK if n is None or n < 0 else min(n, CHUNK))

    def close(self) -> None:
        self.stream.close()
        self.closed = True


def _checkpoint(folder: Path, epoch: int = 4, megabytes: int = 4):
    """A Ray Checkpoint in the slow storage holding a checkpoint.pt of `megabytes` MB."""
    import ray.train

    folder.mkdir(parents=True)
    torch.save({"format": FORMAT, "epoch": epoch, "config": {},
                "model": {"w": torch.arange(megabytes * 2**18, dtype=torch.float32)}},
               folder / CHECKPOINT_FILE)
    return ray.train.Checkpoint(str(folder), filesystem=pafs.PyFileSystem(SlowStorage()))


def _load_rounds(pickled: bytes, start) -> list[int]:
    """One rank: unpickle the checkpoint object (the same one every rank gets) and load it a
    few times, all ranks starting together; returns the epochs read."""
    checkpoint = pickle.loads(pickled)
    start.wait()
    return [checkpoint_state(checkpoint)["epoch"] for _ in range(ROUNDS)]


def _late_rank(pickled: bytes, start, done) -> None:
    """A rank that arrives after the first download finished: `Checkpoint.as_directory()`
    downloads again into the node's one folder for this checkpoint, over the file another rank
    may be reading. This one does so until the loading ranks are done."""
    checkpoint = pickle.loads(pickled)
    start.wait()
    while not done.is_set():
        checkpoint.to_directory()


@pytest.mark.timeout(300)
def test_ranks_loading_one_checkpoint_at_once_all_read_it_whole(tmp_path):
    pickled = pickle.dumps(_checkpoint(tmp_path / "run" / "checkpoint_000003"))
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(RANKS + 1) as pool:
        start, done = manager.Barrier(RANKS + 1), manager.Event()
        late = pool.apply_async(_late_rank, (pickled, start, done))
        results = pool.starmap(_load_rounds, [(pickled, start)] * RANKS)
        done.set()
        late.get(timeout=60)
    assert results == [[4] * ROUNDS] * RANKS


def test_a_truncated_checkpoint_in_storage_is_one_error_naming_it(tmp_path):
    import ray.train

    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 not a whole file")
    checkpoint = ray.train.Checkpoint(str(folder), filesystem=pafs.PyFileSystem(SlowStorage(0)))
    with pytest.raises(CvaeError, match=rf"{CHECKPOINT_FILE}: not a readable checkpoint"):
        checkpoint_state(checkpoint)


def test_rank_0_validates_on_the_cpus_its_nodes_waiting_workers_reserved():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert validation_threads(-1, cpu, 2, 1.0) == 2  # the quickstart: 2 workers of 1 CPU
    assert validation_threads(-1, cpu, 1, 2.0) == 2
    assert validation_threads(-1, cpu, 4, 0.25) == 1  # 4 workers sharing one CPU
    assert validation_threads(-1, cpu, 3, 0.25) == 1  # at least 1
    assert validation_threads(-1, gpu, 4, 1.0) == 0  # a GPU: unchanged
    assert validation_threads(0, cpu, 2, 1.0) == 0  # as in training
    assert validation_threads(3, cpu, 2, 1.0) == 3
