"""cvae-report: the figures' data equals the runs' own logs; every figure is written; it works on
a sweep folder and on a single training run folder. No Ray: the folders are fabricated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cvae import report
from cvae.config import Config, to_yaml
from cvae.errors import CvaeError
from cvae.rundir import METRIC_COLUMNS
from cvae.schedules import kl_beta, teacher_forcing_ratio


def make_run(folder: Path, *, kl: str, epochs: int, ran: int, psnr0: float, lr: float = 1e-3,
             params: dict | None = None, psnr_curve: bool = True,
             psnrs: list[float] | None = None) -> list[dict]:
    """A run folder as the core writes it: config.yaml, metrics.csv, psnr_per_frame.csv.
    val_psnr climbs by 1 dB an epoch from psnr0, or follows `psnrs`."""
    cfg = Config()
    cfg.train.kl_anneal_type, cfg.train.epochs, cfg.train.lr = kl, epochs, lr
    cfg.train.kl_anneal_cycle, cfg.train.kl_anneal_ratio = 2, 0.5
    cfg.train.tfr_sde, cfg.train.tfr_d_step = 1, 0.25
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(to_yaml(cfg))
    rows = []
    for e in range(ran):
        beta = kl_beta(e, kl, 2, 0.5)
        tfr = teacher_forcing_ratio(e, 1.0, 1, 0.25)
        mse, kl_div = 0.5 / (e + 1), 2.0 + e
        psnr = psnrs[e] if psnrs else psnr0 + e
        rows.append({"epoch": e + 1, "loss": mse + beta * kl_div, "mse": mse, "kl": kl_div,
                     "beta": beta, "tfr": tfr, "lr": lr, "val_psnr": psnr,
                     "val_psnr_short": psnr0 + e + 0.5, "baseline_psnr": 20.0,
                     "baseline_psnr_short": 21.0, "seconds": 1.0})
    with open(folder / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if psnr_curve:
        lines = ["frame,psnr,baseline_psnr"] + [
            f"{t},{psnr0 + ran - 1 - 0.1 * t:.4f},{20 - 0.2 * t:.4f}" for t in range(1, 9)]
        (folder / "psnr_per_frame.csv").write_text("\n".join(lines) + "\n")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.pt").write_bytes(b"fake")
    if params is not None:
        (folder / "params.json").write_text(json.dumps({"trial_id": folder.name,
                                                        "params": params}))
    return rows


@pytest.fixture
def sweep(tmp_path) -> tuple[Path, dict[str, list[dict]]]:
    root = tmp_path / "sweep"
    trials = root / "trials"
    logs = {
        "a_00000": make_run(trials / "a_00000", kl="Monotonic", epochs=4, ran=4, psnr0=14.0,
                            params={"train.kl_anneal_type": "Monotonic", "train.lr": 1e-3}),
        "a_00001": make_run(trials / "a_00001", kl="Cyclical", epochs=4, ran=1, psnr0=9.0,
                            params={"train.kl_anneal_type": "Cyclical", "train.lr": 1e-3}),
        "a_00002": make_run(trials / "a_00002", kl="None", epochs=4, ran=4, psnr0=15.0, lr=2e-3,
                            params={"train.kl_anneal_type": "None", "train.lr": 2e-3}),
    }
    return root, logs


FIGURES = ("loss_by_kl_strategy.png", "beta_by_kl_strategy.png", "kl_by_kl_strategy.png",
           "tfr_vs_loss.png", "best_psnr_per_frame.png")


def test_report_data_is_the_trials_metrics(sweep):
    root, logs = sweep
    data = report.report_data(root)
    assert data["kind"] == "sweep"
    assert data["param_keys"] == ["train.kl_anneal_type", "train.lr"]
    # Table: best val_psnr first, epochs run, stopped early.
    assert [t["trial_id"] for t in data["trials"]] == ["a_00002", "a_00000", "a_00001"]
    by_id = {t["trial_id"]: t for t in data["trials"]}
    assert by_id["a_00002"]["val_psnr"] == pytest.approx(18.0)
    assert by_id["a_00002"]["best_epoch"] == 4
    assert by_id["a_00001"]["epochs_run"] == 1 and by_id["a_00001"]["stopped_early"]
    assert by_id["a_00001"]["status"] == "stopped"
    assert not by_id["a_00000"]["stopped_early"] and by_id["a_00000"]["status"] == "completed"
    assert by_id["a_00002"]["params"] == {"train.kl_anneal_type": "None", "train.lr": 2e-3}
    assert data["best"] == "a_00002"
    # Every plotted series is the trial's metrics.csv, one line per trial labelled by KL type.
    labels = {"a_00000": "Monotonic", "a_00001": "Cyclical", "a_00002": "None"}
    assert set(data["loss_by_kl_strategy"]) == set(labels.values())
    for trial_id, label in labels.items():
        rows = logs[trial_id]
        epochs = [r["epoch"] for r in rows]
        loss = data["loss_by_kl_strategy"][label]
        assert loss["trial_id"] == trial_id and loss["epoch"] == epochs
        assert loss["loss"] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
        beta = data["beta_by_kl_strategy"][label]
        assert beta["epoch"] == epochs
        assert beta["beta"] == pytest.approx([r["beta"] for r in rows], rel=1e-5)
        kl = data["kl_by_kl_strategy"][label]
        assert kl["trial_id"] == trial_id and kl["epoch"] == epochs
        assert kl["kl"] == pytest.approx([r["kl"] for r in rows], rel=1e-5)
        tfr = data["tfr_vs_loss"][label]
        assert tfr["tfr"] == pytest.approx([r["tfr"] for r in rows], rel=1e-5)
        assert tfr["loss"] == pytest.approx([r["loss"] for r in rows], rel=1e-5)
    # The strategies differ as the schedules say (Monotonic ramps, None is 1 throughout).
    assert data["beta_by_kl_strategy"]["None"]["beta"] == [1.0] * 4
    assert data["beta_by_kl_strategy"]["Monotonic"]["beta"][0] == 0.0
    # PSNR per frame: the best trial's curve.
    curve = data["psnr_per_frame"]
    assert curve["trial_id"] == "a_00002"
    with open(root / "trials" / "a_00002" / "psnr_per_frame.csv", newline="") as fh:
        expected = list(csv.DictReader(fh))
    assert curve["frame"] == [int(r["frame"]) for r in expected]
    assert curve["psnr"] == pytest.approx([float(r["psnr"]) for r in expected])
    assert curve["baseline_psnr"] == pytest.approx([float(r["baseline_psnr"]) for r in expected])


def test_cli_writes_every_figure_and_the_data(sweep, capsys):
    root, _ = sweep
    with pytest.raises(SystemExit) as info:
        report.main([str(root)])
    assert info.value.code == 0
    for name in (*FIGURES, "report.md", "report_data.json"):
        assert (root / name).stat().st_size > 0, name
    saved = json.loads((root / "report_data.json").read_text())
    assert saved == json.loads(json.dumps(report.report_data(root)))
    md = (root / "report.md").read_text()
    for name in FIGURES:
        assert f"({name})" in md
    assert "| a_00002 | None | 0.002 | 18 |" in md  # the results table, best first
    assert "a_00002" in capsys.readouterr().out  # the table is printed too


def test_repeated_strategies_are_labelled_by_trial(tmp_path):
    trials = tmp_path / "s" / "trials"
    make_run(trials / "t1", kl="Cyclical", epochs=2, ran=2, psnr0=10.0)
    make_run(trials / "t2", kl="Cyclical", epochs=2, ran=2, psnr0=11.0, psnr_curve=False)
    data = report.report_data(tmp_path / "s")
    assert set(data["loss_by_kl_strategy"]) == {"Cyclical [t1]", "Cyclical [t2]"}
    assert data["param_keys"] == list(report.DEFAULT_KEYS)  # no params.json: the KL/TFR keys
    assert data["best"] == "t2" and data["psnr_per_frame"] is None  # t2 has no curve
    written = report.write_report(tmp_path / "s", tmp_path / "out")
    assert "best_psnr_per_frame.png" not in written["figures"]
    assert "No psnr_per_frame.csv" in (tmp_path / "out" / "report.md").read_text()


def test_single_run_folder(tmp_path):
    run = tmp_path / "run"
    rows = make_run(run, kl="Cyclical", epochs=3, ran=3, psnr0=12.0)
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as info:
        report.main([str(run), "--out", str(out)])
    assert info.value.code == 0
    for name in (*FIGURES, "report.md", "report_data.json"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "report_data.json").read_text())
    assert data["kind"] == "run" and [t["trial_id"] for t in data["trials"]] == ["run"]
    assert data["loss_by_kl_strategy"]["Cyclical"]["loss"] == pytest.approx(
        [r["loss"] for r in rows], rel=1e-5)
    assert data["trials"][0]["val_psnr"] == pytest.approx(14.0)
    assert data["trials"][0]["params"]["train.kl_anneal_type"] == "Cyclical"


def test_results_csv_and_errors(sweep, tmp_path):
    root, _ = sweep
    (root / "trials" / "a_00001" / "error.txt").write_text("WorkerGroupError: boom\n")
    keys, rows = report.collect_trials(root)
    path = report.write_results_csv(keys, rows, tmp_path / "results.csv")
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["trial_id", *keys, *report.RESULT_COLUMNS]
    assert [r["trial_id"] for r in table] == ["a_00002", "a_00000", "a_00001"]
    assert table[2]["status"] == "error" and table[2]["stopped_early"] == "True"
    assert table[0]["checkpoint"].endswith("a_00002/checkpoints/best.pt")


@pytest.mark.parametrize("make", ["missing", "empty", "file"])
def test_not_a_run_folder(tmp_path, make, capsys):
    target = tmp_path / "x"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("hi")
    with pytest.raises(SystemExit) as info:
        report.main([str(target)])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_ranking_uses_the_chosen_metric_not_one_lucky_epoch(tmp_path):
    trials = tmp_path / "sweep" / "trials"
    make_run(trials / "lucky", kl="None", epochs=4, ran=4, psnr0=0, psnrs=[18, 21.8, 18, 18])
    make_run(trials / "steady", kl="Monotonic", epochs=4, ran=4, psnr0=0,
             psnrs=[19, 20, 20.5, 20.5])
    _, rows = report.collect_trials(tmp_path / "sweep")  # default: the smoothed figure
    assert [r["trial_id"] for r in rows] == ["steady", "lucky"]
    assert rows[0]["val_psnr_avg3"] == pytest.approx(61 / 3)
    assert rows[1]["val_psnr_avg3"] == pytest.approx(19.9)  # epochs 1-2: (18 + 21.8) / 2
    _, rows = report.collect_trials(tmp_path / "sweep", "val_psnr")
    assert [r["trial_id"] for r in rows] == ["lucky", "steady"]
    assert rows[0]["best_epoch"] == 2  # the checkpoint epoch stays the raw best
    with pytest.raises(CvaeError, match="--metric loss: expected one of"):
        report.collect_trials(tmp_path / "sweep", "loss")
