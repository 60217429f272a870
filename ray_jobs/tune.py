"""Hyperparameter sweeps on Ray Tune: `python -m ray_jobs.tune --space tune_spaces/kl_tfr.yaml`.

Each trial is a driver function that trains one configuration with a Ray Train `TorchTrainer`
(DDP over Ray Data shards, exactly like `ray_jobs.train`), forwarding every epoch's metrics to Tune
(TuneReportCallback). ASHA stops trials whose val_psnr falls behind (metric val_psnr, mode max).

    python -m ray_jobs.tune --space tune_spaces/smoke.yaml --data data/dance.pack --out runs/sweep
    python -m ray_jobs.tune --out runs/sweep --resume          # after an interruption
    cvae-test --checkpoint runs/sweep/best

<out>/: sweep.json (the sweep's settings, reused by --resume), pack/ (the data, packed once),
trials/<trial id>/ (each trial's run folder: metrics.csv, config.yaml, checkpoints/, figures),
tune/ (Tune's experiment state), ray/ (Ray Train's checkpoints), results.csv (one row per trial,
best val_psnr first), best/ (the best trial's best checkpoint: checkpoint.pt + config.yaml, for
cvae-test) and the report (report.md, figures; see cvae-report).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from cvae import cli, report, storage
from cvae.checkpoint import initial_weights
from cvae.config import Config, parse_override, set_key, to_yaml, validate
from cvae.errors import ConfigError, CvaeError, cli_entry
from cvae.lock import lock_folder
from cvae.spaces import Space, check_values, load_space, parse_space
from ray_jobs import common

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "cvae-sweep/1"
EXPERIMENT = "tune"
TRIALS = report.TRIALS_DIR
TRIAL_CPU = 0.5  # the trial's driver function only waits on its TorchTrainer
EVENTS_FILE = "sweep_events.log"  # per trial: one line each time its trainer starts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.tune", description=__doc__.split("\n\n")[0],
        parents=[
            cli.config_args("config/train.yaml"),
            cli.run_args(resume_help="continue the interrupted sweep in --out (its space and "
                         "settings come from <out>/sweep.json; finished trials are not rerun)",
                         dry_run_help="check the space, print the base config and the trials, "
                         "then exit"),
            common.cluster_args(("--workers-per-trial", "--num-workers"),
                                "Ray Train workers (DDP ranks) per trial", num_workers=1),
        ])
    parser.add_argument("--space", help="search space YAML (tune_spaces/*.yaml)")
    parser.add_argument("--num-samples", type=int, default=1,
                        help="trials per grid combination (random draws of the other keys)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="trials at once (default: as many as the cluster fits)")
    parser.add_argument("--grace-period", type=int, default=1,
                        help="ASHA: epochs every trial runs before it can be stopped")
    parser.add_argument("--reduction-factor", type=float, default=2,
                        help="ASHA: keep the best 1/factor of trials at each rung")
    return parser


def base_config(args: argparse.Namespace, space: Space) -> Config:
    """The config every trial starts from, through the one loader: defaults -> preset ->
    --config -> the space's constants -> --data/--out/--epochs/--seed -> --set. Searched keys
    come last, per trial, and cannot be --set."""
    for text in args.overrides:
        key, _ = parse_override(text)
        if key in space.searched:
            raise ConfigError(f"--set {key}: {space.path} searches this key; remove it from "
                              "the space or from --set")
    sweep_args = argparse.Namespace(**{**vars(args), "out": args.out or "runs/sweep"})
    cfg = cli.config_from_args(sweep_args, layers=((space.path, space.constants),))
    common.absolutize(cfg)  # (inside `ray job submit`, relative paths are refused)
    initial_weights(cfg)  # a bad train.init_from fails before Ray starts
    if cfg.validation.every != 1:
        raise ConfigError(f"validation.every = {cfg.validation.every}: a sweep validates every "
                          "epoch (ASHA compares trials' val_psnr at each epoch); set it to 1")
    return cfg


def check_sweep_args(args: argparse.Namespace, epochs: int) -> None:
    common.check_max_failures(args.max_failures)
    if args.num_samples < 1:
        raise CvaeError(f"--num-samples {args.num_samples}: must be >= 1")
    if args.num_workers < 1:
        raise CvaeError(f"--workers-per-trial {args.num_workers}: must be >= 1")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise CvaeError(f"--max-concurrent {args.max_concurrent}: must be >= 1")
    if not 1 <= args.grace_period <= epochs:
        raise CvaeError(f"--grace-period {args.grace_period}: must be between 1 and the "
                        f"epochs ({epochs})")
    if args.reduction_factor <= 1:
        raise CvaeError(f"--reduction-factor {args.reduction_factor:g}: must be > 1")


def _write_json(path: Path, doc: dict) -> None:
    storage.write_text(path, json.dumps(doc, indent=1))


def new_sweep(args: argparse.Namespace) -> dict[str, Any] | None:
    """Check everything without Ray, pack the data once, write <out>/sweep.json."""
    if not args.space:
        raise CvaeError("--space FILE is required (e.g. tune_spaces/kl_tfr.yaml), unless "
                        "--resume")
    space = load_space(_space_path(args.space), check=False)  # keys and distributions
    cfg = base_config(args, space)
    check_values(space, cfg)  # every value the space can give, on this sweep's base config
    check_sweep_args(args, cfg.train.epochs)
    out = Path(cfg.run.out)
    if (out / SWEEP_FILE).exists() and not args.dry_run:
        raise CvaeError(f"{out} already holds a sweep ({out / SWEEP_FILE}): pass --resume to "
                        "continue it, or choose another --out")
    space.check_trials(args.num_samples)  # counted, so a huge grid never fills the memory
    trials = space.sample(args.num_samples, seed=cfg.run.seed)
    if args.dry_run:
        print(to_yaml(cfg))
        print(f"space {space.path}: " + ", ".join(f"{k}={p.describe()}"
                                                  for k, p in space.searched.items()))
        print(f"{len(trials)} trials (grid {space.grid_size} x {args.num_samples} samples), "
              f"e.g.:")
        for values in trials:
            space.apply(cfg, values)
            print("  " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
        return None
    out.mkdir(parents=True, exist_ok=True)
    pack_dir, meta = common.prepare_data(cfg)  # bad data fails here, before Ray starts
    settings = {
        "format": SWEEP_FORMAT,
        "out": str(out),
        "space_file": str(Path(space.path).resolve()),
        "space": {k: _raw(p) for k, p in space.params.items()},
        "searched": list(space.searched),
        "base_config": cfg.to_dict(),
        "pack_dir": str(pack_dir),
        "num_clips": meta["num_clips"],
        "num_samples": args.num_samples,
        "num_workers": args.num_workers,
        "use_gpu": args.use_gpu,
        "cpus_per_worker": args.cpus_per_worker,
        "max_failures": args.max_failures,
        "storage_path": args.storage_path,
        "max_concurrent": args.max_concurrent,
        "grace_period": args.grace_period,
        "reduction_factor": args.reduction_factor,
        "seed": cfg.run.seed,
    }
    _write_json(out / SWEEP_FILE, settings)
    return settings


def _space_path(name: str) -> str:
    """A relative path that is not here falls back to the checkout's (tune_spaces/...)."""
    path = Path(name)
    shipped = Path(__file__).resolve().parent.parent / path
    return str(shipped) if not path.exists() and not path.is_absolute() and shipped.exists() \
        else name


def _raw(param) -> Any:
    return param.args[0] if param.kind == "constant" else {param.kind: list(param.args)}


def load_sweep(args: argparse.Namespace) -> dict[str, Any]:
    where = Config()
    where.run.out, where.data.root = args.out or "runs/sweep", "/"
    common.absolutize(where)  # the same path rules as a new sweep's
    out = Path(where.run.out)
    file = out / SWEEP_FILE
    if not file.is_file():
        raise CvaeError(f"--resume: {file} not found (no sweep to resume in {out})")
    settings = storage.read_json(file, "sweep settings")
    if not isinstance(settings, dict) or settings.get("format") != SWEEP_FORMAT:
        raise CvaeError(f"{file}: not a sweep settings file ({SWEEP_FORMAT})")
    if args.space:
        print(f"--resume: the sweep continues with its own space ({settings['space_file']}); "
              f"--space {args.space} is ignored")
    return settings


# ---- the trial (runs inside Ray) ----

def _train_storage(settings: dict[str, Any]) -> str:
    storage = settings["storage_path"]
    return f"{storage.rstrip('/')}/train" if storage else str(Path(settings["out"]) / "ray")


def _tune_storage(settings: dict[str, Any]) -> str:
    return settings["storage_path"] or settings["out"]


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
    return [{k: v for k, v in r.items() if v is not None} for r in rows]


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
    _write_json(out / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
    done = _finished_rows(out, cfg.train.epochs)
    if done is not None:
        _event(out, "finished before; its metrics are reported again, nothing is retrained")
        for row in done:
            if "val_psnr" in row:
                ray.tune.report(row)
        return
    args = argparse.Namespace(num_workers=settings["num_workers"], use_gpu=settings["use_gpu"],
                              max_failures=settings["max_failures"], storage_path=None)
    trainer = common.build_trainer(
        cfg, args, pack_dir=Path(settings["pack_dir"]), num_clips=settings["num_clips"],
        cpus_per_worker=settings["cpus_per_worker_resolved"], resume=False,
        name=f"trial_{trial_id}", storage_path=_train_storage(settings),
        callbacks=[TuneReportCallback()],
    )
    _event(out, "trainer started")
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as err:
        # Training itself failed. (A trial that Tune stops, ASHA's or the last epoch's, sees
        # its controller die instead: no error file for that.)
        err = common.worker_error(err)  # the worker's own one line (e.g. TrainingDiverged)
        first = (str(err).strip().splitlines() or [""])[0]
        storage.write_text(out / report.ERROR_FILE, f"{type(err).__name__}: {first}\n")
        raise


def _event(out: Path, text: str) -> None:
    with open(out / EVENTS_FILE, "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


# ---- sizing ----

def size_trials(args: argparse.Namespace, settings: dict[str, Any], attached: bool) -> None:
    """CPUs per worker and trials at once, from what the cluster has; fail fast if one trial
    cannot fit (the trial's driver, its workers and one CPU for Ray Data's reads)."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    sizing = argparse.Namespace(
        num_workers=settings["num_workers"], use_gpu=settings["use_gpu"],
        cpus_per_worker=settings["cpus_per_worker"], resource_timeout=args.resource_timeout)
    # One CPU per worker at most: a sweep wants many trials at once, not one wide trial.
    per_worker = common.worker_cpus(sizing, cpus - TRIAL_CPU, cap=1.0)
    # A trial's workers + its driver must fit: check as if the driver were one more worker share.
    common.check_resources(sizing, per_worker + TRIAL_CPU / sizing.num_workers, attached)
    settings["cpus_per_worker_resolved"] = per_worker
    per_trial = TRIAL_CPU + settings["num_workers"] * per_worker
    fits = max(1, math.floor((cpus - 1) / per_trial))  # one CPU stays free for Ray Data
    if settings["use_gpu"]:
        fits = max(1, min(fits, math.floor(gpus / settings["num_workers"])))
    settings["max_concurrent_resolved"] = settings["max_concurrent"] or fits
    print(f"trials: {TRIAL_CPU:g} CPU driver + {settings['num_workers']} worker(s) x "
          f"{per_worker:g} CPU" + (" + 1 GPU" if settings["use_gpu"] else "")
          + f"; {settings['max_concurrent_resolved']} at once (cluster: {cpus:g} CPU, "
          f"{gpus:g} GPU)")


# ---- results (Ray-free once the trials have written their folders) ----

def export_best(out: Path, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Copy the best trial's best checkpoint (and its config) to <out>/best/."""
    best = next((r for r in rows if r["val_psnr"] is not None and r["checkpoint"]), None)
    if best is None:
        return None
    staging = out / ".best.tmp"
    storage.remove(staging)
    staging.mkdir(parents=True)
    shutil.copy2(best["checkpoint"], staging / "checkpoint.pt")
    trial = Path(best["path"])
    for name in ("config.yaml", "psnr_per_frame.csv", "psnr_per_frame.png"):
        if (trial / name).is_file():
            shutil.copy2(trial / name, staging / name)
    _write_json(staging / "trial.json", {k: best[k] for k in (
        "trial_id", "params", "val_psnr", "best_epoch", "epochs_run", "epochs", "checkpoint")})
    storage.swap_folder(staging, out / "best")
    return best


def summarize(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """results.csv, the Markdown table, best/ and the report, from the trials' run folders."""
    keys, rows = report.collect_trials(out)
    report.write_results_csv(keys, rows, out / "results.csv")
    print(report.markdown_table(keys, rows))
    best = export_best(out, rows)
    written = report.write_report(out)
    print(f"results: {out / 'results.csv'}  report: {written['report']}")
    return rows, best


def gather_remote_trials(grid, settings: dict[str, Any]) -> None:
    """On a multi-node cluster a trial's rank 0 writes its run folder on its own node. For every
    trial without a run folder here, rebuild one from what Tune received (metrics per epoch) and
    Ray Train stored (the best checkpoint; use a shared --storage-path)."""
    from cvae.rundir import METRIC_COLUMNS

    out = Path(settings["out"])
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")  # see _trial_dirname
        folder = out / TRIALS / trial_id
        if result.error is not None and folder.is_dir() and not (
                folder / report.ERROR_FILE).exists():
            lines = str(result.error).strip().splitlines() or [type(result.error).__name__]
            storage.write_text(folder / report.ERROR_FILE, lines[0][:500] + "\n")
        frame = result.metrics_dataframe
        if (folder / "metrics.csv").is_file() or frame is None or frame.empty \
                or "epoch" not in frame:
            continue
        values = {k: result.config[k] for k in settings["searched"]}
        cfg = trial_config(settings, values, trial_id)
        folder.mkdir(parents=True, exist_ok=True)
        storage.write_text(folder / "config.yaml", to_yaml(cfg))
        _write_json(folder / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
        cols = [c for c in METRIC_COLUMNS if c in frame]
        storage.write_text(folder / "metrics.csv",
                           frame[cols].drop_duplicates("epoch").to_csv(index=False))
        if result.error is not None:
            storage.write_text(folder / report.ERROR_FILE, f"{result.error}\n"[:500])
        try:
            import ray.train

            from cvae.checkpoint import CHECKPOINT_FILE

            stored = ray.train.Result.from_path(f"{_train_storage(settings)}/trial_{trial_id}")
            best = common.best_checkpoint(stored)
            if best is not None:
                scored = {c.path: c for c, _ in stored.best_checkpoints}
                with scored[best[1]].as_directory() as local:
                    (folder / "checkpoints").mkdir(exist_ok=True)
                    with storage.atomic_path(folder / report.BEST_CHECKPOINT) as tmp:
                        shutil.copy2(Path(local) / CHECKPOINT_FILE, tmp)
        except Exception as err:  # noqa: BLE001 - best effort; the table still lists the trial
            print(f"warning: trial {trial_id}: no best checkpoint fetched ({err})")


# ---- the command ----

def make_tuner(args: argparse.Namespace, settings: dict[str, Any]):
    """A new Tuner over the space (random or grid draws, ASHA), or the interrupted one."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    base = Config.from_dict(settings["base_config"], source=SWEEP_FILE)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                                    {"cpu": TRIAL_CPU})
    experiment = f"{_tune_storage(settings).rstrip('/')}/{EXPERIMENT}"
    if args.resume:
        if not tune.Tuner.can_restore(experiment):
            raise CvaeError(f"--resume: no Tune experiment state in {experiment}")
        print(f"resuming the sweep in {experiment}")
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    space = parse_space(settings["space"], settings["space_file"], base)
    return tune.Tuner(
        trainable,
        param_space={k: _tune_dist(tune, p) for k, p in space.searched.items()},
        tune_config=tune.TuneConfig(
            metric="val_psnr", mode="max", num_samples=settings["num_samples"],
            # Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
            search_alg=BasicVariantGenerator(max_concurrent=settings["max_concurrent_resolved"],
                                             random_state=settings["seed"]),
            scheduler=ASHAScheduler(
                time_attr="epoch", max_t=base.train.epochs,
                grace_period=settings["grace_period"],
                reduction_factor=settings["reduction_factor"]),
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=_tune_storage(settings),
                                  verbose=1),
    )


def finish(grid, settings: dict[str, Any]) -> int:
    """After Tuner.fit: the results table, best/ and the exit code."""
    out = Path(settings["out"])
    unfinished = _unfinished(grid)
    if unfinished:
        print(f"sweep interrupted with {unfinished} trial(s) unfinished; continue it with: "
              f"python -m ray_jobs.tune --out {out} --resume")
        return 130
    common.wait_for_train_actors()
    gather_remote_trials(grid, settings)
    for err in grid.errors:
        print(f"warning: a trial failed: {str(err).strip().splitlines()[0][:200]}")
    rows, best = summarize(out)
    if best is None:
        print("no trial produced a validated checkpoint")
        return 1
    print(f"best trial {best['trial_id']}: val_psnr {best['val_psnr']:.2f} dB at epoch "
          f"{best['best_epoch']} -> {out / 'best'} (cvae-test --checkpoint {out / 'best'})")
    return 0


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run and not args.resume:
        new_sweep(args)  # checks and prints the trials, writes nothing
        return 0
    with lock_folder(args.out or "runs/sweep"):  # the one writer of the sweep folder
        return sweep(args)


def sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep in --out, its writer lock held."""
    settings = load_sweep(args) if args.resume else new_sweep(args)
    attached = common.connect(args.address)
    size_trials(args, settings, attached)
    tuner = make_tuner(args, settings)
    try:
        grid = tuner.fit()
    finally:
        common.release_resources(attached)
    return finish(grid, settings)


def _unfinished(grid) -> int:
    """Trials left unfinished, as the experiment state saved for --resume records them. (After
    an interruption (SIGINT) Tune stops the running trials and the in-memory grid shows them
    TERMINATED; the state it saved just before says RUNNING, and a restore reruns them.)"""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    saved = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    return sum(t.status not in (Trial.TERMINATED, Trial.ERROR) for t in saved.trials)


def _tune_dist(tune, param):
    a = param.args
    return {
        "grid": lambda: tune.grid_search(list(a)),
        "choice": lambda: tune.choice(list(a)),
        "uniform": lambda: tune.uniform(a[0], a[1]),
        "loguniform": lambda: tune.loguniform(a[0], a[1]),
        "randint": lambda: tune.randint(a[0], a[1]),
        "quniform": lambda: tune.quniform(a[0], a[1], a[2]),
    }[param.kind]()


if __name__ == "__main__":
    main()
