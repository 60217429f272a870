"""Distributed training on Ray (`python -m ray_jobs.train`).

One embedded Ray for the whole module (a start costs ~30 s here). The bad-input tests need no
Ray: they check that the entrypoint refuses before connecting. The sharding and recovery tests
watch what each worker trains on through `build_trainer(wrap_batches=...)` (`record_and_fail`).
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import ray.cloudpickle
from conftest import TINY_MODEL_SETS, metrics_rows, set_flags

from cvae import packs, synth
from cvae.checkpoint import RAY_SNAPSHOT_FILE, load_checkpoint
from ray_jobs import common
from ray_jobs import train as ray_train

CLIP_LEN, HEIGHT, WIDTH = 4, 32, 64
NUM_CLIPS = 8  # 2 videos x 16 frames / clip_len 4
TINY = set_flags(*TINY_MODEL_SETS, f"data.clip_len={CLIP_LEN}", "validation.val_len=6",
                 "run.progress=false", "test.seq_len=6")
COMPARED = ("loss", "mse", "kl", "val_psnr")
# Observed agreement ~1e-6 (the Ray worker may run torch on another thread count than
# cvae-train); a different clip order already moves kl by ~6e-4, so 1e-3 would be too loose.
RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    synth.generate(root, train_videos=2, frames_per_video=16, val_frames=10, test_sequences=2,
                   test_frames=6, height=HEIGHT, width=WIDTH, progress=False)
    return root


@pytest.fixture(scope="module")
def ray_session():
    """One embedded Ray for the module; `common.connect` reuses it."""
    import ray

    saved = os.environ.pop("RAY_ADDRESS", None)
    # address="local": always a fresh local Ray, even if a killed head left
    # /tmp/ray/ray_current_cluster behind. 4 logical CPUs on 2 cores: Ray Data's read tasks need
    # a whole free CPU beside the train workers, or they wait forever.
    ray.init(address="local", num_cpus=4, include_dashboard=True, log_to_driver=False,
             logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def run_main(main, argv: list[str], capsys) -> tuple[int, str, str]:
    """Call a cli_entry main in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def best_checkpoint_line(stdout: str) -> str:
    found = re.findall(r"^best checkpoint: (.+)$", stdout, flags=re.M)
    assert found, stdout
    return found[-1].strip()


def clip_ids(out: Path, epoch: int, rank: int) -> list[int]:
    file = out / "clip_ids" / f"epoch{epoch}_rank{rank}.txt"
    assert file.is_file(), f"{file} missing"
    return [int(line) for line in file.read_text().split()]


def clip_file_mtimes(out: Path, epochs: range) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for e in epochs
            for p in (out / "clip_ids").glob(f"epoch{e}_rank*.txt")}


def latest_checkpoint(out: Path) -> dict:
    """The newest checkpoint in the run's storage (run.json names it)."""
    storage = Path(json.loads((out / "run.json").read_text())["storage"])
    found = [load_checkpoint(p) for p in storage.glob("checkpoint_*/checkpoint.pt")]
    assert found, f"no checkpoint in {storage}"
    return max(found, key=lambda state: state["epoch"])


def assert_exact_partition(out: Path, epoch: int, world: int) -> None:
    per_rank = [clip_ids(out, epoch, r) for r in range(world)]
    merged = [i for ids in per_rank for i in ids]
    assert len(merged) == len(set(merged)), f"epoch {epoch}: a clip trained twice {per_rank}"
    assert sorted(merged) == list(range(NUM_CLIPS)), f"epoch {epoch}: {per_rank}"
    assert len({len(ids) for ids in per_rank}) == 1, f"epoch {epoch}: uneven shards {per_rank}"


# ---- bad input: refused before Ray is touched -------------------------------------------------

def _bad_root(kind: str, tmp_path: Path, tiny_data: Path) -> Path:
    if kind == "missing":
        return tmp_path / "no_such_data"
    if kind == "empty":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty"
    if kind == "pack_frame_size":
        return Path(packs.pack(tiny_data, tmp_path / "pack16", clip_len=CLIP_LEN, height=16,
                                 width=32, progress=False)["out"])
    if kind == "pack_clip_len":
        return Path(packs.pack(tiny_data, tmp_path / "pack8", clip_len=8, height=HEIGHT,
                                 width=WIDTH, progress=False)["out"])
    raise AssertionError(kind)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["missing", "empty", "pack_frame_size", "pack_clip_len"])
def test_bad_data_fails_before_any_worker(kind, tmp_path, tiny_data, monkeypatch, capsys):
    root = _bad_root(kind, tmp_path, tiny_data)

    def no_ray(*args, **kwargs):
        raise AssertionError("the entrypoint connected to Ray before checking its data")

    monkeypatch.setattr(common, "connect", no_ray)
    capsys.readouterr()
    start = time.monotonic()
    code, _, err = run_main(ray_train.main, [
        "--data", str(root), "--out", str(tmp_path / "out"), "--epochs", "1", *TINY,
    ], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(root) in lines[0], lines[0]
    assert "Traceback" not in err
    assert time.monotonic() - start < 30


# ---- on the embedded Ray ----------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.timeout(300)
def test_fails_fast_when_the_cluster_cannot_fit(ray_session, tiny_data, tmp_path, capsys):
    start = time.monotonic()
    code, _, err = run_main(ray_train.main, [
        "--data", str(tiny_data), "--out", str(tmp_path / "out"), "--epochs", "1",
        "--num-workers", "64", *TINY,
    ], capsys)
    elapsed = time.monotonic() - start
    assert code == 2, err
    assert "cannot fit 64 workers" in err, err
    assert err.strip().count("\n") == 0, err
    assert elapsed < 60, f"took {elapsed:.0f} s: it waited instead of failing fast"


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_one_worker_reproduces_cvae_train(ray_session, tiny_data, tmp_path, capsys):
    from cvae import test_cli, train_cli

    common_args = ["--data", str(tiny_data), "--epochs", "2", "--set", "data.shuffle=false",
                   *TINY]
    single_out, ray_out = tmp_path / "single", tmp_path / "ray"
    code, _, err = run_main(train_cli.main, ["--out", str(single_out), *common_args], capsys)
    assert code == 0, err
    code, stdout, err = run_main(ray_train.main, [
        # one CPU = one torch thread, as the single process here: the same float reductions
        "--out", str(ray_out), "--num-workers", "1", "--cpus-per-worker", "1", *common_args,
    ], capsys)
    assert code == 0, err

    single, distributed = metrics_rows(single_out), metrics_rows(ray_out)
    assert [r["epoch"] for r in single] == [r["epoch"] for r in distributed] == ["1", "2"]
    for a, b in zip(single, distributed, strict=True):
        for key in COMPARED:
            assert float(b[key]) == pytest.approx(float(a[key]), rel=RTOL), (key, a, b)
        for key in ("beta", "tfr", "lr"):
            assert a[key] == b[key], key
    # The checkpoints live in the run's storage (default <out>/ray/<name>), run.json says where;
    # the lab folder was packed to Parquet there, where every node reads it.
    run = json.loads((ray_out / "run.json").read_text())
    assert Path(run["best_checkpoint"], "checkpoint.pt").is_file(), run
    assert (Path(run["storage"]) / "pack" / "meta.json").is_file(), run
    assert not (ray_out / "checkpoints").exists(), "checkpoints live in one place, the storage"

    # The Tester reads the Ray checkpoint folder the entrypoint points at.
    best = Path(best_checkpoint_line(stdout))
    assert best.is_dir() and str(best) == run["best_checkpoint"], best
    code, stdout, err = run_main(test_cli.main, [
        "--checkpoint", str(best), "--data", str(tiny_data), "--out", str(tmp_path / "test"),
        "--set", "test.seq_len=6", "--set", "run.progress=false",
    ], capsys)
    assert code == 0, err
    submission = tmp_path / "test" / "submission.csv"
    assert submission.is_file()
    header, *rows = submission.read_text().splitlines()
    assert len(rows) == 2 * 6  # 2 test sequences x seq_len 6
    assert len(header.split(",")) == 1 + 3 * HEIGHT * WIDTH


# Two workers, batch 1: 4 clips = 4 steps per worker per epoch. Global step 6 is the third step
# of epoch 2, so epoch 1's checkpoint exists and epoch 2 is half done when rank 1 dies.
STEPS_PER_EPOCH = NUM_CLIPS // 2
FAIL_AT_STEP = STEPS_PER_EPOCH + 2
FAIL_RANK = 1

# The Ray Train workers cannot import this test module: they get `record_and_fail` by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def wait_for_a_registered_checkpoint(out: Path, timeout: float = 60.0) -> None:
    """Block until Ray Train's controller lists a checkpoint in the run's storage. A worker's
    `report` returns once the checkpoint is uploaded; the controller registers it a moment
    later, and a crash before that restarts the run from scratch, which would make the
    resume-from-epoch-1 assertions depend on timing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for file in out.glob(f"ray/*/{RAY_SNAPSHOT_FILE}"):  # the run's storage: <out>/ray
            try:
                if json.loads(file.read_text())["checkpoint_results"]:
                    return
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint registered in {out}'s storage after {timeout} s")


def record_and_fail(batches, epoch: int, *, rank: int, out: str):
    """A worker's epoch iterator (`build_trainer(wrap_batches=...)`), watched and interrupted:

    - writes the clip ids this worker trains on to <out>/clip_ids/epoch<E>_rank<R>.txt, one per
      line, flushed per batch as it is handed to the training loop;
    - on rank FAIL_RANK, at global step FAIL_AT_STEP (epoch * STEPS_PER_EPOCH + step), before
      that step runs: writes <out>/.fault_injected ("epoch E step S", 1-based) unless it is there
      already (so a restarted worker does not fail again) and exits hard, as a lost worker would.
    """
    path = Path(out) / "clip_ids" / f"epoch{epoch + 1}_rank{rank}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    marker = Path(out) / ".fault_injected"
    with open(path, "w") as fh:
        for step, batch in enumerate(batches):
            fh.write("".join(f"{int(i)}\n" for i in batch[2]))
            fh.flush()
            if (rank == FAIL_RANK and epoch * STEPS_PER_EPOCH + step == FAIL_AT_STEP
                    and not marker.exists()):
                wait_for_a_registered_checkpoint(Path(out))
                marker.write_text(f"epoch {epoch + 1} step {step + 1}\n")
                os._exit(17)  # a hard crash
            yield batch


def watch_workers(mp: pytest.MonkeyPatch) -> None:
    """Make ray_jobs.train build its trainer with `record_and_fail` around every worker's data."""
    mp.setattr(common, "build_trainer",
               functools.partial(common.build_trainer, wrap_batches=record_and_fail))


@pytest.fixture(scope="module")
def recovered_run(ray_session, tiny_data, tmp_path_factory):
    """2 workers x 3 epochs, one injected worker crash in epoch 2, one restart allowed."""
    out = tmp_path_factory.mktemp("recovered") / "run"
    argv = [
        "--data", str(tiny_data), "--out", str(out), "--epochs", "3",
        "--num-workers", "2", "--max-failures", "1",
        "--set", "train.batch_size=1", *TINY,
    ]
    start = time.monotonic()
    with pytest.MonkeyPatch.context() as mp:
        watch_workers(mp)
        try:
            ray_train.main(argv)
        except SystemExit as exc:
            code = exc.code
        else:  # pragma: no cover - cli_entry always exits
            code = None
    return {"code": code, "out": out, "argv": argv, "seconds": time.monotonic() - start}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_two_workers_shard_exactly_and_survive_a_worker_crash(recovered_run):
    out = recovered_run["out"]
    assert recovered_run["code"] == 0
    marker = out / ".fault_injected"
    assert marker.is_file(), "the injected failure never happened"
    assert marker.read_text().startswith("epoch 2 step 3"), marker.read_text()
    rows = metrics_rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert all(r["val_psnr"] for r in rows)
    # The restarted workers resumed from epoch 1's checkpoint: epoch 1 was not trained again,
    # epoch 2 was (its clip-id files were rewritten after the crash).
    crashed = marker.stat().st_mtime_ns
    assert all(t < crashed for t in clip_file_mtimes(out, range(1, 2)).values())
    assert all(t > crashed for t in clip_file_mtimes(out, range(2, 4)).values())
    for epoch in (1, 2, 3):
        assert_exact_partition(out, epoch, world=2)
        for rank in (0, 1):
            assert len(clip_ids(out, epoch, rank)) == STEPS_PER_EPOCH
    # Each epoch deals the clips to the ranks anew (seeded by epoch).
    assert len({frozenset(clip_ids(out, epoch, 0)) for epoch in (1, 2, 3)}) > 1
    assert latest_checkpoint(out)["epoch"] == 3


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_resume_continues_and_a_fresh_run_refuses(recovered_run, capsys, monkeypatch):
    assert recovered_run["code"] == 0
    watch_workers(monkeypatch)  # epoch 4's clip ids, as the first run recorded epochs 1-3
    out, argv = recovered_run["out"], recovered_run["argv"]
    capsys.readouterr()
    before_rows = metrics_rows(out)
    before_files = clip_file_mtimes(out, range(1, 4))
    assert len(before_files) == 6
    code, _, err = run_main(ray_train.main, argv, capsys)
    assert code == 2, err
    assert "--resume" in err and str(out) in err, err
    assert [r["epoch"] for r in metrics_rows(out)] == ["1", "2", "3"], "the refusal changed it"

    code, _, err = run_main(ray_train.main, [*argv, "--resume", "--epochs", "4"], capsys)
    assert code == 0, err
    rows = metrics_rows(out)
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    # Continued, not restarted: epochs 1-3 were neither retrained nor rewritten.
    assert rows[:3] == before_rows
    assert clip_file_mtimes(out, range(1, 4)) == before_files
    assert_exact_partition(out, 4, world=2)
    assert latest_checkpoint(out)["epoch"] == 4


def test_a_workers_user_error_is_found_inside_ray_trains_error():
    from ray.train import WorkerGroupError

    from cvae.training import TrainingDiverged

    diverged = TrainingDiverged("training diverged: loss is nan at epoch 1, step 2")
    wrapped = WorkerGroupError("rank 1 failed", {1: diverged, 0: RuntimeError("collective")})
    assert common.worker_error(wrapped) is diverged
    full = OSError(28, "No space left on device", "/runs/a/checkpoints/last.pt")
    assert common.worker_error(WorkerGroupError("rank 0 failed", {0: full})) is full
    other = WorkerGroupError("rank 0 failed", {0: RuntimeError("a bug")})
    assert common.worker_error(other) is other


def test_unlimited_retries_are_refused_before_ray(tiny_data, tmp_path, capsys):
    code, _, err = run_main(ray_train.main, [
        "--data", str(tiny_data), "--out", str(tmp_path / "out"), "--max-failures", "-1", *TINY,
    ], capsys)
    assert code == 2 and err.startswith("error: --max-failures -1: must be >= 0"), err


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_diverging_worker_ends_the_run_with_one_line(ray_session, tiny_data, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_main(ray_train.main, [
        "--data", str(tiny_data), "--out", str(out), "--epochs", "2", "--num-workers", "1",
        "--set", "train.lr=1e30", *TINY,
    ], capsys)
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: training diverged: loss is nan at epoch 1"), err
    assert "Traceback" not in err and "best checkpoint" not in stdout
    assert not list((out / "ray").glob("*/checkpoint_*")), "a diverged epoch was checkpointed"
    # Recorded where the user looks, and why Ray Train's restarts (3 by default) each ended at
    # once instead of replaying the epoch into the same NaN.
    assert (out / "diverged.txt").read_text().startswith("training diverged: loss is nan")
