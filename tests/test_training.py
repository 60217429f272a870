"""Tests of the training step, the loss, fit()'s run folder, checkpoints, resume and NaN stops."""

from __future__ import annotations

import csv
import dataclasses
import math
import random
import shutil
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

import cvae.training as training
from cvae.config import Config, ModelConfig, load_config
from cvae.data import augment
from cvae.errors import CvaeError
from cvae.losses import clip_loss, kl_divergence, psnr
from cvae.model import CVAE
from cvae.train_cli import main as train_main
from cvae.training import METRIC_COLUMNS, EpochData, RunDir, fit, train_epoch, train_step

TINY = ModelConfig(frame_channels=8, label_channels=4, latent_channels=4, decoder_channels=8)
HEADER = ("epoch,loss,mse,kl,beta,tfr,lr,val_psnr,val_psnr_short,baseline_psnr,"
          "baseline_psnr_short,val_ssim,val_ssim_short,baseline_ssim,baseline_ssim_short,seconds")
STATE_KEYS = {"model", "optimizer", "scheduler", "kl_annealing", "teacher_forcing", "config",
              "epoch"}


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---------------------------------------------------- batched vs per-frame teacher forcing


@pytest.mark.parametrize("predict_change", [False, True], ids=["frame", "change"])
@pytest.mark.parametrize("chunk", [0, 1, 4], ids=["whole", "chunk1", "chunk4"])
@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"]
)
def test_batched_teacher_forcing_equals_the_per_frame_loop(dtype, tol, chunk, predict_change):
    torch.manual_seed(0)
    model = CVAE(dataclasses.replace(TINY, predict_change=predict_change)).to(dtype).train()
    model.chunk_frames = chunk  # 4 does not divide the 6 predicted frames: a ragged last chunk
    g = torch.Generator().manual_seed(1)
    b, t, h, w = 2, 4, 8, 12
    frames = torch.rand(b, t, 3, h, w, generator=g, dtype=dtype)
    poses = torch.rand(b, t, 3, h, w, generator=g, dtype=dtype)
    noise = torch.randn(b, t - 1, TINY.latent_channels, h, w, generator=g, dtype=dtype)
    results = []
    for stepwise in (False, True):
        model.zero_grad(set_to_none=True)
        pred, mu, logvar = model(frames, poses, True, noise=noise, stepwise=stepwise)
        loss, mse, kl = clip_loss(pred, frames[:, 1:], mu, logvar, beta=0.5)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        results.append((pred.detach(), loss.detach(), mse.detach(), kl.detach(), grads))
    (pred_b, loss_b, mse_b, kl_b, grads_b), (pred_s, loss_s, mse_s, kl_s, grads_s) = results
    torch.testing.assert_close(pred_b, pred_s, rtol=tol, atol=tol)
    torch.testing.assert_close(loss_b, loss_s, rtol=tol, atol=tol)
    torch.testing.assert_close(mse_b, mse_s, rtol=tol, atol=tol)
    torch.testing.assert_close(kl_b, kl_s, rtol=tol, atol=tol)
    assert grads_b.keys() == grads_s.keys() == dict(model.named_parameters()).keys()
    # The conv bias before the pose encoder's BatchNorm has a gradient of exactly 0 in exact
    # arithmetic (BN subtracts it again): rounding noise there is judged against the model's
    # largest gradient, not its own.
    largest = max(g.abs().max().item() for g in grads_b.values())
    for name, grad in grads_b.items():
        assert grad.dtype == dtype
        scale = max(grad.abs().max().item(), 1e-3 * largest)
        torch.testing.assert_close(grad / scale, grads_s[name] / scale, rtol=tol, atol=tol,
                                   msg=f"gradient of {name} differs")
    # every part of the model is trained by the loss
    assert all(g.abs().sum() > 0 for g in grads_b.values())


def test_per_frame_loop_differs_when_free_running():
    torch.manual_seed(0)
    model = CVAE(TINY)
    frames, poses = torch.rand(1, 4, 3, 8, 8), torch.rand(1, 4, 3, 8, 8)
    noise = torch.randn(1, 3, TINY.latent_channels, 8, 8)
    tf = model(frames, poses, True, noise=noise)[0]
    fr = model(frames, poses, False, noise=noise)[0]
    assert not torch.allclose(tf[:, 2], fr[:, 2])  # a guard: the equivalence is not trivial


# ------------------------------------------------------------------------------- overfit


def _smooth_clip(t: int = 3, h: int = 8, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    frames = torch.stack([
        torch.stack([0.2 + 0.6 * x, 0.2 + 0.6 * y, torch.full((h, w), 0.3 + 0.1 * k)])
        for k in range(t)
    ])
    poses = torch.stack([torch.stack([torch.full((h, w), k / t), x, y]) for k in range(t)])
    return frames[None], poses[None]


def test_tiny_model_overfits_one_clip():
    torch.manual_seed(0)
    model = CVAE(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    frames, poses = _smooth_clip()
    losses = []
    for _ in range(80):
        loss, mse, kl = train_step(model, optimizer, frames, poses, beta=0.0,
                                   teacher_forced=True, grad_clip=1.0)
        assert loss.requires_grad is False
        assert loss.item() == pytest.approx(mse.item())  # beta 0: the loss is the MSE
        losses.append(loss.item())
    assert max(losses[-5:]) < losses[0] / 10, (losses[0], losses[-5:])


def test_train_step_clips_the_gradient_norm(monkeypatch):
    torch.manual_seed(0)
    model = CVAE(TINY)
    seen = {}
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm):
        params = list(params)
        seen["max_norm"] = max_norm
        out = real(params, max_norm)
        seen["after"] = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    frames, poses = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 8, 8)
    train_step(model, optimizer, frames, poses, beta=1.0, teacher_forced=False, grad_clip=0.01)
    assert seen["max_norm"] == 0.01
    assert seen["after"].item() == pytest.approx(0.01, rel=1e-3)


# ---------------------------------------------------------------------------- loss, PSNR


def test_kl_divergence_matches_a_hand_computation():
    mu = torch.tensor([[0.0, 1.0], [-2.0, 0.5]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), -1.0]])
    # KL(N(m, s^2) || N(0,1)) = 0.5 * (s^2 + m^2 - 1 - log s^2), summed, / batch
    terms = [
        0.5 * (1.0 + 0.0 - 1 - 0.0),
        0.5 * (2.0 + 1.0 - 1 - math.log(2.0)),
        0.5 * (0.5 + 4.0 - 1 - math.log(0.5)),
        0.5 * (math.exp(-1.0) + 0.25 - 1 + 1.0),
    ]
    assert kl_divergence(mu, logvar, batch_size=1).item() == pytest.approx(sum(terms), rel=1e-6)
    assert kl_divergence(mu, logvar, batch_size=2).item() == pytest.approx(sum(terms) / 2,
                                                                            rel=1e-6)


def test_kl_of_the_prior_is_zero():
    z = torch.zeros(2, 3, 4, 5, 5)
    assert kl_divergence(z, z, 2).item() == 0.0


def test_clip_loss_is_per_step_mse_sum_plus_beta_kl():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(2, 3, 3, 4, 4, generator=g), torch.rand(2, 3, 3, 4, 4, generator=g)
    mu, logvar = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    loss, mse, kl = clip_loss(pred, target, mu, logvar, beta=0.3)
    per_step = sum(((pred[:, s] - target[:, s]) ** 2).mean() for s in range(3))
    hand_kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum() / 2
    assert mse.item() == pytest.approx(per_step.item(), rel=1e-6)
    assert kl.item() == pytest.approx(hand_kl.item(), rel=1e-6)
    assert loss.item() == pytest.approx(per_step.item() + 0.3 * hand_kl.item(), rel=1e-6)


def test_psnr_of_identical_images_is_large():
    x = torch.rand(5, 3, 8, 8)
    values = psnr(x, x)
    assert values.shape == (5,)
    assert (values >= 100.0 - 1e-4).all()


@pytest.mark.parametrize("offset, expected", [(0.1, 20.0), (0.01, 40.0), (0.5, 10 * math.log10(4))])
def test_psnr_of_a_known_mse(offset, expected):
    target = torch.full((2, 4, 3, 6, 6), 0.25)
    values = psnr(target + offset, target)  # MSE = offset^2 on every frame
    assert values.shape == (2, 4)
    torch.testing.assert_close(values, torch.full((2, 4), expected), rtol=1e-4, atol=1e-4)


def test_psnr_is_per_frame():
    target = torch.zeros(2, 3, 4, 4)
    pred = target.clone()
    pred[1] = 0.1
    values = psnr(pred, target)
    assert values[0].item() == pytest.approx(100.0)
    assert values[1].item() == pytest.approx(20.0, rel=1e-4)


# ------------------------------------------------------------------------ train_epoch


def _batches(n: int, *, fetched: list | None = None, t: int = 3, size: int = 8):
    for i in range(n):
        if fetched is not None:
            fetched.append(i)
        g = torch.Generator().manual_seed(i)
        shape = (1, t, 3, size, size)
        yield (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
               torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
               torch.tensor([i]))


def test_train_epoch_stops_at_max_steps_without_fetching_more():
    torch.manual_seed(0)
    model = CVAE(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fetched: list[int] = []
    stats = train_epoch(model, optimizer, _batches(10, fetched=fetched), epoch=0, beta=0.0,
                        tfr=1.0, grad_clip=1.0, device=torch.device("cpu"),
                        tf_rng=random.Random(0), max_steps=3, progress=False)
    assert stats.steps == 3 and stats.clips == 3
    assert fetched == [0, 1, 2]
    assert math.isfinite(stats.loss) and stats.loss == pytest.approx(stats.mse)


@pytest.mark.parametrize("tfr, expected", [(1.0, {True}), (0.0, {False})])
def test_train_epoch_teacher_forces_with_probability_tfr(monkeypatch, tfr, expected):
    seen = []

    def fake_step(model, optimizer, frames, poses, *, teacher_forced, **kw):
        seen.append(teacher_forced)
        assert frames.dtype == torch.float32 and 0.0 <= frames.min() and frames.max() <= 1.0
        return torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0)

    monkeypatch.setattr(training, "train_step", fake_step)
    train_epoch(torch.nn.Linear(1, 1), None, _batches(6), epoch=0, beta=0.0, tfr=tfr,
                grad_clip=1.0, device=torch.device("cpu"), tf_rng=random.Random(0),
                progress=False)
    assert set(seen) == expected and len(seen) == 6


def test_train_epoch_mixes_at_half_tfr(monkeypatch):
    seen = []
    monkeypatch.setattr(training, "train_step", lambda *a, teacher_forced, **kw: (
        seen.append(teacher_forced) or (torch.tensor(1.0),) * 3))
    train_epoch(torch.nn.Linear(1, 1), None, _batches(40, size=4), epoch=0, beta=0.0, tfr=0.5,
                grad_clip=1.0, device=torch.device("cpu"), tf_rng=random.Random(0),
                progress=False)
    assert 8 <= sum(seen) <= 32


def test_train_epoch_without_batches_is_an_error():
    with pytest.raises(CvaeError, match="no batch"):
        train_epoch(CVAE(TINY), None, iter([]), epoch=0, beta=0.0, tfr=1.0, grad_clip=1.0,
                    device=torch.device("cpu"), tf_rng=random.Random(0), progress=False)


def test_train_epoch_stops_on_nan_naming_epoch_and_step(monkeypatch):
    calls = []

    def fake_step(*a, **kw):
        calls.append(1)
        value = math.nan if len(calls) == 3 else 1.0
        return torch.tensor(value), torch.tensor(value), torch.tensor(0.0)

    monkeypatch.setattr(training, "train_step", fake_step)
    with pytest.raises(training.TrainingDiverged, match="epoch 5, step 3"):
        train_epoch(torch.nn.Linear(1, 1), None, _batches(6), epoch=4, beta=0.0, tfr=1.0,
                    grad_clip=1.0, device=torch.device("cpu"), tf_rng=random.Random(0),
                    progress=False)
    assert len(calls) == 3


# ------------------------------------------------------------------------- RunDir, fit()


def test_rundir_resume_forgets_rows_past_the_checkpoint(tmp_path):
    cfg = Config()
    run = RunDir(tmp_path, cfg)
    for epoch in (1, 2, 3):
        run.rows.append({k: "" for k in METRIC_COLUMNS} | {"epoch": str(epoch), "loss": "1"})
    run._write_metrics()
    assert [r["epoch"] for r in RunDir.read_metrics(tmp_path)] == ["1", "2", "3"]
    RunDir(tmp_path, cfg, resume_epoch=2)
    assert [r["epoch"] for r in RunDir.read_metrics(tmp_path)] == ["1", "2"]
    assert (tmp_path / "config.yaml").is_file()
    RunDir(tmp_path, cfg, resume_epoch=0)
    assert RunDir.read_metrics(tmp_path) == []
    assert (tmp_path / "metrics.csv").read_text().strip() == HEADER


def test_fit_without_validation(tmp_path):
    cfg = load_config(overrides=[
        "model.frame_channels=8", "model.label_channels=4", "model.latent_channels=4",
        "model.decoder_channels=8", "train.epochs=2", f"run.out={tmp_path / 'run'}",
        "run.progress=false", "train.per_save=0",
    ])
    data = EpochData(lambda epoch: _batches(2, t=3), steps_per_epoch=2)
    summary = fit(cfg, data=data, val_video=None, device=torch.device("cpu"))
    out = tmp_path / "run"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["val_psnr"] == "" for r in rows)
    assert (out / "checkpoints" / "last.pt").is_file()
    assert not (out / "checkpoints" / "best.pt").exists()  # nothing to choose the best by
    assert not list((out / "checkpoints").glob("epoch_*.pt"))  # per_save 0
    assert summary["epochs"] == 2 and summary["last"]["epoch"] == 2
    assert summary["best_val_psnr"] == -math.inf


# ------------------------------------------------------------------- the tiny cvae-train run


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
    # the lab's schedules: Cyclical beta over 10 epochs, tfr 1 until epoch 10, lr x0.1 at 2
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
        for k in ("val_ssim", "val_ssim_short", "baseline_ssim", "baseline_ssim_short"):
            assert -1 <= float(r[k]) <= 1
    # the copy-last baseline depends on the data only
    assert len({r["baseline_psnr"] for r in rows}) == 1
    assert len({r["baseline_ssim"] for r in rows}) == 1


def test_psnr_per_frame_csv_is_the_best_epoch(tiny_run):
    lines = (tiny_run / "psnr_per_frame.csv").read_text().splitlines()
    assert lines[0] == "frame,psnr,baseline_psnr,ssim,baseline_ssim"
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
            "val/predicted_over_true"} <= tags


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


def test_config_yaml_is_the_resolved_config(tiny_run):
    cfg = load_config(tiny_run / "config.yaml")
    assert cfg.model.frame_channels == 8
    assert cfg.train.epochs == 3
    assert cfg.run.out == str(tiny_run)
    assert cfg.to_dict() == load(tiny_run / "checkpoints" / "last.pt")["config"]


# ------------------------------------------------------------------------------ resume


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
            if key != "seconds":
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
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "--resume" in err[0] and str(out) in err[0]
    assert (out / "checkpoints" / "last.pt").read_bytes() == before
    assert (out / "metrics.csv").read_text() == rows


@pytest.mark.parametrize("make_folder", [False, True])
def test_resume_with_nothing_to_resume(tiny_train_argv, tmp_path, cli, capsys, make_folder):
    out = tmp_path / "empty"
    if make_folder:
        out.mkdir()
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --resume")
    assert "nothing to resume" in err[0]
    assert not (out / "checkpoints").exists()


def test_resume_with_other_model_dims_is_refused(tiny_run, tiny_train_argv, tmp_path, cli,
                                                 capsys):
    out = tmp_path / "copy"
    shutil.copytree(tiny_run, out)
    argv = tiny_train_argv(out, "--resume", "--epochs", "4", sets=("model.frame_channels=16",))
    assert cli(train_main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.frame_channels" in err[0]


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
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: train.init_from: ")
    assert ("not found" in err[0]) if problem == "missing" else ("model.frame_channels" in err[0])
    assert not out.exists()


@pytest.mark.parametrize("on", [False, True])
def test_train_augment_augments_every_training_batch(tiny_train_argv, tmp_path, cli,
                                                     monkeypatch, on):
    seen = []

    def recording(frames, poses, rng):
        seen.append(frames.shape)
        return augment(frames, poses, rng)

    monkeypatch.setattr(training, "augment", recording)
    argv = tiny_train_argv(tmp_path / "aug", "--epochs", "1", sets=(f"train.augment={on}",))
    assert cli(train_main, argv) == 0
    assert len(seen) == (2 if on else 0)  # the tiny data: two steps per epoch


# ------------------------------------------------------------------------------- NaN


def _nan_on_call(n: int):
    calls = []

    def patched(pred, target, mu, logvar, beta):
        calls.append(1)
        loss, mse, kl = clip_loss(pred, target, mu, logvar, beta)
        if len(calls) == n:
            loss = loss * math.nan
        return loss, mse, kl

    return patched


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_train_argv, tmp_path, cli,
                                                           capsys, monkeypatch):
    out = tmp_path / "nan"
    assert cli(train_main, tiny_train_argv(out, "--epochs", "1")) == 0
    last = out / "checkpoints" / "last.pt"
    good = last.read_bytes()
    assert load(last)["epoch"] == 1
    capsys.readouterr()
    # the second step of epoch 2 (two steps per epoch) goes NaN
    monkeypatch.setattr(training, "clip_loss", _nan_on_call(2))
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: loss is nan at epoch 2, step 2")
    assert "Traceback" not in "\n".join(err)
    assert last.read_bytes() == good  # untouched
    assert [r["epoch"] for r in metrics(out)] == ["1"]
    assert not list((out / "checkpoints").glob(".*tmp*"))


def test_nan_loss_in_the_first_step_leaves_no_checkpoint(tiny_train_argv, tmp_path, cli,
                                                         capsys, monkeypatch):
    out = tmp_path / "nan1"
    monkeypatch.setattr(training, "clip_loss", _nan_on_call(1))
    assert cli(train_main, tiny_train_argv(out, "--epochs", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "epoch 1, step 1" in err[-1]
    assert not (out / "checkpoints" / "last.pt").exists()
    assert metrics(out) == []


# ----------------------------------------------------------- the next epoch, primed early


def test_primed_iterator_yields_everything_in_order():
    primed = training.Primed(iter([1, 2, 3]))
    assert list(primed) == [1, 2, 3]
    assert list(training.Primed(iter([]))) == []


def test_primed_iterator_fetches_the_first_item_before_it_is_asked():
    fetched = []

    def source():
        fetched.append("first")
        yield "a"
        fetched.append("second")
        yield "b"

    primed = training.Primed(source())
    primed._thread.join(timeout=10)
    assert fetched == ["first"]  # fetched in the background, the rest left for later
    assert next(primed) == "a" and fetched == ["first"]
    assert next(primed) == "b"


def test_primed_iterator_reraises_the_sources_error_in_the_consumer():
    def broken():
        raise CvaeError("shard 3 is corrupt")
        yield

    with pytest.raises(CvaeError, match="shard 3 is corrupt"):
        next(training.Primed(broken()))


def test_build_model_resolves_chunking_and_init():
    cpu = torch.device("cpu")
    cfg = load_config(None, preset="small")
    model = training.build_model(cfg, cpu)
    assert model.chunk_frames == training.CPU_CHUNK_FRAMES
    assert model.posterior[-1].weight.abs().sum() == 0  # the copy-last init
    assert training.chunk_frames_for(load_config(None, overrides=["train.chunk_frames=0"]),
                                     torch.device("cuda")) == 0
    assert training.chunk_frames_for(cfg, torch.device("cuda")) == 0  # auto: one pass on a GPU
    lab = training.build_model(load_config(None, preset="small", overrides=["model.init=torch"]),
                               cpu)
    assert lab.posterior[-1].weight.abs().sum() > 0


# ------------------------------------------------------------------------------ validation


def test_region_errors_split_background_and_dancer():
    from cvae.evaluate import region_errors

    T = 10
    truth = torch.zeros(T, 3, 4, 12)  # black room; a white 2x2 dancer walks 1 pixel per frame
    for t in range(T):
        truth[t, :, 1:3, t:t + 2] = 1.0
    pred = truth.clone()
    pred[1:, :, :, :] = 0.0  # a rollout that erased the dancer at once
    rows = region_errors(pred, truth, window=4)
    assert [(r["first_frame"], r["last_frame"]) for r in rows] == [(1, 4), (5, 8), (9, 9)]
    for r in rows:
        assert r["dancer_mse"] == pytest.approx(1.0)  # all of the dancer is missing
        assert r["background_mse"] == pytest.approx(0.0)  # and the room is exact
        assert r["mse"] == pytest.approx(4 / 48)  # 4 of 48 pixels wrong by 1
    # The baseline repeats frame 0: the dancer is missing where it went and stays where it was
    # (background pixels); frame 1 still overlaps frame 0 by one column.
    first = rows[0]
    assert first["baseline_dancer_mse"] == pytest.approx((2 + 4 + 4 + 4) / 16)
    assert first["baseline_background_mse"] == pytest.approx((2 + 4 + 4 + 4) / (4 * 44))
    # no dancer in a window: its dancer figures are nan, not a division error
    still = region_errors(torch.zeros(3, 3, 4, 4), torch.zeros(3, 3, 4, 4))
    assert math.isnan(still[0]["dancer_mse"]) and still[0]["background_mse"] == 0.0


def test_validation_reports_the_rollout_the_baseline_and_one_step():
    from cvae.evaluate import validate
    from cvae.model import init_copy_last

    torch.manual_seed(0)
    model = CVAE(load_config(None, preset="small").model)
    init_copy_last(model)  # predicts the previous frame: it IS the copy-last baseline
    g = torch.Generator().manual_seed(0)
    frames, poses = torch.rand(20, 3, 32, 64, generator=g), torch.rand(20, 3, 32, 64, generator=g)
    v = validate(model, frames, poses, short_len=5, device=torch.device("cpu"))
    m = v.metrics()
    assert len(v.psnr) == len(v.baseline) == 19
    assert len(v.one_step) == len(v.one_step_baseline) == 5
    # Rollout from frame 0: the baseline, given the same, repeats frame 0 -- as this model does.
    torch.testing.assert_close(torch.tensor(v.psnr), torch.tensor(v.baseline))
    assert m["val_psnr"] == pytest.approx(m["baseline_psnr"])
    assert m["val_psnr_short"] == pytest.approx(m["baseline_psnr_short"])
    assert len(v.ssim) == len(v.baseline_ssim) == 19
    torch.testing.assert_close(torch.tensor(v.ssim), torch.tensor(v.baseline_ssim))
    assert m["val_ssim_short"] == pytest.approx(m["baseline_ssim_short"])
    assert all(-1 <= s < 1 for s in v.baseline_ssim)  # random frames: not alike
    # One step: the baseline copies the true previous frame -- as this model does.
    torch.testing.assert_close(torch.tensor(v.one_step), torch.tensor(v.one_step_baseline))
    assert m["val_psnr_one_step"] == pytest.approx(m["baseline_psnr_one_step"])
    # the two baselines differ: frame 0 repeated vs the true previous frame
    truth = frames.float()
    expected = [float(10 * torch.log10(1 / ((truth[0] - truth[t]) ** 2).mean())) for t in (1, 5)]
    assert [v.baseline[0], v.baseline[4]] == pytest.approx(expected, abs=1e-4)
    assert v.one_step_baseline[4] == pytest.approx(
        float(10 * torch.log10(1 / ((truth[4] - truth[5]) ** 2).mean())), abs=1e-4)
    assert model.training  # validate restores the mode it found
