"""Outputs complete or absent: inputs are checked before the first write, a run's own files are
never overwritten by another command, no make target deletes a finished run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from cvae import data_cli, report
from cvae.test_cli import main as cvae_test

ROOT = Path(__file__).resolve().parent.parent
TEST_SETS = ["--set", "test.seq_len=6", "--set", "run.progress=false"]


def test_cvae_test_checks_every_input_before_writing(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "val" / "val_img" / "frame3.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    argv = ["--checkpoint", str(tiny_run), "--data", str(data), "--out", str(out), *TEST_SETS]
    assert cli(cvae_test, argv) == 2
    assert "val_img/frame3.png: not a readable image" in capsys.readouterr().err
    assert not out.exists()  # no submission.csv nor GIFs from before the failure


def test_cvae_test_into_a_training_run_folder_needs_into_run(tiny_run, tiny_data, tmp_path, cli,
                                                             capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    own = (run / "psnr_per_frame.png").read_bytes()
    argv = ["--checkpoint", str(run), "--data", str(tiny_data), "--out", str(run), *TEST_SETS]
    assert cli(cvae_test, argv) == 2
    assert capsys.readouterr().err == (
        f"error: --out {run} is a training run folder (its psnr_per_frame.* would be "
        "overwritten); choose another --out, or pass --into-run\n")
    assert (run / "psnr_per_frame.png").read_bytes() == own
    assert cli(cvae_test, [*argv, "--into-run"]) == 0
    assert (run / "submission.csv").is_file()


def test_cvae_report_never_overwrites_a_runs_own_figure(tiny_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    own = (run / "psnr_per_frame.png").read_bytes()
    assert cli(report.main, [str(run)]) == 0
    assert (run / "psnr_per_frame.png").read_bytes() == own
    assert (run / "best_psnr_per_frame.png").is_file()


def test_preview_refuses_a_folder_and_an_existing_file_unless_forced(lab, tmp_path, cli, capsys):
    assert cli(data_cli.main, ["preview", str(lab), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path}: a folder; give the PNG file to " \
                                      "write\n"
    sheet = tmp_path / "sheet.png"
    sheet.write_bytes(b"mine")
    assert cli(data_cli.main, ["preview", str(lab), "--out", str(sheet)]) == 2
    assert "already exists: pass --force" in capsys.readouterr().err
    assert sheet.read_bytes() == b"mine"
    assert cli(data_cli.main, ["preview", str(lab), "--out", str(sheet), "--force"]) == 0
    assert sheet.read_bytes().startswith(b"\x89PNG")


def test_no_make_target_deletes_a_run_but_clean_and_clean_run():
    text = (ROOT / "Makefile").read_text()
    deleting = {m.group(1) for m in re.finditer(r"^([\w-]+):[^\n]*\n(?:\t[^\n]*\n)*?\trm -rf",
                                                 text, re.M)}
    assert deleting == {"clean", "clean-run"}
