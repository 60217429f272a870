"""`cvae-report DIR`: the seed report's figures from the runs' own logs (no Ray needed).

DIR is a sweep folder (`DIR/trials/<trial id>/` run folders, as `python -m ray_jobs.tune` writes
them) or a single training run folder (`DIR/metrics.csv`). Every figure is drawn from
`report_data(DIR)`, which is also written to `report_data.json`:

- loss_by_kl_strategy.png   training loss per epoch, one line per trial, labelled by KL type
- beta_by_kl_strategy.png   the KL weight beta per epoch, one line per trial
- kl_by_kl_strategy.png     the KL divergence (nats per clip) per epoch, one line per trial: whether
                            the latent stays in use under each strategy
- tfr_vs_loss.png           training loss (left axis) against the teacher-forcing ratio (right
                            axis) per epoch, per trial: loss rises as teacher forcing decays
- best_psnr_per_frame.png   validation PSNR per frame of the best model (its best epoch; not
                            named psnr_per_frame.png, which a run folder holds of its own)
- report.md                 the results table and the figures
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from cvae.errors import CvaeError, cli_entry
from cvae.lock import lock_folder
from cvae.rundir import read_metrics
from cvae.smoothing import RAW, SMOOTHED, fill_smoothed
from cvae.storage import atomic_path, write_text

TRIALS_DIR = "trials"
PARAMS_FILE = "params.json"  # the searched values of a sweep trial (written by ray_jobs.tune)
ERROR_FILE = "error.txt"  # written by a sweep trial whose training raised
# Shown when no trial records which keys were searched (e.g. a single training run).
DEFAULT_KEYS = ("train.kl_anneal_type", "train.kl_anneal_cycle", "train.kl_anneal_ratio",
                "train.tfr_sde", "train.tfr_d_step", "train.lr")
FIGURES = ("loss_by_kl_strategy.png", "beta_by_kl_strategy.png", "kl_by_kl_strategy.png",
           "tfr_vs_loss.png", "best_psnr_per_frame.png")
RESULT_COLUMNS = ("val_psnr", SMOOTHED, "best_epoch", "epochs_run", "epochs", "stopped_early",
                  "status", "checkpoint")
# What trials are ranked by: each trial's best value of it over its epochs, higher is better.
RANKING_METRICS = (SMOOTHED, RAW)
DEFAULT_METRIC = SMOOTHED


def find_runs(folder: str | Path) -> tuple[str, list[tuple[str, Path]]]:
    """("run" | "sweep", [(run id, run folder), ...]) for a run folder or a sweep folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CvaeError(f"{folder}: not a folder")
    if (folder / "metrics.csv").is_file():
        return "run", [(folder.resolve().name, folder)]
    trials = folder / TRIALS_DIR
    runs = sorted((p.name, p) for p in trials.glob("*") if (p / "metrics.csv").is_file()) \
        if trials.is_dir() else []
    if not runs:
        raise CvaeError(f"{folder}: no metrics.csv in it nor in {TRIALS_DIR}/*/ (expected a "
                        "training run folder or a sweep folder)")
    return "sweep", runs


def read_config(run: Path) -> dict[str, Any]:
    file = run / "config.yaml"
    if not file.is_file():
        return {}
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError:
        raise CvaeError(f"{file}: not valid YAML") from None
    return values if isinstance(values, dict) else {}


def _lookup(config: dict[str, Any], key: str) -> Any:
    section, _, name = key.partition(".")
    return (config.get(section) or {}).get(name)


def read_params(run: Path) -> dict[str, Any]:
    file = run / PARAMS_FILE
    if not file.is_file():
        return {}
    try:
        return dict(json.loads(file.read_text()).get("params", {}))
    except (ValueError, AttributeError):
        raise CvaeError(f"{file}: not valid JSON") from None


def read_psnr_per_frame(run: Path) -> dict[str, list[float]] | None:
    file = run / "psnr_per_frame.csv"
    if not file.is_file():
        return None
    with open(file, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "frame": [int(r["frame"]) for r in rows],
        "psnr": [float(r["psnr"]) for r in rows],
        "baseline_psnr": [float(r["baseline_psnr"]) for r in rows if r.get("baseline_psnr")],
    }


def summarize_run(run_id: str, run: Path, param_keys: list[str]) -> dict[str, Any]:
    """One row of the results table for a run folder."""
    rows = fill_smoothed(read_metrics(run))
    config = read_config(run)
    epochs = _lookup(config, "train.epochs")
    scored = [(r["val_psnr"], r["epoch"]) for r in rows if r.get("val_psnr") is not None
              and not math.isnan(r["val_psnr"])]
    best_psnr, best_epoch = max(scored, key=lambda s: (s[0], -s[1])) if scored else (None, None)
    epochs_run = max((r["epoch"] for r in rows), default=0)
    checkpoint = best_checkpoint_of(run)
    if (run / ERROR_FILE).is_file():
        status = "error"
    elif epochs is not None and epochs_run >= epochs:
        status = "completed"
    else:
        status = "stopped"
    return {
        "trial_id": run_id,
        "params": {k: _lookup(config, k) for k in param_keys},
        "kl_anneal_type": _lookup(config, "train.kl_anneal_type"),
        "val_psnr": best_psnr,
        SMOOTHED: _best(rows, SMOOTHED),
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "epochs": epochs,
        "stopped_early": bool(epochs is not None and epochs_run < epochs),
        "status": status,
        "checkpoint": checkpoint,
        "path": str(run.resolve()),
    }


def best_checkpoint_of(run: Path) -> str:
    """The checkpoint file of a run's best epoch (`resolve_checkpoint_path`'s); "" when it kept
    none."""
    from cvae.checkpoint import resolve_checkpoint_path

    if not run.is_dir():
        return ""
    try:
        found = resolve_checkpoint_path(run)
    except CvaeError:
        return ""
    return str(found.resolve()) if isinstance(found, Path) else found  # a URI stays one


def _best(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and not math.isnan(r[key])]
    return max(values) if values else None


def check_metric(metric: str) -> str:
    if metric not in RANKING_METRICS:
        raise CvaeError(f"--metric {metric}: expected one of {', '.join(RANKING_METRICS)}")
    return metric


def rank(rows: list[dict[str, Any]], metric: str = DEFAULT_METRIC) -> list[dict[str, Any]]:
    """Best first by `metric`; ties by the raw val_psnr, then by trial id."""
    def key(row: dict[str, Any]) -> tuple:
        score, raw = row[metric], row["val_psnr"]
        return (score is None, -(score if score is not None else 0.0),
                -(raw if raw is not None else 0.0), row["trial_id"])

    return sorted(rows, key=key)


def collect_trials(folder: str | Path, metric: str = DEFAULT_METRIC
                   ) -> tuple[list[str], list[dict[str, Any]]]:
    """(searched keys, one summary per run sorted by its best `metric`, best first)."""
    check_metric(metric)
    _, runs = find_runs(folder)
    keys: list[str] = []
    for _, run in runs:
        for key in read_params(run):
            if key not in keys:
                keys.append(key)
    keys = keys or list(DEFAULT_KEYS)
    rows = [summarize_run(run_id, run, keys) for run_id, run in runs]
    return keys, rank(rows, metric)


def _labels(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each run labelled by its KL strategy, with the trial id where a strategy repeats."""
    counts: dict[str, int] = {}
    for row in rows:
        kind = str(row["kl_anneal_type"])
        counts[kind] = counts.get(kind, 0) + 1
    labels = {}
    for row in rows:
        kind = str(row["kl_anneal_type"])
        labels[row["trial_id"]] = kind if counts[kind] == 1 else f"{kind} [{row['trial_id']}]"
    return labels


def _series(trial_id: str, metrics: list[dict], *columns: str) -> dict[str, Any]:
    """One trial's per-epoch values of `columns` from its metrics rows, beside the epochs."""
    return {"trial_id": trial_id, "epoch": [r["epoch"] for r in metrics],
            **{c: [r.get(c) for r in metrics] for c in columns}}


def report_data(folder: str | Path, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """Every series the report plots, keyed by figure, plus the results table (ranked by
    `metric`)."""
    kind, runs = find_runs(folder)
    keys, rows = collect_trials(folder, metric)
    labels = _labels(rows)
    paths = dict(runs)
    loss, beta, kl, tfr_loss = {}, {}, {}, {}
    for row in sorted(rows, key=lambda r: r["trial_id"]):
        metrics = read_metrics(paths[row["trial_id"]])
        label = labels[row["trial_id"]]
        loss[label] = _series(row["trial_id"], metrics, "loss")
        beta[label] = _series(row["trial_id"], metrics, "beta")
        kl[label] = _series(row["trial_id"], metrics, "kl")
        tfr_loss[label] = _series(row["trial_id"], metrics, "tfr", "loss")
    best = next((r for r in rows if r["val_psnr"] is not None), None)
    psnr = None
    if best is not None:
        curve = read_psnr_per_frame(paths[best["trial_id"]])
        if curve is not None:
            psnr = {"trial_id": best["trial_id"], "label": labels[best["trial_id"]], **curve}
    return {
        "source": str(Path(folder).resolve()),
        "kind": kind,
        "metric": metric,
        "param_keys": keys,
        "trials": rows,
        "best": best["trial_id"] if best else None,
        "loss_by_kl_strategy": loss,
        "beta_by_kl_strategy": beta,
        "kl_by_kl_strategy": kl,
        "tfr_vs_loss": tfr_loss,
        "psnr_per_frame": psnr,
    }


# ---- tables ----

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_rows(keys: list[str], rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    header = ["trial_id", *keys, *RESULT_COLUMNS]
    body = [[r["trial_id"], *(r["params"].get(k) for k in keys), *(r[c] for c in RESULT_COLUMNS)]
            for r in rows]
    return header, body


def write_results_csv(keys: list[str], rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    header, body = table_rows(keys, rows)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for line in body:
            writer.writerow(["" if v is None else v for v in line])
    return path


def markdown_table(keys: list[str], rows: list[dict[str, Any]], *,
                   short_paths: bool = True) -> str:
    header, body = table_rows(keys, rows)
    if short_paths:  # the full path is in results.csv; the table stays readable
        ck = header.index("checkpoint")
        for line in body:
            if line[ck]:
                line[ck] = "/".join(Path(line[ck]).parts[-3:])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in line) + " |" for line in body]
    return "\n".join(lines)


# ---- figures ----

def _xy(xs: list, ys: list) -> tuple[list, list]:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _tfr_vs_loss(series: dict[str, dict], path: Path) -> Path:
    from cvae import plots

    plt = plots.plt
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax2 = ax.twinx()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, s) in enumerate(series.items()):
        color = colors[i % len(colors)]
        ax.plot(*_xy(s["epoch"], s["loss"]), "o-", color=color, ms=3, label=f"loss: {label}")
        ax2.plot(*_xy(s["epoch"], s["tfr"]), "--", color=color, alpha=0.7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (solid)")
    ax.set_yscale("log")
    ax2.set_ylabel("teacher-forcing ratio (dashed)")
    ax2.set_ylim(-0.05, 1.05)
    ax.set_title("Teacher-forcing ratio against training loss")
    if series:
        ax.legend(fontsize=7, loc="upper left")
    return plots._save(fig, path)


def write_figures(data: dict[str, Any], out: Path) -> dict[str, Path]:
    from cvae import plots

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    written["loss_by_kl_strategy.png"] = plots.lines(
        {k: _xy(s["epoch"], s["loss"]) for k, s in data["loss_by_kl_strategy"].items()},
        out / "loss_by_kl_strategy.png", xlabel="epoch", ylabel="training loss (per clip)",
        title="Training loss by KL-annealing strategy", logy=True)
    written["beta_by_kl_strategy.png"] = plots.lines(
        {k: _xy(s["epoch"], s["beta"]) for k, s in data["beta_by_kl_strategy"].items()},
        out / "beta_by_kl_strategy.png", xlabel="epoch", ylabel="KL weight beta",
        title="KL weight by annealing strategy")
    written["kl_by_kl_strategy.png"] = plots.lines(
        {k: _xy(s["epoch"], s["kl"]) for k, s in data["kl_by_kl_strategy"].items()},
        out / "kl_by_kl_strategy.png", xlabel="epoch", ylabel="KL divergence (nats per clip)",
        title="KL divergence by annealing strategy", logy=True)
    written["tfr_vs_loss.png"] = _tfr_vs_loss(data["tfr_vs_loss"], out / "tfr_vs_loss.png")
    curve = data["psnr_per_frame"]
    if curve is not None:
        best = next(r for r in data["trials"] if r["trial_id"] == curve["trial_id"])
        written["best_psnr_per_frame.png"] = plots.psnr_per_frame(
            curve["psnr"], out / "best_psnr_per_frame.png", baseline=curve["baseline_psnr"],
            title=f"Validation PSNR per frame, best model ({curve['label']}, epoch "
                  f"{best['best_epoch']}: {best['val_psnr']:.2f} dB)")
    return written


def _markdown(data: dict[str, Any], figures: dict[str, Path], out: Path) -> str:
    rows = data["trials"]
    what = "sweep" if data["kind"] == "sweep" else "training run"
    lines = [f"# Report: {what} `{data['source']}`", ""]
    best = next((r for r in rows if r["trial_id"] == data["best"]), None)
    if best is not None:
        lines += [f"Best: **{best['trial_id']}** ({best['kl_anneal_type']}), val_psnr "
                  f"{best['val_psnr']:.2f} dB at epoch {best['best_epoch']} (ranked by "
                  f"{data['metric']}).", ""]
    stopped = [r["trial_id"] for r in rows if r["status"] == "stopped"]
    if stopped:
        lines += [f"Stopped early (ASHA, or interrupted): {', '.join(stopped)}.", ""]
    lines += [f"## Results (best {data['metric']} first)", "",
              markdown_table(data["param_keys"], rows), ""]
    captions = {
        "loss_by_kl_strategy.png": "Training loss per epoch by KL-annealing strategy",
        "beta_by_kl_strategy.png": "KL weight beta per epoch by strategy",
        "kl_by_kl_strategy.png": "KL divergence per epoch by strategy",
        "tfr_vs_loss.png": "Teacher-forcing ratio against training loss",
        "best_psnr_per_frame.png": "PSNR per frame of the best model (validation videos)",
    }
    for name in FIGURES:
        if name in figures:
            rel = os.path.relpath(figures[name], out)
            lines += [f"## {captions[name]}", "", f"![{captions[name]}]({rel})", ""]
    if "best_psnr_per_frame.png" not in figures:
        lines += ["(No psnr_per_frame.csv in the best run: no PSNR-per-frame figure.)", ""]
    lines += ["The data behind every figure: `report_data.json`.", ""]
    return "\n".join(lines)


def write_report(folder: str | Path, out: str | Path | None = None,
                 metric: str = DEFAULT_METRIC) -> dict[str, Any]:
    """Write the figures, report_data.json and report.md into `out` (default: `folder`)."""
    data = report_data(folder, metric)
    out = Path(out) if out is not None else Path(folder)
    figures = write_figures(data, out)
    write_text(out / "report_data.json", json.dumps(data, indent=1))
    report = write_text(out / "report.md", _markdown(data, figures, out))
    return {"report": report, "figures": figures, "data": out / "report_data.json",
            "best": data["best"]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvae-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a sweep folder (with trials/) or a training run folder")
    parser.add_argument("--out", help="where to write the report (default: the folder itself)")
    parser.add_argument("--metric", default=DEFAULT_METRIC, choices=RANKING_METRICS,
                        help=f"rank the runs by their best value of this (default {DEFAULT_METRIC}"
                             ": the mean of the last 3 epochs' val_psnr, robust to one lucky "
                             "epoch)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with lock_folder(args.out or args.folder):
        result = write_report(args.folder, args.out, args.metric)
    data = json.loads(Path(result["data"]).read_text())
    print(markdown_table(data["param_keys"], data["trials"]))
    print(f"report: {result['report']}")
    print(f"figures: {', '.join(str(p) for p in result['figures'].values())}")
    return 0
