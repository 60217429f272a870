"""What every command line shares (cvae.cli): the argparse parents, the config they resolve to,
the parameter table and the end-of-run summary."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from cvae import cli
from cvae.config import load_config
from cvae.model import CVAE, parameter_table


def _yaml(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def parser_for(default_config: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(parents=[cli.config_args(default_config), *parents])


def test_parents_compose_into_one_parser():
    parser = parser_for("config/train.yaml", cli.run_args())
    args = parser.parse_args(["--data", "d", "--out", "o", "--epochs", "3", "--seed", "5",
                              "--preset", "small", "--set", "train.lr=0.1", "--set",
                              "train.tfr=0.5", "--resume", "--dry-run"])
    assert args.config == "config/train.yaml"
    assert (args.data, args.out, args.epochs, args.seed, args.preset) == ("d", "o", 3, 5, "small")
    assert args.overrides == ["train.lr=0.1", "train.tfr=0.5"]
    assert args.resume and args.dry_run
    defaults = parser.parse_args([])
    assert defaults.overrides == [] and not defaults.resume and not defaults.dry_run
    # a launcher words --resume / --dry-run for what it runs
    worded = parser_for("x.yaml", cli.run_args(resume_help="continue the sweep"))
    assert "continue the sweep" in worded.format_help()
    # without run_args, --resume is not a flag
    with pytest.raises(SystemExit):
        parser_for("config/test.yaml").parse_args(["--resume"])


def test_full_chain_through_argparse(tmp_path):
    path = _yaml(tmp_path, "model:\n  preset: small\n  latent_channels: 16\n"
                           "train:\n  epochs: 5\n  lr: 0.01\ndata:\n  root: from_file\n")
    parser = parser_for(str(path))
    args = parser.parse_args([
        "--data", "from_flag", "--epochs", "6", "--seed", "11", "--out", str(tmp_path / "o"),
        "--set", "train.epochs=8", "--set", "model.decoder_channels=16",
    ])
    cfg = cli.config_from_args(args)
    assert cfg.model.frame_channels == 32  # preset (from the file)
    assert cfg.model.latent_channels == 16  # file over preset
    assert cfg.model.decoder_channels == 16  # --set over preset
    assert cfg.train.lr == 0.01  # file over defaults
    assert cfg.data.root == "from_flag"  # shortcut over file
    assert cfg.train.epochs == 8  # --set over shortcut
    assert cfg.run.seed == 11
    assert cfg.run.out == str(tmp_path / "o")


def test_layers_sit_between_the_file_and_the_flags(tmp_path):
    path = _yaml(tmp_path, "train:\n  epochs: 5\n  lr: 0.01\n  batch_size: 4\n")
    layer = ("space.yaml", {"train.epochs": 6, "train.lr": 0.02, "train.batch_size": 2})
    args = parser_for(str(path)).parse_args([])
    cfg = cli.config_from_args(args, layers=(layer,))
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (6, 0.02, 2)  # layer > file
    args = parser_for(str(path)).parse_args(["--epochs", "7", "--set", "train.lr=0.03"])
    cfg = cli.config_from_args(args, layers=(layer,))
    assert cfg.train.epochs == 7  # a shortcut beats the layer
    assert cfg.train.lr == 0.03  # --set beats the layer
    assert cfg.train.batch_size == 2  # the layer still beats the file
    assert cli.config_from_args(args).train.batch_size == 4  # no layers: the file's


def test_shipped_config_is_found_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cli.config_from_args(parser_for("config/train.yaml").parse_args([]))
    assert cfg.model.preset == "small"


def test_parameter_table_lists_every_part_and_the_total():
    model = CVAE(load_config(preset="small").model)
    text = cli.format_parameter_table(model)
    lines = text.splitlines()
    assert lines[0].split() == ["part", "parameters"]
    for name, count in parameter_table(model):
        assert any(line.split() == [name, f"{count:,}"] for line in lines), name
    assert lines[-2].startswith("-") and lines[-1].split()[0] == "total"


def test_print_summary(capsys, tmp_path):
    cli.print_summary({"epochs": 3, "best_val_psnr": -math.inf, "best_epoch": 0, "last": {},
                       "out": str(tmp_path)})
    assert "nothing to train" in capsys.readouterr().out
    last = {"epoch": 3, "val_psnr": 21.5, "baseline_psnr": 20.25, "val_psnr_short": 24.0,
            "baseline_psnr_short": 23.5}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"")
    cli.print_summary({"epochs": 3, "best_val_psnr": 22.0, "best_epoch": 2, "last": last,
                       "out": str(tmp_path)})
    out = capsys.readouterr().out
    assert "best val_psnr 22.00 dB at epoch 2" in out
    assert "val_psnr 21.50 dB (copy-last baseline 20.25)" in out
    assert f"best checkpoint: {tmp_path}/checkpoints/best.pt" in out
    cli.print_summary({"epochs": 3, "best_val_psnr": 21.5, "best_epoch": 3, "last": last,
                       "out": str(tmp_path), "best_by": "epoch"})
    out = capsys.readouterr().out
    assert "best epoch by validation.best_by=epoch: 3 (val_psnr 21.50 dB)" in out


def test_print_summary_never_names_a_best_checkpoint_that_does_not_exist(capsys, tmp_path):
    last = {"epoch": 1, "loss": 0.5}
    cli.print_summary({"epochs": 1, "best_val_psnr": -math.inf, "best_epoch": 0, "last": last,
                       "out": str(tmp_path)})
    out = capsys.readouterr().out
    assert "best.pt" not in out and "-inf" not in out
    assert "no validated epoch" in out
