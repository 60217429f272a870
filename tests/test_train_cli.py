"""The cvae-train command line (cvae.train_cli): user errors are one line on stderr and exit 2;
--dry-run prints the config and the parameter table."""

from __future__ import annotations

import pytest
from conftest import TINY_MODEL_SETS, one_error_line, set_flags

from cvae import train_cli

# no progress bars, and no process-wide flush-denormal switch left behind by configure_torch
QUIET = ("--set", "run.progress=false", "--set", "run.flush_denormal=false")


def test_unknown_key_exits_2_with_one_line(cli, capsys, tmp_path):
    argv = ["--out", str(tmp_path / "o"), "--set", "train.epoch=3", "--set", "test.checkpoint=x"]
    assert cli(train_cli.main, argv) == 2
    line = one_error_line(capsys)
    assert "unknown key 'train.epoch'" in line
    assert "did you mean 'train.epochs'" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flag, expected",
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=-1", "train.epochs"),
        ("train.tfr=1.5", "train.tfr"),
        ("train.kl_anneal_type=Linear", "train.kl_anneal_type"),
        ("data.height=2", "data.height"),
        ("model.frame_channels=12", "model.frame_channels"),
        ("nonsense", "section.key=value"),
    ],
)
def test_bad_values_exit_2_naming_the_key(flag, expected, cli, capsys, tmp_path):
    assert cli(train_cli.main, ["--out", str(tmp_path / "o"), "--set", flag, "--dry-run"]) == 2
    assert expected in one_error_line(capsys)


def test_bad_yaml_file(cli, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [3\n")
    assert cli(train_cli.main, ["--config", str(bad), "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and "not valid YAML" in line


def test_missing_config_file(cli, capsys, tmp_path):
    missing = tmp_path / "missing.yaml"
    assert cli(train_cli.main, ["--config", str(missing), "--dry-run"]) == 2
    line = one_error_line(capsys)
    assert str(missing) in line and "not found" in line


def test_bad_epochs_flag(cli, capsys, tmp_path):
    assert cli(train_cli.main, ["--epochs", "0", "--dry-run"]) == 2
    assert "train.epochs = 0" in one_error_line(capsys)


def test_missing_data_folder(cli, capsys, tmp_path):
    missing = tmp_path / "no_data"
    argv = ["--data", str(missing), "--out", str(tmp_path / "o"), *QUIET]
    assert cli(train_cli.main, argv) == 2
    line = one_error_line(capsys)
    assert str(missing) in line and "cvae-data synth" in line


def test_clip_longer_than_the_videos(tiny_data, cli, capsys, tmp_path):
    argv = ["--data", str(tiny_data), "--out", str(tmp_path / "o"), "--set", "data.clip_len=13",
            *QUIET]
    assert cli(train_cli.main, argv) == 2
    assert "13" in one_error_line(capsys)
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_cuda_without_a_gpu(cli, capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--out", str(tmp_path / "o"), "--set", "run.device=cuda", *QUIET]
    assert cli(train_cli.main, argv) == 2
    assert "CUDA" in one_error_line(capsys)


def test_dry_run_prints_config_and_table_and_writes_nothing(cli, capsys, tmp_path):
    out = tmp_path / "o"
    argv = ["--out", str(out), *set_flags(*TINY_MODEL_SETS)]
    assert cli(train_cli.main, [*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "frame_channels: 8" in text
    assert f"out: {out}" in text
    assert "total" in text and "frame_encoder" in text
    assert not out.exists()


def test_dry_run_small_preset_total(cli, capsys):
    from cvae.config import load_config
    from cvae.model import CVAE, parameter_table

    total = dict(parameter_table(CVAE(load_config(preset="small").model)))["total"]
    assert cli(train_cli.main, ["--preset", "small", "--dry-run"]) == 0
    assert f"{total:,}" in capsys.readouterr().out


def test_unknown_flag_is_an_argparse_usage_error(cli, capsys):
    assert cli(train_cli.main, ["--no-such-flag"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_unknown_preset_flag(cli, capsys):
    assert cli(train_cli.main, ["--preset", "huge", "--dry-run"]) == 2
    assert "invalid choice" in capsys.readouterr().err

