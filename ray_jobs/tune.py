"""Hyperparameter sweeps on Ray Tune: `python -m ray_jobs.tune --space tune_spaces/kl_tfr.yaml`.

Each trial is a driver function that trains one configuration with a Ray Train `TorchTrainer`
(DDP over Ray Data shards, exactly like `ray_jobs.train`), forwarding every epoch's metrics to Tune
(TuneReportCallback). ASHA stops trials that fall behind on --metric (default val_psnr_avg3, the
mean of the last 3 epochs' val_psnr); the searcher is random/grid draws or Optuna's TPE.

    python -m ray_jobs.tune --space tune_spaces/smoke.yaml --data data/dance.pack --out runs/sweep
    python -m ray_jobs.tune --out runs/sweep --resume          # after an interruption
    cvae-test --checkpoint runs/sweep/best

<out>/: sweep.json (the sweep's settings, reused by --resume), pack/ (the data, packed once),
trials/<trial id>/ (each trial's run folder: metrics.csv, config.yaml, checkpoints/, figures),
tune/ (Tune's experiment state), ray/ (Ray Train's checkpoints), results.csv (one row per trial,
best --metric first), best/ (the best trial's best checkpoint: checkpoint.pt + config.yaml, for
cvae-test) and the report (report.md, figures; see cvae-report).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cvae import cli, report, storage
from cvae.checkpoint import RUN_FILE, initial_weights
from cvae.config import Config, parse_override, set_key, to_yaml, validate
from cvae.errors import ConfigError, CvaeError, cli_entry
from cvae.lock import lock_folder
from cvae.report import DEFAULT_METRIC, RANKING_METRICS
from cvae.smoothing import fill_smoothed
from cvae.spaces import MAX_TRIALS, Param, Space, check_values, load_space, parse_space
from ray_jobs import common, runs

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = "cvae-sweep/1"
EXPERIMENT = "tune"
TRIALS = report.TRIALS_DIR
TRIAL_CPU = 0.5  # the trial's driver function only waits on its TorchTrainer
EVENTS_FILE = "sweep_events.log"  # per trial: one line each time its trainer starts
SEARCHERS = ("random", "optuna")
OPTUNA_VALUE_TYPES = (str, int, float, bool, type(None))  # what an Optuna categorical holds


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
    # The sweep's own flags (alike in shape to common.cluster_args', which it also takes).
    parser.add_argument("--space", help="search space YAML (tune_spaces/*.yaml)")
    parser.add_argument("--search", choices=SEARCHERS, default="random",
                        help="random: every grid combination, other keys drawn at random; "
                             "optuna: Optuna's TPE (seeded by --seed) picks each trial from the "
                             "results so far, a grid becomes a choice (default random)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="random: trials per grid combination (default 1); optuna: the total "
                             "number of trials (default: the grid's combinations)")
    parser.add_argument("--metric", choices=RANKING_METRICS, default=DEFAULT_METRIC,
                        help="what ASHA stops on, the searcher optimizes and results.csv/best/ "
                             f"rank by (default {DEFAULT_METRIC}: the mean of the last 3 epochs' "
                             "val_psnr, robust to one lucky epoch)")
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
    common.resolve_gpus(args)
    common.check_max_failures(args.max_failures)
    if args.num_samples is not None and args.num_samples < 1:
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
    num_samples = total_samples(args, space)
    # Counted, so a huge grid never fills the memory: random search runs every grid combination
    # num_samples times, Optuna num_samples trials in all.
    if args.search == "random":
        space.check_trials(num_samples)
    elif num_samples > MAX_TRIALS:
        raise CvaeError(f"{num_samples:,} trials, more than {MAX_TRIALS:,}: pass a smaller "
                        "--num-samples")
    _, notes = search_params(space, args.search)  # (a value Optuna cannot take fails here)
    out = Path(cfg.run.out)
    if (out / SWEEP_FILE).exists() and not args.dry_run:
        raise CvaeError(f"{out} already holds a sweep ({out / SWEEP_FILE}): pass --resume to "
                        "continue it, or choose another --out")
    if args.dry_run:
        print_dry_run(args, cfg, space, num_samples, notes)
        return None
    root = sweep_root(args, out)
    out.mkdir(parents=True, exist_ok=True)
    # bad data fails here, before Ray starts
    pack_dir, meta = common.prepare_data(cfg, storage.join(root, "pack"))
    settings = {
        "format": SWEEP_FORMAT,
        "out": str(out),
        "root": root,
        "space_file": str(Path(space.path).resolve()),
        "space": {k: _raw(p) for k, p in space.params.items()},
        "searched": list(space.searched),
        "base_config": cfg.to_dict(),
        "pack_dir": str(pack_dir),
        "num_clips": meta["num_clips"],
        "search": args.search,
        "metric": args.metric,
        "num_samples": num_samples,
        "num_workers": args.num_workers,
        "use_gpu": args.use_gpu,
        "gpus_per_worker": args.gpus_per_worker,
        "max_cluster_cpus": args.max_cluster_cpus,
        "max_cluster_gpus": args.max_cluster_gpus,
        "cpus_per_worker": args.cpus_per_worker,
        "max_failures": args.max_failures,
        "storage_path": args.storage_path,
        "max_concurrent": args.max_concurrent,
        "grace_period": args.grace_period,
        "reduction_factor": args.reduction_factor,
        "seed": cfg.run.seed,
    }
    for note in notes:
        print(note)
    _write_json(out / SWEEP_FILE, settings)
    return settings


# ---- the searcher (Ray-free up to the Tune objects themselves) ----

def total_samples(args: argparse.Namespace, space: Space) -> int:
    """Tune's num_samples: per grid combination for random search, all trials for Optuna."""
    if args.num_samples is not None:
        return args.num_samples
    return space.grid_size if args.search == "optuna" else 1


def search_params(space: Space, search: str) -> tuple[dict[str, Param], list[str]]:
    """The searched keys as the searcher takes them, and one line per grid turned into a choice
    (a sequential searcher such as Optuna's TPE cannot enumerate a grid)."""
    if search == "random":
        return dict(space.searched), []
    params, notes = {}, []
    for key, param in space.searched.items():
        if param.kind in ("grid", "choice"):
            _check_optuna_values(key, param)
        if param.kind == "grid":
            param = Param(key, "choice", param.args)
            notes.append(f"{key}: grid -> choice ({search} cannot grid; it picks among "
                         f"{list(param.args)})")
        params[key] = param
    return params, notes


def _check_optuna_values(key: str, param: Param) -> None:
    bad = [v for v in param.args if not isinstance(v, OPTUNA_VALUE_TYPES)]
    if bad:
        raise CvaeError(f"--search optuna: {key}: {param.kind} value {bad[0]!r} is not a "
                        "number, string, true/false or null (Optuna cannot choose it); use "
                        "--search random")


def describe_search(search: str, num_samples: int, space: Space, metric: str, seed: int) -> str:
    if search == "optuna":
        return (f"searcher: optuna (Optuna's TPE through Ray Tune's OptunaSearch, seed {seed}): "
                f"{num_samples} trials in all, each chosen from the results so far; ASHA and "
                f"the ranking use {metric}")
    trials = space.grid_size * num_samples
    return (f"searcher: random (seed {seed}): {trials} trials (grid {space.grid_size} x "
            f"{num_samples} samples); ASHA and the ranking use {metric}; e.g.:")


def param_space(params: dict[str, Param]) -> dict[str, Any]:
    """Tune's param_space: each key's Tune distribution (a grid only for random search)."""
    from ray import tune

    return {k: _tune_dist(tune, p) for k, p in params.items()}


def search_alg(settings: dict[str, Any]):
    """The searcher, holding at most the resolved number of trials at once."""
    if settings.get("search", "random") == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # Tune's max_concurrent_trials would wrap it the same way; explicit is clearer.
        return ConcurrencyLimiter(OptunaSearch(seed=settings["seed"]),
                                  max_concurrent=settings["max_concurrent_resolved"])
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
    return BasicVariantGenerator(max_concurrent=settings["max_concurrent_resolved"],
                                 random_state=settings["seed"])


def print_dry_run(args: argparse.Namespace, cfg: Config, space: Space, num_samples: int,
                  notes: list[str]) -> None:
    """The base config, the space, the searcher (with each grid it turns into a choice) and,
    for random search, every trial's values."""
    print(to_yaml(cfg))
    print(f"space {space.path}: " + ", ".join(f"{k}={p.describe()}"
                                              for k, p in space.searched.items()))
    print(describe_search(args.search, num_samples, space, args.metric, cfg.run.seed))
    for note in notes:
        print(note)
    if args.search == "random":
        for values in space.sample(num_samples, seed=cfg.run.seed):
            space.apply(cfg, values)
            print("  " + ", ".join(f"{k}={v!r}" for k, v in values.items()))


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

def sweep_root(args: argparse.Namespace, out: Path) -> str:
    """Where the sweep keeps Tune's state (tune/), its trials' runs (ray/) and the packed data
    (pack/): --out itself, or <storage>/<name> with --storage-path (the name comes from --out or
    --name, and a new sweep refuses one that exists there)."""
    if not args.storage_path:
        return str(out)
    root = runs.locate(str(out), args).root
    if storage.exists(root):
        raise CvaeError(f"a sweep named {storage.name(root)!r} already exists in "
                        f"{args.storage_path}: continue it with --resume (the same --out), or "
                        "choose another --name or --out")
    return root


def _train_storage(settings: dict[str, Any]) -> str:
    return storage.join(settings["root"], "ray")


def _tune_storage(settings: dict[str, Any]) -> str:
    return settings["root"]


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
    _write_json(out / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
    done = _finished_rows(out, cfg.train.epochs)
    if done is not None:
        _event(out, "finished before; its metrics are reported again, nothing is retrained")
        for row in done:
            if "val_psnr" in row:
                ray.tune.report(row)
        return
    args = argparse.Namespace(num_workers=settings["num_workers"], use_gpu=settings["use_gpu"],
                              gpus_per_worker=settings.get("gpus_per_worker"),
                              max_failures=settings["max_failures"])
    run = _trial_run(settings, trial_id)
    runs.write_run_file(run, str(out), None)  # where its checkpoints are, even if Tune stops it
    trainer = common.build_trainer(
        cfg, args, run=run, pack=settings["pack_dir"], num_clips=settings["num_clips"],
        cpus_per_worker=settings["cpus_per_worker_resolved"], out=str(out),
        init_weights=initial_weights(cfg), callbacks=[TuneReportCallback()],
    )
    _event(out, "trainer started")
    try:
        result = trainer.fit()
        best = common.best_checkpoint(result, cfg.validation.best_by)
        runs.write_run_file(run, str(out), run.checkpoint_uri(best[1]) if best else None)
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
    sizing = argparse.Namespace(
        num_workers=settings["num_workers"], use_gpu=settings["use_gpu"],
        gpus_per_worker=settings.get("gpus_per_worker"),
        max_cluster_cpus=settings.get("max_cluster_cpus"),
        max_cluster_gpus=settings.get("max_cluster_gpus"),
        cpus_per_worker=settings["cpus_per_worker"], resource_timeout=args.resource_timeout)
    ceiling = common.cluster_ceiling(sizing, attached)
    cpus, gpus = common.reachable(have, ceiling)  # what it can scale up to, not what it has
    # One CPU per worker at most: a sweep wants many trials at once, not one wide trial.
    per_worker = common.worker_cpus(sizing, cpus - TRIAL_CPU, cap=1.0)
    # A trial's workers + its driver must fit: check as if the driver were one more worker share.
    common.check_resources(sizing, per_worker + TRIAL_CPU / sizing.num_workers, attached,
                           ceiling)
    settings["cpus_per_worker_resolved"] = per_worker
    gpu_share = common.gpus_per_worker(sizing)
    fits = trials_at_once(cpus, gpus, settings["num_workers"], per_worker, gpu_share)
    settings["max_concurrent_resolved"] = settings["max_concurrent"] or fits
    print(f"trials: {TRIAL_CPU:g} CPU driver + {settings['num_workers']} worker(s) x "
          f"{per_worker:g} CPU" + (f" + {gpu_share:g} GPU" if gpu_share else "")
          + f"; {settings['max_concurrent_resolved']} at once (cluster: "
          f"{have.get('CPU', 0.0):g} CPU, {have.get('GPU', 0.0):g} GPU now"
          + (f"; up to {cpus:g} CPU, {gpus:g} GPU" if ceiling else "") + ")")


def trials_at_once(cpus: float, gpus: float, workers: int, cpus_per_worker: float,
                   gpus_per_worker: float) -> int:
    """How many trials fit side by side (at least one): each takes its driver's CPU share and
    its workers' CPUs and GPU shares; one CPU stays free for Ray Data's reads."""
    per_trial = TRIAL_CPU + workers * cpus_per_worker
    fits = math.floor((cpus - 1) / per_trial + 1e-9)
    if gpus_per_worker:
        fits = min(fits, math.floor(gpus / (workers * gpus_per_worker) + 1e-9))
    return max(1, fits)


# ---- results (Ray-free once the trials have written their folders) ----

def export_best(out: Path, rows: list[dict[str, Any]],
                metric: str = DEFAULT_METRIC) -> dict[str, Any] | None:
    """Copy the first-ranked trial's best checkpoint (its epoch of best raw val_psnr, unless the
    space sets validation.best_by) and its config to <out>/best/; `rows` come ranked by
    `metric`."""
    best = next((r for r in rows if r["val_psnr"] is not None and r["checkpoint"]), None)
    if best is None:
        return None
    staging = out / ".best.tmp"
    storage.remove(staging)
    staging.mkdir(parents=True)
    storage.write_bytes(staging / "checkpoint.pt", storage.read_location(best["checkpoint"]))
    trial = Path(best["path"])
    for name in ("config.yaml", "psnr_per_frame.csv", "psnr_per_frame.png"):
        if (trial / name).is_file():
            shutil.copy2(trial / name, staging / name)
    _write_json(staging / "trial.json", {"ranked_by": metric, **{k: best[k] for k in (
        "trial_id", "params", "val_psnr", "val_psnr_avg3", "best_epoch", "epochs_run", "epochs",
        "checkpoint")}})
    storage.swap_folder(staging, out / "best")
    return best


def summarize(out: Path, metric: str = DEFAULT_METRIC
              ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """results.csv, the Markdown table, best/ and the report, from the trials' run folders,
    ranked by each trial's best `metric`."""
    keys, rows = report.collect_trials(out, metric)
    report.write_results_csv(keys, rows, out / "results.csv")
    print(report.markdown_table(keys, rows))
    best = export_best(out, rows, metric)
    written = report.write_report(out, metric=metric)
    print(f"results: {out / 'results.csv'}  report: {written['report']}")
    return rows, best


def gather_trials(grid, settings: dict[str, Any]) -> None:
    """Every trial's run folder, complete in <out>/trials/<id>, from the trial's storage: on a
    multi-node cluster a trial's rank 0 (and the trial's own mirror) ran on another node."""
    out = Path(settings["out"])
    for result in grid:
        trial_id = Path(result.path).name.removeprefix("trial_")  # see _trial_dirname
        folder = out / TRIALS / trial_id
        run = _trial_run(settings, trial_id)
        storage.sync_tree(run.folder, folder)
        if not (folder / RUN_FILE).is_file():
            runs.write_run_file(run, str(folder), None)
        values = {k: result.config[k] for k in settings["searched"]}
        if not (folder / report.PARAMS_FILE).is_file():
            _write_json(folder / report.PARAMS_FILE, {"trial_id": trial_id, "params": values})
        if result.error is not None and not (folder / report.ERROR_FILE).exists():
            lines = str(result.error).strip().splitlines() or [type(result.error).__name__]
            storage.write_text(folder / report.ERROR_FILE, lines[0][:500] + "\n")


def _trial_run(settings: dict[str, Any], trial_id: str) -> runs.RunStorage:
    return runs.RunStorage(_train_storage(settings), f"trial_{trial_id}")


# ---- the command ----

def make_tuner(args: argparse.Namespace, settings: dict[str, Any]):
    """A new Tuner over the space (random or grid draws, ASHA), or the interrupted one."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    base = Config.from_dict(settings["base_config"], source=SWEEP_FILE)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                                    {"cpu": TRIAL_CPU})
    experiment = storage.join(_tune_storage(settings), EXPERIMENT)
    if args.resume:
        if not tune.Tuner.can_restore(experiment):
            raise CvaeError(f"--resume: no Tune experiment state in {experiment}")
        print(f"resuming the sweep in {experiment}")
        return tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    space = parse_space(settings["space"], settings["space_file"], base)
    search = settings.get("search", "random")
    return tune.Tuner(
        trainable,
        param_space=param_space(search_params(space, search)[0]),
        tune_config=tune.TuneConfig(
            metric=_metric(settings), mode="max", num_samples=settings["num_samples"],
            search_alg=search_alg(settings),
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
    common.wait_for_train_actors(job_id=_job_id())
    gather_trials(grid, settings)
    for err in grid.errors:
        print(f"warning: a trial failed: {str(err).strip().splitlines()[0][:200]}")
    metric = _metric(settings)
    rows, best = summarize(out, metric)
    if best is None:
        print("no trial produced a validated checkpoint")
        return 1
    print(f"best trial {best['trial_id']} by {metric} ({best[metric]:.2f} dB): val_psnr "
          f"{best['val_psnr']:.2f} dB at epoch {best['best_epoch']} -> {out / 'best'} "
          f"(cvae-test --checkpoint {out / 'best'})")
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
    attached = _attach_early(args)
    settings = load_sweep(args) if args.resume else new_sweep(args)
    if attached is None:
        attached = common.connect(args.address)
    size_trials(args, settings, attached)
    tuner = make_tuner(args, settings)
    try:
        grid = tuner.fit()
    finally:
        common.release_resources(attached)
    return finish(grid, settings)


def _attach_early(args: argparse.Namespace) -> bool | None:
    """On a cluster (an address given), attach before anything is written: a multi-node cluster
    refuses a local storage path or data at once. None when the sweep will start its own Ray."""
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        return None
    attached = common.connect(args.address)
    if not args.resume:
        runs.check_shared(args.storage_path or args.out or "runs/sweep", args.data or "data.root",
                          args, runs.alive_nodes())
    return attached


def _metric(settings: dict[str, Any]) -> str:
    """The ranking metric; a sweep started before --metric existed ranked by val_psnr."""
    return settings.get("metric", "val_psnr")


def _job_id() -> str | None:
    """This driver's Ray job id (hex): the job of every trial's Train actors."""
    import ray

    return ray.get_runtime_context().get_job_id()


def _unfinished(grid) -> int:
    """Trials left unfinished, as the experiment state saved for --resume records them. (After
    an interruption (SIGINT) Tune stops the running trials and the in-memory grid shows them
    TERMINATED; the state it saved just before says RUNNING, and a restore reruns them.)"""
    from ray.tune import ExperimentAnalysis
    from ray.tune.experiment import Trial

    saved = ExperimentAnalysis(grid.experiment_path, storage_filesystem=grid.filesystem)
    return sum(t.status not in (Trial.TERMINATED, Trial.ERROR) for t in saved.trials)


def _tune_dist(tune, param: Param):
    a = param.args
    return {
        "grid": lambda: tune.grid_search(list(a)),
        "choice": lambda: tune.choice(list(a)),
        "uniform": lambda: tune.uniform(a[0], a[1]),
        "loguniform": lambda: tune.loguniform(a[0], a[1]),
        "randint": lambda: tune.randint(a[0], a[1]),
        # lo and hi rounded inwards onto the grid of q (the edges): Tune refuses a lo off the
        # grid, and Optuna steps from lo.
        "quniform": lambda: tune.quniform(*param.edges(), a[2]),
    }[param.kind]()


if __name__ == "__main__":
    main()
