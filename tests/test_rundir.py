"""The run folder (cvae.rundir): metrics.csv and its reader, figures, TensorBoard, config.yaml;
most checks read the finished tiny `cvae-train` run (the tiny_run fixture)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import metrics_rows as metrics
from conftest import saved_state as load
from PIL import Image

from cvae.config import Config, load_config
from cvae.rundir import METRIC_COLUMNS, RunDir, read_metrics

HEADER = ("epoch,loss,mse,kl,beta,tfr,lr,workers,val_psnr,val_psnr_short,val_psnr_avg3,"
          "baseline_psnr,baseline_psnr_short,val_ssim,val_ssim_short,baseline_ssim,baseline_ssim_short,"
          "val_box_ssim,baseline_box_ssim,val_sharpness,baseline_sharpness,seconds,val_seconds")
BOX_COLUMNS = ("val_box_ssim", "baseline_box_ssim", "val_sharpness", "baseline_sharpness")


def test_rundir_resume_forgets_rows_past_the_checkpoint(tmp_path):
    cfg = Config()
    run = RunDir(tmp_path, cfg)
    for epoch in (1, 2, 3):
        run.rows.append({k: None for k in METRIC_COLUMNS} | {"epoch": epoch, "loss": 1.0})
    run._write_metrics()
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    RunDir(tmp_path, cfg, resume_epoch=2)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    assert (tmp_path / "config.yaml").is_file()
    RunDir(tmp_path, cfg, resume_epoch=0)
    assert read_metrics(tmp_path) == []
    assert (tmp_path / "metrics.csv").read_text().strip() == HEADER


def test_read_metrics_gives_typed_rows(tmp_path):
    assert read_metrics(tmp_path) == []  # no metrics.csv: no rows
    (tmp_path / "metrics.csv").write_text(
        HEADER + "\n"
        "1,0.5,0.25,2,0,1,0.001,1,,,,,,,,,,,,,,3.5\n"
        ",,,,,,,,,,,,,,,,,,,,,\n"  # a row without an epoch is skipped
        "2,0.4,0.2,2,0.1,1,0.001,2,20.5,21,20.5,19,19.5,0.8,0.9,0.7,0.75,0.6,0.5,0.85,1.1,"
        "not-a-number\n")
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(type(r["epoch"]) is int for r in rows)
    assert rows[0]["loss"] == 0.5 and rows[0]["lr"] == 0.001 and rows[0]["seconds"] == 3.5
    assert (rows[0]["workers"], rows[1]["workers"]) == (1, 2)
    assert rows[0]["val_psnr"] is None and rows[0]["baseline_psnr_short"] is None
    assert rows[1]["val_psnr"] == 20.5 and rows[1]["seconds"] is None
    assert rows[1]["val_ssim"] == 0.8 and rows[0]["val_ssim"] is None
    assert [rows[1][k] for k in BOX_COLUMNS] == [0.6, 0.5, 0.85, 1.1]
    assert all(rows[0][k] is None for k in BOX_COLUMNS)
    assert set(rows[0]) == set(METRIC_COLUMNS)


def test_a_metrics_csv_from_before_the_box_columns_still_reads(tmp_path):
    """Runs written before val_box_ssim .. baseline_sharpness and workers existed: those read
    None, and a run resumed from one rewrites its rows under the new header, the new cells
    empty."""
    old = [c for c in METRIC_COLUMNS if c not in (*BOX_COLUMNS, "workers", "val_seconds")]
    (tmp_path / "metrics.csv").write_text(
        ",".join(old) + "\n" + "1,0.5,0.25,2,0,1,0.001,20,21,20,19,19.5,0.8,0.9,0.7,0.75,3.5\n")
    rows = read_metrics(tmp_path)
    assert len(rows) == 1 and set(rows[0]) == set(METRIC_COLUMNS)
    assert rows[0]["val_psnr"] == 20.0 and rows[0]["seconds"] == 3.5
    assert all(rows[0][k] is None for k in (*BOX_COLUMNS, "workers"))
    RunDir(tmp_path, Config(), resume_epoch=1)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "1,0.5,0.25,2,0,1,0.001,,20,21,20,19,19.5,0.8,0.9,0.7,0.75,,,,,3.5,"


def test_read_metrics_reads_back_what_the_run_wrote(tiny_run):
    typed, written = read_metrics(tiny_run), metrics(tiny_run)
    assert [r["epoch"] for r in typed] == [int(r["epoch"]) for r in written] == [1, 2, 3]
    for a, b in zip(typed, written, strict=True):
        for key in METRIC_COLUMNS[1:]:
            assert a[key] == pytest.approx(float(b[key])), key


def test_run_folder_files(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"metrics.csv", "training.png", "psnr_per_frame.csv", "psnr_per_frame.png", "tb",
            "checkpoints", "config.yaml"} <= names
    assert {p.name for p in (tiny_run / "checkpoints").iterdir()} == {
        "last.pt", "best.pt", "epoch_3.pt"}  # per_save 3: epoch 3 only
    assert not [p for p in tiny_run.rglob(".*tmp*")]  # no temp files left behind
    for png in ("training.png", "psnr_per_frame.png"):
        with Image.open(tiny_run / png) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_metrics_csv(tiny_run):
    text = (tiny_run / "metrics.csv").read_text().splitlines()
    assert text[0] == HEADER
    rows = metrics(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # the default schedules: Cyclical beta over 10 epochs, tfr 1 until epoch 10, lr x0.1 at 2
    assert [float(r["beta"]) for r in rows] == pytest.approx([0.0, 0.1, 0.2])
    assert [float(r["tfr"]) for r in rows] == [1.0, 1.0, 1.0]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4])
    for r in rows:
        assert all(r[k] != "" for k in METRIC_COLUMNS), r
        loss, mse, kl, beta = (float(r[k]) for k in ("loss", "mse", "kl", "beta"))
        assert loss == pytest.approx(mse + beta * kl, rel=1e-4)
        assert mse > 0 and kl >= 0 and float(r["seconds"]) >= 0
        for k in ("val_psnr", "val_psnr_short", "baseline_psnr", "baseline_psnr_short"):
            assert 0 < float(r[k]) < 100
        for k in ("val_ssim", "val_ssim_short", "baseline_ssim", "baseline_ssim_short",
                  "val_box_ssim", "baseline_box_ssim"):
            assert -1 <= float(r[k]) <= 1
        assert float(r["val_sharpness"]) > 0 and float(r["baseline_sharpness"]) > 0
    # the smoothed PSNR: the mean of the last min(3, n) epochs' val_psnr
    psnr = [float(r["val_psnr"]) for r in rows]
    assert [float(r["val_psnr_avg3"]) for r in rows] == pytest.approx(
        [psnr[0], sum(psnr[:2]) / 2, sum(psnr) / 3], rel=1e-5)
    # the copy-last baseline depends on the data only
    assert len({r["baseline_psnr"] for r in rows}) == 1
    assert len({r["baseline_ssim"] for r in rows}) == 1
    assert len({r["baseline_box_ssim"] for r in rows}) == 1
    assert len({r["baseline_sharpness"] for r in rows}) == 1


def test_psnr_per_frame_csv_is_the_best_epoch(tiny_run):
    lines = (tiny_run / "psnr_per_frame.csv").read_text().splitlines()
    assert lines[0] == ("frame,psnr,baseline_psnr,ssim,baseline_ssim,box_ssim,baseline_box_ssim,"
                        "sharpness,baseline_sharpness")
    body = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in body] == [1, 2, 3, 4, 5]  # validation.val_len = 6
    rows = metrics(tiny_run)
    best = max(rows, key=lambda r: float(r["val_psnr"]))
    mean = sum(float(r[1]) for r in body) / len(body)
    assert mean == pytest.approx(float(best["val_psnr"]), abs=1e-3)
    baseline = sum(float(r[2]) for r in body) / len(body)
    assert baseline == pytest.approx(float(best["baseline_psnr"]), abs=1e-3)
    ssim = sum(float(r[3]) for r in body) / len(body)
    assert ssim == pytest.approx(float(best["val_ssim"]), abs=1e-3)
    # every synthetic pose has a skeleton: every frame has the box scores, their means in the row
    for column, key in ((5, "val_box_ssim"), (6, "baseline_box_ssim"), (7, "val_sharpness"),
                        (8, "baseline_sharpness")):
        mean = sum(float(r[column]) for r in body) / len(body)
        assert mean == pytest.approx(float(best[key]), abs=1e-3), key


def _tb_tags(folder: Path) -> set[str]:
    """Summary tags in TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    tags = set()
    for file in folder.glob("events.out.tfevents.*"):
        data = file.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            tags.update(v.tag for v in event.summary.value)
            pos += 12 + length + 4
    return tags


def test_tensorboard_events(tiny_run):
    files = list((tiny_run / "tb").glob("events.out.tfevents.*"))
    assert files and all(f.stat().st_size > 0 for f in files)
    tags = _tb_tags(tiny_run / "tb")
    assert {"train/loss", "train/mse", "train/kl", "train/beta", "train/tfr", "train/lr",
            "val/val_psnr", "val/baseline_psnr", "val/val_ssim", "val/baseline_ssim",
            "val/val_box_ssim", "val/baseline_box_ssim", "val/val_sharpness",
            "val/baseline_sharpness", "val/predicted_over_true"} <= tags
    assert "train/val_sharpness" not in tags


def test_config_yaml_is_the_resolved_config(tiny_run):
    cfg = load_config(tiny_run / "config.yaml")
    assert cfg.model.frame_channels == 8
    assert cfg.train.epochs == 3
    assert cfg.run.out == str(tiny_run)
    assert cfg.to_dict() == load(tiny_run / "checkpoints" / "last.pt")["config"]
