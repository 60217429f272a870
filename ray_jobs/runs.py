"""Where a Ray run lives: its name, its storage, and the mirror of its run folder in --out.

A run's storage is `<storage>/<name>/` (`--storage-path`: a local folder on one machine or a
mount every node shares, or a URI such as s3://bucket/prefix). It holds Ray Train's checkpoints,
`run/` (the run folder rank 0 writes as it goes: metrics.csv, figures, TensorBoard events) and
`pack/` (a lab-layout folder packed for the workers). Nothing a worker writes stays on its own
node: `run/` is mirrored into `--out` after every epoch and completely at the end, and
`<out>/run.json` names the storage and the best checkpoint for `cvae-test`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ray.train import UserCallback

from cvae import storage
from cvae.checkpoint import RUN_FILE
from cvae.errors import CvaeError
from ray_jobs.cluster import ClusterConfig

RUN_FOLDER = "run"
PACK_FOLDER = "pack"


@dataclass(frozen=True)
class RunStorage:
    storage: str  # --storage-path, absolute or a URI
    name: str  # the Ray run name

    @property
    def root(self) -> str:
        """Ray Train's folder for the run: its checkpoints, and ours beside them."""
        return storage.join(self.storage, self.name)

    @property
    def folder(self) -> str:
        return storage.join(self.root, RUN_FOLDER)

    @property
    def pack(self) -> str:
        return storage.join(self.root, PACK_FOLDER)

    def checkpoint_uri(self, ray_path: str) -> str:
        """A Ray checkpoint's full location: Ray reports paths inside the storage's filesystem
        (no scheme, no options for a bucket), which cvae-test could not open as they are."""
        return storage.join(self.root, storage.name(ray_path))


def run_name(out: str, name: str | None = None) -> str:
    """--name, or one made from --out: its last two parts and a short hash of the whole path,
    so that two runs in different folders never share a name."""
    if name:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise CvaeError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
        return name
    path = Path(out)
    words = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{path.parent.name}-{path.name}").strip("-")
    return f"{words or 'run'}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def locate(out: str, settings: ClusterConfig) -> RunStorage:
    storage_path = settings.storage_path or str(Path(out) / "ray")
    if not storage.is_uri(storage_path):
        storage_path = str(Path(storage_path).resolve())
    return RunStorage(storage_path, run_name(out, settings.name))


def check_identity(run: RunStorage, resume: bool) -> None:
    """A new run never continues another one's snapshot by accident; --resume needs one."""
    exists = storage.exists(run.root)
    if exists and not resume:
        raise CvaeError(f"a run named {run.name!r} already exists in {run.storage}: continue it "
                        "with --resume, or choose another --name or --out")
    if resume and not exists:
        raise CvaeError(f"--resume: no run named {run.name!r} in {run.storage} (nothing to "
                        "resume; drop --resume to start it)")


def check_shared(storage_path: str, data_root: str, settings: ClusterConfig,
                 multi_node: str | None) -> None:
    """When the run may span several nodes (`multi_node` says why: see
    ray_jobs.cluster.NodeShapes.multi_node), fail before any worker starts if the storage or
    the data lives on a disk only this machine sees."""
    if multi_node is None or settings.shared_storage:
        return
    for flag, location in (("--storage-path", storage_path), ("--data", data_root)):
        if not storage.is_uri(location):
            raise CvaeError(
                f"{flag} {location}: a local path, but {multi_node} and the workers cannot "
                "see this machine's disk; use shared storage (e.g. s3://bucket/prefix) or pass "
                "--shared-storage if it is a mount every node has")


def forget_failure(run: RunStorage, out: str) -> None:
    """A resumed run tries again: the record that it diverged (ray_jobs.worker) goes."""
    from ray_jobs.worker import FAILED_FILE

    storage.delete_location(storage.join(run.folder, FAILED_FILE))
    storage.delete_location(Path(out) / FAILED_FILE)


class Mirror:
    """Copies the run folder from the run's storage into --out, each file once it is new or
    changed: after every epoch (`MirrorAfterReport`) and once more, completely, when the run
    ends."""

    def __init__(self, run: RunStorage, out: str):
        self.run, self.out = run, out
        self._seen: dict[str, tuple] = {}

    def sync(self) -> None:
        self._seen = storage.sync_tree(self.run.folder, self.out, seen=self._seen)


class MirrorAfterReport(UserCallback):
    """Ray Train calls it in its controller (on the driver's node) after every epoch's report.
    Listed before Tune's callback, a trial's folder is up to date when Tune sees the epoch."""

    def __init__(self, mirror: Mirror):
        self.mirror = mirror

    def after_report(self, run_context, metrics, checkpoint) -> None:
        try:
            self.mirror.sync()
        except CvaeError as err:  # the run goes on; the final sync reports for good
            print(f"warning: mirroring the run folder into {self.mirror.out}: {err}")


def write_run_file(run: RunStorage, out: str, best_checkpoint: str | None) -> Path:
    """<out>/run.json: where the run's checkpoints live, for cvae-test --checkpoint <out>."""
    doc = {"name": run.name, "storage": run.root, "run_folder": run.folder,
           "best_checkpoint": best_checkpoint}
    return storage.write_text(Path(out) / RUN_FILE, json.dumps(doc, indent=1) + "\n")
