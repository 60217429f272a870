"""Checkpoints (cvae.checkpoint): what a run's checkpoints hold, --resume (resume_state_for)
and train.init_from (initial_weights), through `cvae-train` on the tiny data."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import metrics_rows as metrics
from conftest import one_error_line
from conftest import saved_state as load

from cvae.checkpoint import (
    check_same_model,
    checkpoint_config,
    initial_weights,
    last_checkpoint,
    load_checkpoint,
)
from cvae.config import Config, load_config
from cvae.errors import CvaeError
from cvae.model import CVAE
from cvae.rundir import METRIC_COLUMNS
from cvae.train_cli import main as train_main

STATE_KEYS = {"model", "optimizer", "scheduler", "kl_annealing", "teacher_forcing", "config",
              "epoch"}


@pytest.mark.parametrize("name", ["last.pt", "best.pt", "epoch_3.pt"])
def test_checkpoints_load_with_weights_only(tiny_run, name):
    state = load(tiny_run / "checkpoints" / name)
    assert STATE_KEYS <= state.keys()
    cfg = Config.from_dict(state["config"])
    assert cfg.model.frame_channels == 8 and cfg.data.clip_len == 4
    model = CVAE(cfg.model)
    model.load_state_dict(state["model"])  # strict: every key, every shape
    assert state["optimizer"]["param_groups"][0]["lr"] > 0
    assert len(state["optimizer"]["state"]) == len(list(model.parameters()))
    epoch = state["epoch"]
    assert state["kl_annealing"] == {"epoch": epoch}
    assert state["teacher_forcing"] == {"epoch": epoch}
    assert state["scheduler"]["last_epoch"] == epoch


def test_last_and_best_checkpoints(tiny_run):
    last = load(tiny_run / "checkpoints" / "last.pt")
    best = load(tiny_run / "checkpoints" / "best.pt")
    assert last["epoch"] == 3
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    rows = metrics(tiny_run)
    best_row = max(rows, key=lambda r: float(r["val_psnr"]))
    assert best["epoch"] == int(best_row["epoch"])
    assert best["best_val_psnr"] == pytest.approx(float(best_row["val_psnr"]), rel=1e-5)
    assert last["best_epoch"] == best["epoch"]
    same = all(torch.equal(v, best["model"][k]) for k, v in last["model"].items())
    assert same == (best["epoch"] == last["epoch"])


def test_check_same_model_compares_dims_not_init(tiny_run):
    state = load_checkpoint(last_checkpoint(tiny_run))
    cfg = checkpoint_config(state)
    cfg.model.init = "torch" if cfg.model.init == "copy_last" else "copy_last"
    check_same_model(state, cfg, "resumed")  # the weights come from the checkpoint: no error
    cfg.model.latent_channels = 16
    with pytest.raises(CvaeError, match="^resumed has model.latent_channels = 4, the config "
                                        "has 16$"):
        check_same_model(state, cfg, "resumed")


def test_check_same_model_reads_a_missing_key_as_its_default(tiny_run):
    """A checkpoint written before a model key existed (here blend_mask) matches a config that
    leaves the key at its default, and is refused by one that sets it."""
    state = load_checkpoint(last_checkpoint(tiny_run))
    cfg = checkpoint_config(state)
    del state["config"]["model"]["blend_mask"]
    check_same_model(state, cfg, "old")
    cfg.model.blend_mask = True
    with pytest.raises(CvaeError, match="^old has model.blend_mask = False"):
        check_same_model(state, cfg, "old")


def test_initial_weights(tiny_run):
    assert initial_weights(load_config(overrides=["train.init_from="])) is None
    cfg = load_config(tiny_run / "config.yaml", overrides=[f"train.init_from={tiny_run}"])
    weights = initial_weights(cfg)  # a run folder: its best.pt
    best = load(tiny_run / "checkpoints" / "best.pt")["model"]
    assert weights.keys() == best.keys()
    assert all(torch.equal(weights[k], best[k]) for k in best)


# ------------------------------------------------------------------------------ resume


@pytest.mark.slow  # cvae-train end to end, three times
def test_resume_equals_an_uninterrupted_run(tiny_run, tiny_train_argv, tmp_path, cli, capsys):
    out = tmp_path / "B"
    assert cli(train_main, tiny_train_argv(out, "--epochs", "2")) == 0
    assert [r["epoch"] for r in metrics(out)] == ["1", "2"]
    assert load(out / "checkpoints" / "last.pt")["epoch"] == 2
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "3")) == 0
    a, b = metrics(tiny_run), metrics(out)
    assert len(a) == len(b) == 3
    for row_a, row_b in zip(a, b, strict=True):
        for key in METRIC_COLUMNS:
            if not key.endswith("seconds"):  # wall-clock times differ run to run
                assert float(row_b[key]) == pytest.approx(float(row_a[key]), rel=1e-5,
                                                          abs=1e-8), key
    state_a = load(tiny_run / "checkpoints" / "last.pt")
    state_b = load(out / "checkpoints" / "last.pt")
    assert state_b["epoch"] == 3
    assert state_a["model"].keys() == state_b["model"].keys()
    for key, value in state_a["model"].items():
        torch.testing.assert_close(state_b["model"][key], value, rtol=1e-6, atol=1e-7,
                                   msg=f"{key} differs after resume")
    assert state_b["best_epoch"] == state_a["best_epoch"]
    assert (out / "checkpoints" / "epoch_3.pt").is_file()
    # resuming a finished run trains nothing and says so
    capsys.readouterr()
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "3")) == 0
    assert "nothing to train" in capsys.readouterr().out
    assert len(metrics(out)) == 3


def test_fresh_run_into_a_run_folder_is_refused(tiny_run, tiny_train_argv, tmp_path, cli,
                                                capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    rows = (out / "metrics.csv").read_text()
    capsys.readouterr()
    assert cli(train_main, tiny_train_argv(out, "--epochs", "3")) == 2
    err = one_error_line(capsys)
    assert "--resume" in err and str(out) in err
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert (out / "metrics.csv").read_text() == rows


@pytest.mark.parametrize("make_folder", [False, True])
def test_resume_with_nothing_to_resume(tiny_train_argv, tmp_path, cli, capsys, make_folder):
    out = tmp_path / "empty"
    if make_folder:
        out.mkdir()
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "2")) == 2
    err = one_error_line(capsys)
    assert err.startswith("error: --resume")
    assert "nothing to resume" in err
    assert not (out / "checkpoints").exists()


def test_resume_with_other_model_dims_is_refused(tiny_run, tiny_train_argv, tmp_path, cli,
                                                 capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    argv = tiny_train_argv(out, "--resume", "--epochs", "4", sets=("model.frame_channels=16",))
    assert cli(train_main, argv) == 2
    assert "model.frame_channels" in one_error_line(capsys)


# ------------------------------------------------------------------------ init_from


def test_init_from_starts_from_the_weights_with_fresh_schedules(tiny_run, tiny_train_argv,
                                                                tmp_path, cli):
    out = tmp_path / "stage2"
    source = load(tiny_run / "checkpoints" / "best.pt")
    # lr 1e-30 leaves every weight where it started: the run must have started from `source`
    argv = tiny_train_argv(out, "--epochs", "1", sets=(
        f"train.init_from={tiny_run}", "train.lr=1e-30", "train.lr_milestones=[]"))
    assert cli(train_main, argv) == 0
    state = load(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and [r["epoch"] for r in metrics(out)] == ["1"]
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-30)
    assert state["teacher_forcing"] == {"epoch": 1}  # the schedules restart at epoch 0
    assert state["config"]["train"]["init_from"] == str(tiny_run)
    names = dict(CVAE(load_config(tiny_run / "config.yaml").model).named_parameters())
    for name in names:
        torch.testing.assert_close(state["model"][name], source["model"][name], rtol=0,
                                   atol=1e-20, msg=name)


@pytest.mark.parametrize("problem", ["missing", "other_dims"])
def test_bad_init_from_is_one_line_and_writes_nothing(tiny_run, tiny_train_argv, tmp_path, cli,
                                                      capsys, problem):
    out = tmp_path / "stage2"
    sets = (f"train.init_from={tmp_path / 'nope.pt'}",) if problem == "missing" else (
        f"train.init_from={tiny_run / 'checkpoints' / 'last.pt'}", "model.frame_channels=16")
    capsys.readouterr()
    assert cli(train_main, tiny_train_argv(out, "--epochs", "1", sets=sets)) == 2
    err = one_error_line(capsys)
    assert err.startswith("error: train.init_from: ")
    assert ("not found" in err) if problem == "missing" else ("model.frame_channels" in err)
    assert not out.exists()


@pytest.mark.parametrize("best_by, chosen", [("val_psnr", "checkpoint_000001"),
                                             ("epoch", "checkpoint_000002")])
def test_a_ray_storage_resolves_to_its_best_checkpoint_by_best_by(tiny_run, tmp_path, best_by,
                                                                  chosen):
    """A run's storage (Ray Train's checkpoint_* folders, no run.json) gives the checkpoint
    with the best validation.best_by figure in its own config."""
    from cvae.checkpoint import save_checkpoint

    state = load(tiny_run / "checkpoints" / "last.pt")
    state["config"]["validation"]["best_by"] = best_by
    for index, (epoch, psnr) in enumerate([(1, 20.0), (2, 23.0), (3, 21.0)]):
        state.update(epoch=epoch, metrics={"epoch": epoch, "val_psnr": psnr})
        save_checkpoint(state, tmp_path / f"checkpoint_{index:06d}" / "checkpoint.pt")
    found = load_checkpoint(tmp_path)
    assert found["metrics"]["val_psnr"] == {"checkpoint_000001": 23.0,
                                            "checkpoint_000002": 21.0}[chosen]


def test_a_ray_storage_skips_folders_ray_never_registered_or_that_do_not_load(tiny_run, tmp_path,
                                                                            capsys):
    """A node lost mid-upload leaves a checkpoint folder Ray never registered; a registered one
    may still be unreadable; an epoch without validation is not a candidate for best."""
    from cvae.checkpoint import RAY_SNAPSHOT_FILE, save_checkpoint

    state = load(tiny_run / "checkpoints" / "last.pt")
    for index, figures in enumerate([{"epoch": 1, "val_psnr": 20.0},
                                     {"epoch": 2, "val_psnr": 22.0},
                                     {"epoch": 3}, {"epoch": 4, "val_psnr": 30.0}]):
        state.update(epoch=figures["epoch"], metrics=figures)
        save_checkpoint(state, tmp_path / f"checkpoint_{index:06d}" / "checkpoint.pt")
    (tmp_path / "checkpoint_000000" / "checkpoint.pt").write_bytes(b"PK\x03\x04 half")
    registered = ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    (tmp_path / RAY_SNAPSHOT_FILE).write_text(json.dumps({"checkpoint_results": [
        {"checkpoint_dir_name": n, "metrics": {}} for n in registered]}))
    capsys.readouterr()
    found = load_checkpoint(tmp_path)
    assert found["epoch"] == 2  # 4 was never registered, 3 is not validated, 1 does not load
    assert "warning: skipping checkpoint_000000:" in capsys.readouterr().err
    (tmp_path / "checkpoint_000001" / "checkpoint.pt").unlink()
    with pytest.raises(CvaeError, match="no validated checkpoint there"):
        load_checkpoint(tmp_path)


def test_a_trial_folder_whose_run_json_names_no_best_resolves_through_its_storage(tiny_run,
                                                                                  tmp_path):
    """A sweep trial that Tune stopped (ASHA, or at its last epoch) keeps run.json's first
    form, its storage and no best checkpoint: `cvae-test --checkpoint <sweep>/trials/<id>` takes
    the best checkpoint in that storage; with neither, one line says the run kept none."""
    from cvae.checkpoint import RUN_FILE, save_checkpoint

    state = load(tiny_run / "checkpoints" / "last.pt")
    store = tmp_path / "ray" / "trial_0"
    for index, (epoch, psnr) in enumerate([(1, 20.0), (2, 23.0), (3, 21.0)]):
        state.update(epoch=epoch, metrics={"epoch": epoch, "val_psnr": psnr})
        save_checkpoint(state, store / f"checkpoint_{index:06d}" / "checkpoint.pt")
    trial = tmp_path / "trials" / "0"
    trial.mkdir(parents=True)
    (trial / RUN_FILE).write_text(json.dumps({"storage": str(store), "best_checkpoint": None}))
    assert load_checkpoint(trial)["metrics"]["val_psnr"] == 23.0
    (trial / RUN_FILE).write_text(json.dumps({"best_checkpoint": None}))
    with pytest.raises(CvaeError, match="names no best checkpoint"):
        load_checkpoint(trial)
