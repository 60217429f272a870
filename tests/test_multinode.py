"""The cluster path on one machine: a Ray cluster of three nodes (`ray.cluster_utils.Cluster`,
each its own raylet, all on 127.0.0.1) and an S3-compatible server (moto) as the only storage
the nodes share. The training data exists only in the bucket, checkpoints and the run folder go
there, --out is a local folder, and nodes are removed while a run goes on. The head has no CPU
for workers (removing it would end the cluster): the workers run on the two other nodes.

One cluster and one S3 server for the module (a cluster start costs ~30 s here).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import pytest
import ray.cloudpickle
from conftest import TINY_MODEL_SETS, set_flags

from cvae import packs, storage, synth
from ray_jobs import common
from ray_jobs import train as ray_train

pytestmark = [pytest.mark.ray, pytest.mark.multinode, pytest.mark.timeout(900)]

CLIP_LEN = 4
EPOCHS = 3
TINY = set_flags(*TINY_MODEL_SETS, f"data.clip_len={CLIP_LEN}", "validation.val_len=6",
                 "run.progress=false", "test.seq_len=6", "train.batch_size=1",
                 "data.prime_next_epoch=false")
NODE_CPUS = 3  # two 1-CPU workers and a whole CPU for Ray Data's read tasks on one node

# The Ray workers cannot import this test module: they get its hooks by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster(s3):
    """A head (no CPU: the driver and Ray Train's controller live there) and two worker nodes,
    every raylet on 127.0.0.1. The driver connects there too: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    (for the nodes' processes; this process read it when it imported Ray, hence the constant)
    keeps Ray from resolving 127.0.0.1 to the machine's address. `s3` comes first: the nodes
    inherit its credentials."""
    import ray
    import ray._private.ray_constants as ray_constants
    from ray._private.authentication.authentication_token_setup import ensure_token_if_auth_enabled
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    patch = pytest.MonkeyPatch()
    patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    ray.shutdown()
    # With RAY_AUTH_MODE=token, ray.init makes the token on a machine that has none, but
    # Cluster() does not: its head would wait for one until it times out.
    ensure_token_if_auth_enabled()
    # The dashboard: Tune + Train free a stopped trial's workers through the State API, found
    # through RAY_API_SERVER_ADDRESS.
    port = common.free_port()
    saved["RAY_API_SERVER_ADDRESS"] = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": True,
        "dashboard_port": port})
    for _ in range(2):
        nodes.add_node(num_cpus=NODE_CPUS, node_ip_address="127.0.0.1")
    ray.init(address=nodes.address, log_to_driver=False, logging_level="WARNING")
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        patch.undo()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def tiny_lab(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny") / "data"
    synth.generate(root, train_videos=2, frames_per_video=16, val_frames=10, test_sequences=2,
                   test_frames=6, height=32, width=64, progress=False)
    return root


@pytest.fixture(scope="module")
def bucket_pack(s3, tiny_lab) -> str:
    """The tiny data set packed straight into the bucket (`cvae-data pack --out s3://...`);
    the lab-layout folder then keeps only its test split (the Tester's input), so the bucket
    is the only copy of the training and validation data."""
    import shutil

    from cvae import data_cli

    uri = s3("data/tiny.pack")
    with pytest.raises(SystemExit) as exc:
        data_cli.main(["pack", "--root", str(tiny_lab), "--out", uri, "--clip-len",
                       str(CLIP_LEN), "--quiet"])
    assert exc.value.code == 0
    for split in ("train", "val"):
        shutil.rmtree(tiny_lab / split)
    return uri


def watch(batches, epoch: int, *, rank: int, out: str, stall_rank: int | None = None,
          stall_epoch: int | None = 1, pace: float = 0.0):
    """A worker's epoch iterator, watched: the node each rank trains on goes to
    <out>/nodes/epoch<E>_rank<R>.txt; rank `stall_rank` stops at the first step of epoch
    index `stall_epoch` (None: of whichever epoch it first trains) and waits (<out>/.stalled
    names its node) until the test removes that node. Until then the other ranks take `pace`
    seconds a step, so that a run that starts with fewer workers lasts until it grows."""
    node = ray.get_runtime_context().get_node_id()
    folder = Path(out) / "nodes"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"epoch{epoch + 1}_rank{rank}.txt").write_text(node)
    marker = Path(out) / ".stalled"
    for step, batch in enumerate(batches):
        if rank == stall_rank and stall_epoch in (None, epoch) and step == 0 \
                and not marker.exists():
            marker.write_text(node)
            time.sleep(120)  # the node is removed meanwhile; a restart finds the marker
        elif rank != stall_rank and not marker.exists():
            time.sleep(pace)
        yield batch


def run_train(argv: list[str], monkeypatch, capsys, **hook) -> tuple[int, str, str]:
    monkeypatch.setattr(common, "build_trainer", functools.partial(
        common.build_trainer, wrap_batches=functools.partial(watch, **hook)))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        ray_train.main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def train_argv(cluster, data: str, out: Path, storage_path: str, *extra: str,
               placement: str = "SPREAD") -> list[str]:
    return ["--address", cluster.address, "--data", data, "--out", str(out),
            "--storage-path", storage_path, "--epochs", str(EPOCHS), "--num-workers", "2",
            "--cpus-per-worker", "1", "--placement-strategy", placement,
            "--max-failures", "2", "--resource-timeout", "0", *TINY, *extra]


def epochs_in(out: Path) -> list[int]:
    with open(out / "metrics.csv", newline="") as fh:
        return [int(r["epoch"]) for r in csv.DictReader(fh)]


def assert_complete_run_folder(out: Path) -> None:
    assert epochs_in(out) == list(range(1, EPOCHS + 1))
    for name in ("config.yaml", "training.png", "psnr_per_frame.csv", "psnr_per_frame.png",
                 "run.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.*")), "no TensorBoard events"


def wait_for_free_cpus(cpus: int, timeout: float = 60.0) -> None:
    """Wait until the cluster has `cpus` CPUs free: an earlier test's workers may still hold
    some, and a node added back may not have reported its own yet."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < cpus:
        assert time.monotonic() < deadline, f"never {cpus} free CPUs: {ray.available_resources()}"
        time.sleep(0.5)


def remove_when_stalled(cluster, out: Path) -> threading.Thread:
    """Remove the node a stalled worker names in <out>/.stalled, from a thread."""
    def remove() -> None:
        marker = out / ".stalled"
        deadline = time.monotonic() + 300
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        node_id = marker.read_text().strip()
        for node in cluster.list_all_nodes():
            if node.node_id == node_id:
                cluster.remove_node(node)
                return

    thread = threading.Thread(target=remove, daemon=True)
    thread.start()
    return thread


def test_data_only_in_the_bucket_two_nodes_and_the_tester_on_the_printed_uri(
        cluster, s3, bucket_pack, tiny_lab, tmp_path, monkeypatch, capsys):
    from cvae import test_cli

    out = tmp_path / "out"
    code, stdout, err = run_train(train_argv(cluster, bucket_pack, out, s3("runs"),
                                             placement="STRICT_SPREAD"), monkeypatch, capsys)
    assert code == 0, err
    assert_complete_run_folder(out)
    nodes = {r: (out / "nodes" / f"epoch1_rank{r}.txt").read_text() for r in (0, 1)}
    assert nodes[0] != nodes[1], "the two workers ran on one node"
    assert not (out / "checkpoints").exists() and not (out / "ray").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["storage"].startswith("s3://")
    assert storage.exists(storage.join(run["run_folder"], "metrics.csv"))
    uri = re.findall(r"^best checkpoint: (\S+)$", stdout, flags=re.M)[-1]
    assert uri == run["best_checkpoint"] and uri.startswith("s3://"), stdout
    # The Tester takes the printed URI as it is, and the run's storage too.
    for i, checkpoint in enumerate((uri, run["storage"])):
        tester_out = tmp_path / f"test{i}"
        with pytest.raises(SystemExit) as exc:
            test_cli.main(["--checkpoint", checkpoint, "--data", str(tiny_lab),
                           "--out", str(tester_out), "--set", "test.seq_len=6",
                           "--set", "run.progress=false"])
        assert exc.value.code == 0, capsys.readouterr().err
        assert (tester_out / "submission.csv").is_file()


@pytest.mark.parametrize("stall_rank", [1, 0], ids=["rank1-node-removed", "rank0-node-removed"])
def test_a_node_removed_mid_epoch(cluster, s3, bucket_pack, tmp_path, monkeypatch, capsys,
                                  stall_rank):
    out = tmp_path / "out"
    remover = remove_when_stalled(cluster, out)
    try:
        code, _, err = run_train(
            train_argv(cluster, bucket_pack, out, s3(f"removed{stall_rank}")),
            monkeypatch, capsys, stall_rank=stall_rank)
    finally:
        remover.join(timeout=1)
        if len(cluster.list_all_nodes()) < 3:  # back to two worker nodes for the next test
            cluster.add_node(num_cpus=NODE_CPUS, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
    assert code == 0, err
    assert (out / ".stalled").is_file(), "the node was never removed"
    # Every epoch exactly once, and --out complete whatever node rank 0 ended on.
    assert_complete_run_folder(out)


def test_an_elastic_run_trains_on_with_fewer_workers_when_a_node_goes(
        cluster, s3, bucket_pack, tmp_path, monkeypatch, capsys):
    """2 workers (at least 1) over the two nodes, 2 CPUs each so that a node holds one; the
    node of rank 1 goes at rank 1's first step: the run does not fail, it trains on with one
    worker (every epoch once), and metrics.csv says how many workers trained each epoch.

    Ray 2.60 starts an elastic group with the workers it finds room for at once (one or two
    here, even with both nodes free) and grows it at its next look (every
    ELASTIC_RESIZE_INTERVAL, 10 s here): until rank 1 has trained, rank 0 takes 1 s a step so
    that a group of one cannot finish the 4 epochs before it grows. After the loss its first
    restart may still count the lost node and wait for Ray Train's worker-group start timeout
    (60 s) before it starts the one worker that fits."""
    monkeypatch.setattr(common, "ELASTIC_RESIZE_INTERVAL", 10.0)
    wait_for_free_cpus(2 * NODE_CPUS)
    out = tmp_path / "out"
    remover = remove_when_stalled(cluster, out)
    try:
        code, stdout, err = run_train(
            train_argv(cluster, bucket_pack, out, s3("elastic"), "--num-workers", "1-2",
                       "--cpus-per-worker", "2", "--epochs", "4"),
            monkeypatch, capsys, stall_rank=1, stall_epoch=None, pace=1.0)
    finally:
        remover.join(timeout=1)
        if len(cluster.list_all_nodes()) < 3:
            cluster.add_node(num_cpus=NODE_CPUS, node_ip_address="127.0.0.1")
            cluster.wait_for_nodes()
    assert code == 0, err
    assert (out / ".stalled").is_file(), "rank 1 never trained: the group never had 2 workers"
    assert epochs_in(out) == [1, 2, 3, 4]
    with open(out / "metrics.csv", newline="") as fh:
        workers = [int(float(r["workers"])) for r in csv.DictReader(fh)]
    assert set(workers) <= {1, 2} and workers[-1] == 1, workers
    assert "1-2 worker(s)" in stdout


def test_runs_sharing_a_storage_path_do_not_mix(cluster, s3, bucket_pack, tmp_path,
                                                monkeypatch, capsys):
    shared = s3("shared")
    first, second = tmp_path / "a", tmp_path / "b"
    for out, name in ((first, "first"), (second, "second")):
        code, _, err = run_train(train_argv(cluster, bucket_pack, out, shared, "--name", name,
                                            "--epochs", "1"), monkeypatch, capsys)
        assert code == 0, err
        assert epochs_in(out) == [1]
    assert {"first", "second"} <= set(storage.list_names(shared))
    assert json.loads((first / "run.json").read_text())["best_checkpoint"] != \
        json.loads((second / "run.json").read_text())["best_checkpoint"]
    # The name again without --resume: one line, nothing started.
    code, _, err = run_train(train_argv(cluster, bucket_pack, tmp_path / "c", shared,
                                        "--name", "first", "--epochs", "1"), monkeypatch, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "'first' already exists" in err and "--resume" in err
    assert not (tmp_path / "c" / "metrics.csv").exists()


def test_local_storage_on_a_multinode_cluster_fails_at_start(cluster, bucket_pack, tmp_path,
                                                             monkeypatch, capsys):
    start = time.monotonic()
    code, _, err = run_train(train_argv(cluster, bucket_pack, tmp_path / "out",
                                        str(tmp_path / "local-storage")), monkeypatch, capsys)
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert "--storage-path" in err and "nodes" in err and "s3://" in err, err
    assert time.monotonic() - start < 30


def test_a_pack_in_the_bucket_reads_like_a_local_one(bucket_pack, tmp_path):
    local = packs.ParquetClipDataset(bucket_pack)
    assert len(local) == 8 and local[0][0].shape == (CLIP_LEN, 3, 32, 64)


def test_a_sweep_on_the_cluster_with_storage_in_the_bucket(cluster, s3, bucket_pack, tiny_lab,
                                                            tmp_path, capsys):
    from cvae import test_cli
    from ray_jobs import tune as ray_tune

    space = tmp_path / "two.yaml"
    space.write_text("train.kl_anneal_type: {grid: [Monotonic, None]}\n")
    out = tmp_path / "sweep"
    with pytest.raises(SystemExit) as exc:
        ray_tune.main(["--space", str(space), "--data", bucket_pack, "--out", str(out),
                       "--storage-path", s3("sweeps"), "--address", cluster.address,
                       "--epochs", "2", "--grace-period", "2", "--max-concurrent", "1",
                       "--resource-timeout", "0", *TINY])
    assert exc.value.code == 0, capsys.readouterr().err
    assert (out / "best" / "checkpoint.pt").is_file()
    trials = sorted(p for p in (out / "trials").iterdir() if p.is_dir())
    assert len(trials) == 2 and all(epochs_in(t) == [1, 2] for t in trials)
    with pytest.raises(SystemExit) as exc:
        test_cli.main(["--checkpoint", str(out / "best"), "--data", str(tiny_lab), "--out",
                       str(tmp_path / "test"), "--set", "test.seq_len=6",
                       "--set", "run.progress=false"])
    assert exc.value.code == 0, capsys.readouterr().err
    assert (tmp_path / "test" / "submission.csv").is_file()
