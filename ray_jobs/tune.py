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
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from cvae import cli, report, storage
from cvae.checkpoint import initial_weights
from cvae.config import Config, parse_override, to_yaml
from cvae.errors import ConfigError, CvaeError, cli_entry
from cvae.lock import lock_folder
from cvae.report import DEFAULT_METRIC, RANKING_METRICS
from cvae.spaces import MAX_TRIALS, Space, check_values, load_space, parse_space
from ray_jobs import cluster, common, runs
from ray_jobs.cluster import ClusterConfig
from ray_jobs.search import (
    SEARCHERS,
    describe_search,
    param_space,
    search_alg,
    search_params,
    total_samples,
)
from ray_jobs.trial import (
    SWEEP_FILE,
    gather_trials,
    run_trial,
    sweep_cluster,
    trial_dirname,
    write_json,
)

SWEEP_FORMAT = "cvae-sweep/1"
EXPERIMENT = "tune"
TRIAL_CPU = 0.5  # the trial's driver function only waits on its TorchTrainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ray_jobs.tune", description=__doc__.split("\n\n")[0],
        parents=[
            cli.config_args("config/train.yaml"),
            cli.run_args(resume_help="continue the interrupted sweep in --out (its space and "
                         "settings come from <out>/sweep.json; finished trials are not rerun)",
                         dry_run_help="check the space, print the base config and the trials, "
                         "then exit"),
            cluster.cluster_args(("--workers-per-trial", "--num-workers"),
                                 "Ray Train workers (DDP ranks) per trial", workers="1"),
        ])
    # The sweep's own flags (alike in shape to cluster.cluster_args', which it also takes).
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


def check_sweep_args(args: argparse.Namespace, epochs: int) -> ClusterConfig:
    """The sweep's flags checked; returns the cluster settings every trial runs with."""
    settings = ClusterConfig.from_args(args, "--workers-per-trial")
    if args.num_samples is not None and args.num_samples < 1:
        raise CvaeError(f"--num-samples {args.num_samples}: must be >= 1")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise CvaeError(f"--max-concurrent {args.max_concurrent}: must be >= 1")
    if not 1 <= args.grace_period <= epochs:
        raise CvaeError(f"--grace-period {args.grace_period}: must be between 1 and the "
                        f"epochs ({epochs})")
    if args.reduction_factor <= 1:
        raise CvaeError(f"--reduction-factor {args.reduction_factor:g}: must be > 1")
    return settings


def new_sweep(args: argparse.Namespace) -> dict[str, Any] | None:
    """Check everything without Ray, pack the data once, write <out>/sweep.json."""
    if not args.space:
        raise CvaeError("--space FILE is required (e.g. tune_spaces/kl_tfr.yaml), unless "
                        "--resume")
    space = load_space(_space_path(args.space), check=False)  # keys and distributions
    cfg = base_config(args, space)
    check_values(space, cfg)  # every value the space can give, on this sweep's base config
    trials_cluster = check_sweep_args(args, cfg.train.epochs)
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
    root = sweep_root(trials_cluster, out)
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
        # How every trial uses the cluster (its connection, --address, is the command line's).
        "cluster": trials_cluster.replace(address=None, resource_timeout=None).to_dict(),
        "max_concurrent": args.max_concurrent,
        "grace_period": args.grace_period,
        "reduction_factor": args.reduction_factor,
        "seed": cfg.run.seed,
    }
    for note in notes:
        print(note)
    write_json(out / SWEEP_FILE, settings)
    return settings


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


def sweep_root(settings: ClusterConfig, out: Path) -> str:
    """Where the sweep keeps Tune's state (tune/), its trials' runs (ray/) and the packed data
    (pack/): --out itself, or <storage>/<name> with --storage-path (the name comes from --out or
    --name, and a new sweep refuses one that exists there)."""
    if not settings.storage_path:
        return str(out)
    root = runs.locate(str(out), settings).root
    if storage.exists(root):
        raise CvaeError(f"a sweep named {storage.name(root)!r} already exists in "
                        f"{settings.storage_path}: continue it with --resume (the same --out), or "
                        "choose another --name or --out")
    return root


# ---- sizing ----

def size_trials(args: argparse.Namespace, settings: dict[str, Any], attached: bool) -> None:
    """CPUs per worker and trials at once, from what the cluster has; fail fast if one trial
    cannot fit (the trial's driver, its workers and one CPU for Ray Data's reads) or cannot be
    placed as --placement-strategy says."""
    import ray

    trials_cluster = sweep_cluster(settings).replace(resource_timeout=args.resource_timeout)
    have = ray.cluster_resources()
    nodes = cluster.NodeShapes.read(attached)
    ceiling = cluster.cluster_ceiling(trials_cluster, attached)
    cpus, gpus = cluster.reachable(have, ceiling)  # what it can scale up to, not what it has
    # One CPU per worker at most: a sweep wants many trials at once, not one wide trial.
    per_worker = cluster.worker_cpus(trials_cluster, cpus - TRIAL_CPU, cap=1.0, nodes=nodes)
    cluster.check_placement(trials_cluster, per_worker, nodes)
    # A trial's workers + its driver must fit: check as if the driver were one more worker share.
    cluster.check_resources(trials_cluster,
                            per_worker + TRIAL_CPU / trials_cluster.min_workers, attached,
                            ceiling)
    settings["cpus_per_worker_resolved"] = per_worker
    gpu_share = trials_cluster.gpus_per_worker
    workers = trials_cluster.max_workers
    fits = trials_at_once(cpus, gpus, workers, per_worker, gpu_share)
    settings["max_concurrent_resolved"] = concurrency(settings["max_concurrent"], fits)
    print(f"trials: {TRIAL_CPU:g} CPU driver + {trials_cluster.workers_text} worker(s) x "
          f"{per_worker:g} CPU" + (f" + {gpu_share:g} GPU" if gpu_share else "")
          + f" ({trials_cluster.placement_strategy}); {settings['max_concurrent_resolved']} at "
          f"once (cluster: {have.get('CPU', 0.0):g} CPU, {have.get('GPU', 0.0):g} GPU now"
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


def concurrency(asked: int | None, fits: int) -> int:
    """Trials at once: --max-concurrent, or as many as fit. More than fit is lowered to what
    fits, with a warning: a trial started beyond that would take the CPU kept for Ray Data's
    reads, and the trials already running would wait for their data forever."""
    if asked is None:
        return fits
    if asked > fits:
        print(f"warning: --max-concurrent {asked}: {fits} trial(s) fit side by side on this "
              "cluster (one CPU is kept for Ray Data's reads); running "
              f"{fits} at once", file=sys.stderr)
        return fits
    return asked


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
    write_json(staging / "trial.json", {"ranked_by": metric, **{k: best[k] for k in (
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


# ---- the command ----

def make_tuner(args: argparse.Namespace, settings: dict[str, Any]):
    """A new Tuner over the space (random or grid draws, ASHA), or the interrupted one."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    base = Config.from_dict(settings["base_config"], source=SWEEP_FILE)
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings),
                                    {"cpu": TRIAL_CPU})
    experiment = storage.join(settings["root"], EXPERIMENT)
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
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(name=EXPERIMENT, storage_path=settings["root"],
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
        cluster.release_resources(attached)
    return finish(grid, settings)


def _attach_early(args: argparse.Namespace) -> bool | None:
    """On a cluster (an address given), attach before anything is written: a multi-node cluster
    refuses a local storage path or data at once. None when the sweep will start its own Ray."""
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        return None
    attached = common.connect(args.address)
    if not args.resume:
        trials_cluster = ClusterConfig.from_args(args, "--workers-per-trial")
        runs.check_shared(args.storage_path or args.out or "runs/sweep", args.data or "data.root",
                          trials_cluster,
                          cluster.NodeShapes.read(attached).multi_node(trials_cluster))
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


if __name__ == "__main__":
    main()
