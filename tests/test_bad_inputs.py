"""Bad inputs that used to end in a traceback: each is one `error:` line and exit code 2."""

from __future__ import annotations

import shutil
import time

import pytest
import torch

from cvae.checkpoint import FORMAT
from cvae.train_cli import main as train_main


def _edit_checkpoint(path, edit) -> None:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save({**state, "format": FORMAT}, path)


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_init_from_weights_that_do_not_match_their_config(tiny_run, tiny_train_argv, tmp_path,
                                                          cli, capsys):
    weights = tmp_path / "odd.pt"
    shutil.copy(tiny_run / "checkpoints" / "best.pt", weights)
    _edit_checkpoint(weights, lambda s: s["model"].pop(next(iter(s["model"]))))
    argv = tiny_train_argv(tmp_path / "out", "--epochs", "1",
                           sets=(f"train.init_from={weights}",))
    assert cli(train_main, argv) == 2
    assert _last_line(capsys).startswith(f"error: train.init_from: {weights}: weights do not "
                                         "match the model config (")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.pop("optimizer"), "has no optimizer state (not a training checkpoint)"),
    (lambda s: s["model"].update({k: torch.zeros(7) for k in list(s["model"])[:1]}),
     "the checkpoint to resume (epoch 3): weights do not match the model config ("),
])
def test_resume_from_a_last_pt_that_cannot_be_resumed(edit, message, tiny_run, tiny_train_argv,
                                                      tmp_path, cli, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _edit_checkpoint(run / "checkpoints" / "last.pt", edit)
    assert cli(train_main, tiny_train_argv(run, "--resume", "--epochs", "4")) == 2
    assert message in _last_line(capsys)


def test_a_config_file_that_is_not_utf8(tmp_path, cli, capsys):
    bad = tmp_path / "train.yaml"
    bad.write_bytes(b"train:\n  lr: 0.001 # \xff\xfe\n")
    assert cli(train_main, ["--config", str(bad), "--dry-run"]) == 2
    assert _last_line(capsys) == f"error: {bad}: not UTF-8 text (a config is a YAML file)"


# ---- sweeps (no Ray starts) ----

@pytest.fixture
def tune_main(monkeypatch):
    from ray_jobs import common, tune

    def no_ray(*_a, **_k):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(common, "connect", no_ray)
    monkeypatch.setattr(common, "prepare_data", no_ray)
    return tune.main


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_corrupt_or_non_mapping_sweep_json_on_resume(text, tune_main, tmp_path, cli, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(text)
    assert cli(tune_main, ["--out", str(out), "--resume"]) == 2
    line = _last_line(capsys)
    assert line.startswith(f"error: {out / 'sweep.json'}: "), line


def test_a_space_file_that_is_not_utf8(tune_main, tmp_path, cli, capsys):
    space = tmp_path / "space.yaml"
    space.write_bytes(b"train.lr: {choice: [0.001]} # \xff\n")
    assert cli(tune_main, ["--space", str(space), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    assert _last_line(capsys) == (f"error: {space}: not UTF-8 text (a search space is a YAML "
                                  "file)")


def test_a_huge_grid_is_counted_and_refused_not_enumerated(tune_main, tmp_path, cli, capsys):
    space = tmp_path / "space.yaml"
    tenths = [round(0.1 * i, 1) for i in range(1, 11)]
    space.write_text(
        f"train.lr: {{grid: {[1e-4 * i for i in range(1, 11)]}}}\n"
        f"train.kl_anneal_ratio: {{grid: {tenths}}}\n"
        f"train.tfr_d_step: {{grid: {tenths}}}\n"
        f"train.kl_anneal_cycle: {{grid: {list(range(1, 11))}}}\n"
        f"train.tfr_sde: {{grid: {list(range(1, 11))}}}\n"
        f"train.grad_clip: {{grid: {list(range(1, 11))}.0}}\n".replace("].0", "]"))
    start = time.monotonic()
    assert cli(tune_main, ["--space", str(space), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    assert time.monotonic() - start < 20
    assert _last_line(capsys) == (
        f"error: {space}: 1,000,000 grid combinations x 1 sample(s) = 1,000,000 trials, more "
        "than 10,000; search fewer grid values (or use choice)")


def test_a_non_finite_value_in_a_space_names_the_key(tune_main, tmp_path, cli, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("train.kl_anneal_ratio: {quniform: [0.1, 0.5, .nan]}\n")
    assert cli(tune_main, ["--space", str(space), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    assert _last_line(capsys) == (f"error: {space}: train.kl_anneal_ratio: quniform values must "
                                  "be finite numbers, got nan in [0.1, 0.5, nan]")
