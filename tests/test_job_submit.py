"""`ray job submit --working-dir . -- python -m ray_jobs.train ...` against a `ray start --head`.

The head runs on free ports with its own --temp-dir, so it never meets another Ray on this
machine nor rewrites /tmp/ray/ray_current_cluster. Token auth is on, explicitly, for the head and
the client (RAY_AUTH_MODE=token plus a per-test RAY_AUTH_TOKEN, so ~/.ray/auth_token is not
touched either). The head is stopped by signalling the processes this test started (never
`ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_MODEL_SETS, set_flags

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RAY = VENV_BIN / "ray"
TINY = set_flags(*TINY_MODEL_SETS, "data.clip_len=4", "validation.val_len=6",
                 "run.progress=false", "test.seq_len=6")
# What must never travel with the code (checked against the uploaded working dir).
NOT_UPLOADED = (".venv", "venv", ".git", "data", "runs", "sweeps", ".pytest_cache", ".ruff_cache")


# ---- .rayignore on its own (no Ray cluster) ----------------------------------------------------

def test_rayignore_alone_keeps_data_outputs_and_envs_out(tmp_path):
    """Ray's own packager, with .gitignore and Ray's default excludes switched off."""
    from ray._private.runtime_env.packaging import create_package

    tree = tmp_path / "checkout"
    files = [
        "cvae/lab_folder.py", "cvae/training.py", "ray_jobs/train.py", "config/train.yaml",
        "tests/data/keep.txt", "pyproject.toml",
        ".venv/bin/python", "venv/lib/x.py", ".git/HEAD", "data/dance/train/x.png",
        "runs/a/metrics.csv", "sweeps/s/best.pt", "cvae/__pycache__/x.cpython-311.pyc",
        "cvae_ray.egg-info/PKG-INFO", ".pytest_cache/v", ".ruff_cache/r", "model.pt",
    ]
    for name in files:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("x")
    shutil.copy(ROOT / ".rayignore", tree / ".rayignore")
    package = tmp_path / "pkg.zip"
    create_package(str(tree), package, include_gitignore=False, excludes=[])
    names = set(zipfile.ZipFile(package).namelist())
    kept = {"cvae/lab_folder.py", "cvae/training.py", "ray_jobs/train.py", "config/train.yaml",
            "tests/data/keep.txt", "pyproject.toml"}
    assert kept <= names, kept - names
    leaked = {n for n in names - kept if n != ".rayignore"}
    assert not leaked, leaked


# ---- a real head and a real job ---------------------------------------------------------------

@dataclass
class Head:
    url: str
    env: dict
    temp_dir: Path
    proc: subprocess.Popen
    log: Path


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc/<pid>/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold ")"
    return int(fields[1]), int(fields[19])


def _descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live descendant of `pid`."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append((int(entry.name), stat[1]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _stop_head(head: Head) -> None:
    """SIGTERM to `ray start --block` stops the node's processes; SIGKILL what remains of ours
    (matched by pid and start time, so a recycled pid is never hit)."""
    tree = _descendants(head.proc.pid)

    def alive() -> list[int]:
        return [pid for pid, start in tree if (stat := _stat(pid)) and stat[1] == start]

    if head.proc.poll() is None:
        head.proc.send_signal(signal.SIGTERM)
        try:
            head.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.proc.kill()
            head.proc.wait(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and alive():
        time.sleep(0.5)
    for pid in alive():
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _dashboard_ready(url: str, token: str) -> bool:
    request = urllib.request.Request(f"{url}/api/version",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def ray_head(tmp_path):
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc to clean up the head's processes")
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()  # an in-process Ray from another module must be gone
    names = ["port", "dashboard-port", "ray-client-server-port", "node-manager-port",
             "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
             "runtime-env-agent-port", "metrics-export-port"]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    # Short: Ray puts unix sockets under it (107-character limit).
    temp_dir = Path(tempfile.mkdtemp(prefix="rayh", dir="/tmp"))
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               # SIGTERM stops the head at once (no 30 s node drain, nothing to drain here)
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
               # the job's `python` is this venv's python, as in an activated venv
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    log = tmp_path / "head.log"
    cmd = [str(RAY), "start", "--head", "--block", "--num-cpus", "4",
           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
           "--temp-dir", str(temp_dir), "--disable-usage-stats",
           "--min-worker-port", "0", "--max-worker-port", "0",  # workers: random free ports
           *[f"--{name}={port}" for name, port in ports.items()]]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=tmp_path, start_new_session=True)
    head = Head(f"http://127.0.0.1:{ports['dashboard-port']}", env, temp_dir, proc, log)
    try:
        deadline = time.monotonic() + 240
        while not _dashboard_ready(head.url, token):
            if proc.poll() is not None:
                pytest.fail(f"ray start --head exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard never answered:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield head
    finally:
        _stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(head: Head, sid: str, entrypoint: list[str], cwd: Path) -> str:
    """`ray job submit` (waits for the job); returns its output, fails the test on failure."""
    args = ["job", "submit", "--address", head.url, "--submission-id", sid,
            "--working-dir", str(ROOT), "--", *entrypoint]
    try:
        result = _ray_cli(head, *args, timeout=600, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        _ray_cli(head, "job", "stop", "--address", head.url, sid, timeout=60, cwd=cwd)
        pytest.fail(f"ray job submit did not finish in {exc.timeout} s")
    logs = result.stdout + result.stderr
    assert result.returncode == 0, f"{result.stdout[-5000:]}\n{result.stderr[-3000:]}"
    assert f"Job '{sid}' succeeded" in logs, logs[-5000:]
    return logs


def _ray_cli(head: Head, *args: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(RAY), *args], env=head.env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_job_submit_trains_on_a_local_head(ray_head, tmp_path):
    from cvae import synth

    data, out = tmp_path / "data", tmp_path / "out"
    synth.generate(data, train_videos=2, frames_per_video=16, val_frames=10, test_sequences=2,
                   test_frames=6, height=32, width=64, progress=False)
    # The documented command, as is: the entrypoint is `python -m ray_jobs.train ...`.
    sid = f"cvae_test_{secrets.token_hex(4)}"
    train = ["python", "-m", "ray_jobs.train", "--data", str(data), "--out", str(out),
             "--epochs", "1", "--num-workers", "1", *TINY]
    logs = _submit(ray_head, sid, train, tmp_path)
    status = _ray_cli(ray_head, "job", "status", "--address", ray_head.url, sid, timeout=120,
                      cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"Job '{sid}' succeeded" in status.stdout + status.stderr

    # The run's artifacts, at the absolute --out (not inside the uploaded working dir).
    assert (out / "metrics.csv").read_text().splitlines()[1].startswith("1,")
    # The checkpoints live in the run's storage (default <out>/ray/<name>), which run.json names.
    run = json.loads((out / "run.json").read_text())
    assert Path(run["best_checkpoint"], "checkpoint.pt").is_file(), run
    assert list(Path(run["storage"]).glob("checkpoint_*")), "no Ray Train checkpoint"
    assert f"best checkpoint: {run['best_checkpoint']}" in logs

    # A second job on the same (already uploaded) working dir: which code does a job import?
    where = "import cvae, ray_jobs; print('MODULES', cvae.__file__, ray_jobs.__file__)"
    logs = _submit(ray_head, f"{sid}_where", ["python", "-c", where], tmp_path)
    # (One upload per distinct content hash: two if the checkout changed between the jobs.)
    uploads = {p.resolve() for p in  # (session_latest is a link to the session folder)
               ray_head.temp_dir.glob("session_*/runtime_resources/working_dir_files/*")
               if p.is_dir()}
    assert uploads
    line = next(s for s in logs.splitlines() if s.startswith("MODULES "))
    for module_file in line.split()[1:]:
        assert any(Path(module_file).resolve().is_relative_to(u) for u in uploads), line
    for upload in uploads:
        for name in ("ray_jobs/train.py", "cvae/training.py", "config/train.yaml",
                     "pyproject.toml"):
            assert (upload / name).is_file(), name
        for name in NOT_UPLOADED:
            assert not (upload / name).exists(), f"{name} was uploaded"
        # (__pycache__ is not checked here: the job's own imports write it into the copy.)
        size = sum(p.stat().st_size for p in upload.rglob("*") if p.is_file())
        print(json.dumps({"uploaded_files": sum(1 for p in upload.rglob("*") if p.is_file()),
                          "uploaded_bytes": size}))
        assert size < 20 * 2**20, f"the working dir upload is {size / 2**20:.1f} MiB"
