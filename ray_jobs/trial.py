"""One trial of a sweep: the function Ray Tune runs per configuration, and its run folder.

A trial trains its configuration with a Ray Train `TorchTrainer` through the same driver as
`ray_jobs.train` (`common.build_trainer`, `common.run_trainer`), on the cluster settings the
sweep saved (`ClusterConfig` in sweep.json), forwarding every epoch's metrics to Tune.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cvae import report, storage
from cvae.checkpoint import RUN_FILE, initial_weights
from cvae.config import Config, set_key, validate
from cvae.errors import CvaeError
from cvae.smoothing import fill_smoothed
from ray_jobs import common, runs
from ray_jobs.cluster import ClusterConfig

SWEEP_FILE = "sweep.json"
TRIALS = report.TRIALS_DIR
EVENTS_FILE = "sweep_events.log"  # per trial: one line each time its trainer starts


def write_json(path: Path, doc: dict) -> None:
    storage.write_text(path, json.dumps(doc, indent=1))


def train_storage(settings: dict[str, Any]) -> str:
    """Where the trials' Ray Train runs keep their checkpoints and run folders."""
    return storage.join(settings["root"], "ray")


def sweep_cluster(settings: dict[str, Any]) -> ClusterConfig:
    """The cluster settings every trial runs with, as sweep.json keeps them (a sweep saved
    before they were one record kept them as separate keys)."""
    if "cluster" in settings:
        return ClusterConfig.from_dict(settings["cluster"])
    workers = settings["num_workers"]
    return ClusterConfig.from_dict({
        "min_workers": workers, "max_workers": workers,
        "gpus_per_worker": float(settings.get("gpus_per_worker") or
                                 (1.0 if settings.get("use_gpu") else 0.0)),
        **{k: settings.get(k) for k in ("cpus_per_worker", "storage_path", "max_cluster_cpus",
                                        "max_cluster_gpus")},
        "max_failures": settings["max_failures"], "workers_flag": "--workers-per-trial"})


def trial_config(settings: dict[str, Any], values: dict[str, Any], trial_id: str) -> Config:
    cfg = Config.from_dict(settings["base_config"], source=SWEEP_FILE)
    for key in settings["searched"]:
        set_key(cfg, key, values[key], "search space")
    cfg.run.out = str(Path(settings["out"]) / TRIALS / trial_id)
    validate(cfg)
    return cfg


def _finished_rows(out: Path, epochs: int) -> list[dict[str, Any]] | None:
    """A trial whose run folder already holds every epoch (it finished before the sweep was
    interrupted, but Tune's last snapshot did not record it): its rows, to report again."""
    if not (out / "metrics.csv").is_file() or (out / report.ERROR_FILE).exists():
        return None
    rows = report.read_metrics(out)
    if not rows or max(r["epoch"] for r in rows) < epochs:
        return None
    return [{k: v for k, v in r.items() if v is not None} for r in fill_smoothed(rows)]


def run_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """One Tune trial: a TorchTrainer on this trial's config; metrics flow to Tune each epoch."""
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    values = {k: config[k] for k in settings["searched"]}
    cfg = trial_config(settings, values, trial_id)
    out = Path(cfg.run.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
    done = _finished_rows(out, cfg.train.epochs)
    if done is not None:
        _event(out, "finished before; its metrics are reported again, nothing is retrained")
        for row in done:
            if "val_psnr" in row:
                ray.tune.report(row)
        return
    run = trial_run(settings, trial_id)
    runs.write_run_file(run, str(out), None)  # where its checkpoints are, even if Tune stops it
    trainer = common.build_trainer(
        cfg, sweep_cluster(settings), run=run, pack=settings["pack_dir"],
        num_clips=settings["num_clips"], cpus_per_worker=settings["cpus_per_worker_resolved"],
        out=str(out), init_weights=initial_weights(cfg), callbacks=[TuneReportCallback()],
    )
    _event(out, "trainer started")
    try:
        result = common.run_trainer(trainer)
    except (CvaeError, OSError, ray.train.TrainingFailedError) as err:
        # Training itself failed. (A trial that Tune stops, ASHA's or the last epoch's, sees
        # its controller die instead: no error file for that.)
        first = (str(err).strip().splitlines() or [""])[0]
        storage.write_text(out / report.ERROR_FILE, f"{type(err).__name__}: {first}\n")
        raise
    best = common.best_checkpoint(result, cfg.validation.best_by)
    runs.write_run_file(run, str(out), run.checkpoint_uri(best[1]) if best else None)


def _event(out: Path, text: str) -> None:
    with open(out / EVENTS_FILE, "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def gather_trials(grid, settings: dict[str, Any]) -> None:
    """Every trial's run folder, complete in <out>/trials/<id>, from the trial's storage: on a
    multi-node cluster a trial's rank 0 (and the trial's own mirror) ran on another node."""
    out = Path(settings["out"])
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")  # see trial_dirname
        folder = out / TRIALS / trial_id
        run = trial_run(settings, trial_id)
        storage.sync_tree(run.folder, folder)
        if not (folder / RUN_FILE).is_file():
            runs.write_run_file(run, str(folder), None)
        values = {k: result.config[k] for k in settings["searched"]}
        if not (folder / report.PARAMS_FILE).is_file():
            write_json(folder / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
        if result.error is not None and not (folder / report.ERROR_FILE).exists():
            lines = str(result.error).strip().splitlines() or [type(result.error).__name__]
            storage.write_text(folder / report.ERROR_FILE, lines[0][:500] + "\n")


def trial_run(settings: dict[str, Any], trial_id: str) -> runs.RunStorage:
    return runs.RunStorage(train_storage(settings), f"trial_{trial_id}")


