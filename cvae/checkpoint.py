"""Checkpoints are plain data (state_dicts, the config, counters): loaded with weights_only=True."""

from __future__ import annotations

import dataclasses
import io
import sys
from pathlib import Path
from typing import Any

import torch

from cvae import storage
from cvae.config import Config, ModelConfig
from cvae.errors import CvaeError
from cvae.storage import atomic_path

FORMAT = "cvae-checkpoint/1"
# A Ray checkpoint is a directory holding this file; cvae-test accepts either.
CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    return Path(path)


RUN_FILE = "run.json"  # in a Ray run's --out: where its checkpoints live (the run's storage)
RAY_CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's checkpoint folders in a run's storage


def resolve_checkpoint_path(path: str | Path) -> str | Path:
    """The checkpoint file that `path` names: a .pt file; a Ray checkpoint folder; a run folder
    (its best.pt, or for a Ray run the best checkpoint its run.json points at); a sweep's best/;
    or a Ray run's storage (its best checkpoint_* by validation.best_by). Local paths and URIs
    alike."""
    if storage.is_uri(path):
        return _resolve_location(str(path))
    path = Path(path)
    if path.is_dir():
        for candidate in (CHECKPOINT_FILE, "best.pt", "checkpoints/best.pt"):
            if (path / candidate).is_file():
                return path / candidate
        if (path / RUN_FILE).is_file():
            return resolve_checkpoint_path(_run_best(path / RUN_FILE))
        if any(n.startswith(RAY_CHECKPOINT_PREFIX) for n in storage.list_names(path)):
            return _best_in_storage(str(path))
        raise CvaeError(f"{path}: no {CHECKPOINT_FILE}, best.pt, checkpoints/best.pt, "
                        f"{RUN_FILE} or Ray checkpoint in it")
    if not path.is_file():
        raise CvaeError(f"{path}: checkpoint not found")
    return path


def _resolve_location(location: str) -> str:
    if storage.name(location).endswith(".pt"):
        if not storage.exists(location):
            raise CvaeError(f"{location}: checkpoint not found")
        return location
    if storage.exists(storage.join(location, CHECKPOINT_FILE)):
        return storage.join(location, CHECKPOINT_FILE)
    return _best_in_storage(location)


def _run_best(run_file: Path) -> str:
    """The best checkpoint a Ray run's run.json names, or else its storage location, to search
    for the best: a sweep's trial that Tune stopped (ASHA, or at its last epoch) never got to
    name one."""
    doc = storage.read_json(run_file, "run file")
    location = isinstance(doc, dict) and (doc.get("best_checkpoint") or doc.get("storage"))
    if not location:
        raise CvaeError(f"{run_file}: names no best checkpoint (the run kept none)")
    return str(location)


def _best_in_storage(location: str) -> str:
    """The Ray checkpoint under a run's storage location with the best validation.best_by
    figure (val_psnr unless its config says otherwise), among the validated checkpoints Ray
    registered (its snapshot names them: a folder a lost node left half-written is not among
    them) that load; each one skipped is named on stderr."""
    scored = []
    for name in _registered_checkpoints(location):
        path = storage.join(location, name, CHECKPOINT_FILE)
        try:
            state = load_checkpoint(path)
        except CvaeError as err:
            print(f"warning: skipping {name}: {err}", file=sys.stderr)
            continue
        metrics = state.get("metrics", {})
        by = state["config"].get("validation", {}).get("best_by", "val_psnr")
        if "val_psnr" in metrics:  # a validated epoch
            scored.append((float(metrics.get(by, float("-inf"))), path))
    if not scored:
        raise CvaeError(f"{location}: no validated checkpoint there")
    return max(scored)[1]


RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's list of its checkpoints


def _registered_checkpoints(location: str) -> list[str]:
    """The checkpoint folders Ray Train registered in a run's storage (all checkpoint_*
    folders where it left no readable snapshot, e.g. a run from before it wrote one)."""
    names = [n for n in storage.list_names(location) if n.startswith(RAY_CHECKPOINT_PREFIX)]
    try:
        snapshot = storage.read_json(storage.join(location, RAY_SNAPSHOT_FILE), "snapshot")
        kept = {r["checkpoint_dir_name"] for r in snapshot["checkpoint_results"]}
    except (CvaeError, KeyError, TypeError):
        return names
    return [n for n in names if n in kept]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint (from a local path or a URI); any problem is one
    CvaeError naming the file."""
    path = resolve_checkpoint_path(path)
    source = io.BytesIO(storage.read_location(path)) if storage.is_uri(path) else path
    return parse_checkpoint(source, path, map_location)


def parse_checkpoint(source: str | Path | io.BytesIO, path: str | Path,
                     map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint from a local file or bytes read into memory (`path`: its name in errors),
    sanity-checked; any problem is one CvaeError naming it."""
    try:
        state = torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CvaeError(f"{path}: not a readable checkpoint ({reason[:160]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CvaeError(f"{path}: not a cvae checkpoint (no '{FORMAT}' format tag)")
    for key in ("model", "config", "epoch"):
        if key not in state:
            raise CvaeError(f"{path}: checkpoint has no '{key}' entry")
    return state


RESUME_KEYS = ("optimizer", "scheduler", "kl_annealing", "teacher_forcing")


def load_weights(model: torch.nn.Module, weights: dict[str, Any], source: str,
                 config: str = "the model config") -> None:
    """Load a state_dict into the model; weights that do not fit it (names, shapes) are one
    CvaeError naming `source` and the `config` the model was built from, not a traceback."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CvaeError(f"{source}: weights do not match {config} ({first[:200]})") from None


def checkpoint_config(state: dict[str, Any], path: str | Path = "checkpoint") -> Config:
    return Config.from_dict(state["config"], source=f"{path} (stored config)")


def last_checkpoint(out: str | Path) -> Path:
    return Path(out) / "checkpoints" / "last.pt"


def resume_state_for(cfg: Config, resume: bool) -> dict[str, Any] | None:
    """The checkpoint a run continues from (`--resume`), or None for a fresh run.

    A fresh run refuses a folder that already holds one, so nothing is overwritten by accident.
    """
    last = last_checkpoint(cfg.run.out)
    if not resume:
        if last.exists():
            raise CvaeError(f"{cfg.run.out} already holds a run ({last}): pass --resume to "
                            "continue it, or choose another --out")
        return None
    if not last.exists():
        raise CvaeError(f"--resume: {last} not found (nothing to resume in {cfg.run.out})")
    state = load_checkpoint(last)
    missing = [key for key in RESUME_KEYS if key not in state]
    if missing:
        raise CvaeError(f"--resume: {last} has no {', '.join(missing)} state (not a training "
                        "checkpoint); start a new run from it with --set train.init_from=...")
    check_same_model(state, cfg, f"--resume: {last}")
    return state


def check_same_model(state: dict[str, Any], cfg: Config, source: str) -> None:
    """The checkpoint's model dims are the config's (model.init and the mask's initial bias do
    not matter: the weights come from the checkpoint). A key an older checkpoint lacks counts
    as its default."""
    stored = {**dataclasses.asdict(ModelConfig()), **state["config"].get("model", {})}
    for key, value in cfg.model.__dict__.items():
        if key not in ("init", "blend_mask_init") and stored.get(key) != value:
            raise CvaeError(f"{source} has model.{key} = {stored.get(key)!r}, "
                            f"the config has {value!r}")


def initial_weights(cfg: Config) -> dict[str, Any] | None:
    """The model state_dict `train.init_from` names, checked against the config's model; None
    when it names nothing. Launchers call it before starting workers, so a bad path fails early.
    """
    if not cfg.train.init_from:
        return None
    try:
        path = resolve_checkpoint_path(cfg.train.init_from)
        state = load_checkpoint(path)
    except CvaeError as err:
        raise CvaeError(f"train.init_from: {err}") from None
    check_same_model(state, cfg, f"train.init_from: {path}")
    return state["model"]
