"""Tests of the training loop (cvae.training): the step, an epoch, fit() and NaN stops."""

from __future__ import annotations

import math
import random

import pytest
import torch
from conftest import TINY_MODEL_SETS, uint8_batches
from conftest import metrics_rows as metrics
from conftest import saved_state as load

import cvae.training as training
from cvae.batches import EpochData
from cvae.config import load_config
from cvae.errors import CvaeError
from cvae.losses import LossTerms, clip_loss
from cvae.train_cli import main as train_main
from cvae.train_state import EpochPlan
from cvae.training import StepOptions, fit, train_epoch, train_step

CPU = StepOptions(torch.device("cpu"), grad_clip=1.0, progress=False)


def plan(epoch: int = 0, *, beta: float = 0.0, tfr: float = 1.0,
         max_steps: int | None = None) -> EpochPlan:
    return EpochPlan(epoch=epoch, epochs=epoch + 1, beta=beta, tfr=tfr, max_steps=max_steps)


# ------------------------------------------------------------------------------- the step


def _smooth_clip(t: int = 3, h: int = 8, w: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.linspace(0, 1, h)[:, None].expand(h, w)
    x = torch.linspace(0, 1, w)[None, :].expand(h, w)
    frames = torch.stack([
        torch.stack([0.2 + 0.6 * x, 0.2 + 0.6 * y, torch.full((h, w), 0.3 + 0.1 * k)])
        for k in range(t)
    ])
    poses = torch.stack([torch.stack([torch.full((h, w), k / t), x, y]) for k in range(t)])
    return frames[None], poses[None]


def test_tiny_model_overfits_one_clip(tiny_model):
    model = tiny_model
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


def test_train_step_clips_the_gradient_norm(monkeypatch, tiny_model):
    model = tiny_model
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


# ------------------------------------------------------------------------ train_epoch


def test_train_epoch_stops_at_max_steps_without_fetching_more(tiny_model):
    model = tiny_model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    fetched: list[int] = []
    stats = train_epoch(model, optimizer, uint8_batches(10, fetched=fetched),
                        plan(max_steps=3), CPU, tf_rng=random.Random(0))
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
    train_epoch(torch.nn.Linear(1, 1), None, uint8_batches(6), plan(tfr=tfr), CPU,
                tf_rng=random.Random(0))
    assert set(seen) == expected and len(seen) == 6


def test_train_epoch_mixes_at_half_tfr(monkeypatch):
    seen = []
    monkeypatch.setattr(training, "train_step", lambda *a, teacher_forced, **kw: (
        seen.append(teacher_forced) or (torch.tensor(1.0),) * 3))
    train_epoch(torch.nn.Linear(1, 1), None, uint8_batches(40, size=4), plan(tfr=0.5), CPU,
                tf_rng=random.Random(0))
    assert 8 <= sum(seen) <= 32


def test_train_epoch_without_batches_is_an_error(tiny_model):
    with pytest.raises(CvaeError, match="no batch"):
        train_epoch(tiny_model, None, iter([]), plan(), CPU, tf_rng=random.Random(0))


def test_train_epoch_stops_on_nan_naming_epoch_and_step(monkeypatch):
    calls = []

    def fake_step(*a, **kw):
        calls.append(1)
        value = math.nan if len(calls) == 3 else 1.0
        return torch.tensor(value), torch.tensor(value), torch.tensor(0.0)

    monkeypatch.setattr(training, "train_step", fake_step)
    every_step = StepOptions(torch.device("cpu"), progress=False, check_every=1)
    with pytest.raises(training.TrainingDiverged, match="epoch 5, step 3"):
        train_epoch(torch.nn.Linear(1, 1), None, uint8_batches(6), plan(4), every_step,
                    tf_rng=random.Random(0))
    assert len(calls) == 3
    # Read on the host every train.check_every steps (20 by default): the epoch's end reads it
    # here, and the step named is still the first non-finite one.
    calls.clear()
    with pytest.raises(training.TrainingDiverged, match="epoch 5, step 3"):
        train_epoch(torch.nn.Linear(1, 1), None, uint8_batches(6), plan(4), CPU,
                    tf_rng=random.Random(0))
    assert len(calls) == 6


def test_epoch_data_wrapped_passes_each_epochs_batches_through():
    data = EpochData(lambda epoch: iter([epoch, epoch + 10]), steps_per_epoch=2)
    seen = []

    def wrap(batches, epoch):
        for batch in batches:
            seen.append((epoch, batch))
            yield batch * 2

    wrapped = data.wrapped(wrap)
    assert wrapped.steps_per_epoch == 2
    assert list(wrapped.batches(3)) == [6, 26]
    assert seen == [(3, 3), (3, 13)]
    assert list(data.batches(3)) == [3, 13]  # the original data is left as it was


# ------------------------------------------------------------------------------- fit()


def test_fit_without_validation(tmp_path):
    cfg = load_config(overrides=[
        *TINY_MODEL_SETS, "train.epochs=2", f"run.out={tmp_path / 'run'}",
        "run.progress=false", "train.per_save=0",
    ])
    data = EpochData(lambda epoch: uint8_batches(2, t=3), steps_per_epoch=2)
    summary = fit(cfg, data=data, val_videos=None, device=torch.device("cpu"))
    out = tmp_path / "run"
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["val_psnr"] == "" for r in rows)
    assert (out / "checkpoints" / "last.pt").is_file()
    assert not (out / "checkpoints" / "best.pt").exists()  # nothing to choose the best by
    assert not list((out / "checkpoints").glob("epoch_*.pt"))  # per_save 0
    assert summary["epochs"] == 2 and summary["last"]["epoch"] == 2
    assert summary["best_val_psnr"] == -math.inf


def _fit_with_validation(tmp_path, best_by: str, monkeypatch) -> tuple[dict, list[dict]]:
    """5 epochs whose validation rollouts are shifted by +0, +3, +0, +2.5, +2.5 dB: the best
    single rollout is epoch 2, the best 3-epoch mean epoch 4, the last epoch 5."""
    offsets = iter([0.0, 3.0, 0.0, 2.5, 2.5])

    def shifted(*args, **kwargs):
        assert kwargs["threads"] == 2  # fit's val_threads reaches the validation
        validation = training_validate(*args, **kwargs)
        offset = next(offsets)
        validation.psnr = [p + offset for p in validation.psnr]
        return validation

    training_validate = training.validate
    monkeypatch.setattr(training, "validate", shifted)
    cfg = load_config(overrides=[
        *TINY_MODEL_SETS, "train.epochs=5", f"run.out={tmp_path / best_by}",
        "run.progress=false", "train.per_save=0", "data.height=8", "data.width=8",
        "validation.val_len=5", f"validation.best_by={best_by}",
    ])
    data = EpochData(lambda epoch: uint8_batches(2, t=3), steps_per_epoch=2)
    video = next(uint8_batches(1, t=5))  # frames, poses uint8 [V=1,5,3,8,8]
    summary = fit(cfg, data=data, val_videos=(video[0], video[1]),
                  device=torch.device("cpu"), val_threads=2)
    return summary, metrics(tmp_path / best_by)


@pytest.mark.parametrize("best_by, epoch", [("val_psnr", 2), ("val_psnr_avg3", 4), ("epoch", 5)])
def test_best_checkpoint_is_chosen_by_validation_best_by(tmp_path, monkeypatch, best_by, epoch):
    summary, rows = _fit_with_validation(tmp_path, best_by, monkeypatch)
    best = load(tmp_path / best_by / "checkpoints" / "best.pt")
    assert best["epoch"] == summary["best_epoch"] == epoch
    chosen = rows[epoch - 1]
    assert best["best_val_psnr"] == pytest.approx(float(chosen["val_psnr"]), rel=1e-5)
    assert best["best_score"] == pytest.approx(float(chosen[best_by]), rel=1e-5)
    assert summary["best_by"] == best_by
    # the last checkpoint remembers which epoch is the best one (what --resume continues from)
    last = load(tmp_path / best_by / "checkpoints" / "last.pt")
    assert last["best_epoch"] == epoch and last["epoch"] == 5


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


# ------------------------------------------------------------------------------- NaN


def _nan_on_call(n: int):
    calls = []

    def patched(*args, **kwargs):
        calls.append(1)
        loss, mse, kl = clip_loss(*args, **kwargs)
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
    assert err[-1].startswith("error: training diverged: loss is nan at epoch 2, step 2")
    assert f"kept {last} (epoch 1, the last finite one)" in err[-1]
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
    assert "epoch 1, step 1" in err[-1] and "no checkpoint was written" in err[-1]
    assert not (out / "checkpoints" / "last.pt").exists()
    assert metrics(out) == []


def _nan_weights_on_call(n: int):
    """train_step whose n-th call returns a finite loss but leaves NaN weights (what too big a
    learning rate does)."""
    calls, real = [], training.train_step

    def patched(model, *args, **kwargs):
        calls.append(1)
        values = real(model, *args, **kwargs)
        if len(calls) == n:
            with torch.no_grad():
                next(model.parameters()).fill_(math.nan)
        return values

    return patched


def test_nan_weights_after_the_last_step_of_an_epoch_are_never_checkpointed(
        tiny_train_argv, tmp_path, cli, capsys, monkeypatch):
    out = tmp_path / "nanw"
    monkeypatch.setattr(training, "train_step", _nan_weights_on_call(2))  # 2 steps per epoch
    assert cli(train_main, tiny_train_argv(out, "--epochs", "1")) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        "error: training diverged: the weights are NaN or infinite after the last step of "
        "epoch 1 (first: frame_encoder.0.conv1.weight); stopped, no checkpoint was written "
        "(try a lower train.lr)")
    assert "best" not in captured.out and "-inf" not in captured.out
    assert not (out / "checkpoints").exists() and metrics(out) == []


def test_nan_weights_keep_the_previous_epochs_checkpoints(tiny_train_argv, tmp_path, cli, capsys,
                                                          monkeypatch):
    out = tmp_path / "nanw2"
    monkeypatch.setattr(training, "train_step", _nan_weights_on_call(4))  # epoch 2's last step
    assert cli(train_main, tiny_train_argv(out, "--epochs", "3")) == 2
    last = out / "checkpoints" / "last.pt"
    assert f"kept {last} (epoch 1, the last finite one)" in capsys.readouterr().err
    for name in ("last.pt", "best.pt"):
        state = load(out / "checkpoints" / name)
        assert state["epoch"] == 1
        assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["epoch"] for r in metrics(out)] == ["1"]


def test_a_metrics_row_is_written_before_the_checkpoint_that_claims_it(
        tiny_train_argv, tmp_path, cli, capsys, monkeypatch):
    """A crash between the two never loses a row: --resume redoes the epoch."""
    out = tmp_path / "order"
    real = training.save_checkpoint

    def crash_at_epoch_2(state, path):
        if state["epoch"] == 2:
            raise KeyboardInterrupt
        return real(state, path)

    monkeypatch.setattr(training, "save_checkpoint", crash_at_epoch_2)
    assert cli(train_main, tiny_train_argv(out, "--epochs", "2")) == 130
    assert load(out / "checkpoints" / "last.pt")["epoch"] == 1
    assert [r["epoch"] for r in metrics(out)] == ["1", "2"]  # the row came first
    monkeypatch.setattr(training, "save_checkpoint", real)
    assert cli(train_main, tiny_train_argv(out, "--resume", "--epochs", "2")) == 0
    assert [r["epoch"] for r in metrics(out)] == ["1", "2"]
    assert load(out / "checkpoints" / "last.pt")["epoch"] == 2


def test_mask_penalty_adds_the_mean_mask_to_the_loss():
    """loss = mse + beta * kl + mask_penalty * mean(mask) * steps; mse and kl as without it."""
    from conftest import make_tiny_model

    from cvae.model import init_copy_last

    frames = torch.rand(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    poses = torch.rand(1, 4, 3, 8, 12, generator=torch.Generator().manual_seed(1))
    results = {}
    for penalty in (0.0, 0.5):
        model = make_tiny_model(blend_mask=True)
        init_copy_last(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        torch.manual_seed(2)
        results[penalty] = training.train_step(model, optimizer, frames, poses, beta=1.0,
                                               teacher_forced=True, grad_clip=1.0,
                                               terms=LossTerms(mask_penalty=penalty))
    (loss0, mse0, kl0), (loss1, mse1, kl1) = results[0.0], results[0.5]
    torch.testing.assert_close((mse1, kl1), (mse0, kl0))
    closed = torch.sigmoid(torch.tensor(-4.0))  # the untrained mask, everywhere
    torch.testing.assert_close(loss1, loss0 + 0.5 * closed * 3)
    with pytest.raises(Exception, match="train.mask_penalty"):
        load_config(None, overrides=["train.mask_penalty=0.1"])  # needs model.blend_mask


# ---- the loss read on the host every train.check_every steps; the precision per device


def test_the_loss_tally_names_the_first_non_finite_step_when_it_checks():
    from cvae.training import LossTally, TrainingDiverged

    tally = LossTally(torch.device("cpu"), every=3, epoch=1)
    tally.add(torch.tensor([1.0, 0.5, 0.25]))
    tally.add(torch.tensor([float("nan"), 0.5, 0.25]))  # step 2: not read yet
    with pytest.raises(TrainingDiverged, match=r"^loss is nan at epoch 2, step 2 \(step 1 may "):
        tally.add(torch.tensor([float("inf"), 0.5, 0.25]))  # the third step reads: step 2
    fine = LossTally(torch.device("cpu"), every=50, epoch=0)
    for loss in (1.0, 3.0):
        fine.add(torch.tensor([loss, loss / 2, 0.0]))
    assert fine.steps == 2 and fine.means() == [2.0, 1.0, 0.0]
    late = LossTally(torch.device("cpu"), every=50, epoch=0)
    late.add(torch.tensor([float("inf"), 0.0, 0.0]))
    with pytest.raises(TrainingDiverged, match="loss is inf at epoch 1, step 1$"):
        late.means()  # the end of the epoch reads whatever is left


@pytest.mark.parametrize("precision, device, expected", [
    ("auto", "cpu", None), ("auto", "cuda", torch.bfloat16), ("bf16", "cpu", torch.bfloat16),
    ("fp32", "cuda", None)])
def test_precision_auto_is_bf16_on_a_gpu_only(precision, device, expected):
    from cvae.training import autocast_dtype_for

    cfg = load_config(overrides=[f"train.precision={precision}"])
    assert autocast_dtype_for(cfg, torch.device(device)) is expected


def test_setup_scales_beta_by_train_kl_weight():
    """train.kl_weight is beta's top value: what each epoch's plan trains with."""
    from conftest import TINY_MODEL_SETS

    from cvae.config import load_config

    cfg = load_config(overrides=[*TINY_MODEL_SETS, "train.kl_weight=1e-4",
                                 "train.kl_anneal_type=Monotonic", "train.kl_anneal_cycle=2",
                                 "train.kl_anneal_ratio=1"])
    assert _betas(training.setup(cfg, torch.device("cpu")), 3) == pytest.approx(
        [0.0, 0.5e-4, 1e-4])


def test_setup_holds_beta_at_0_for_train_kl_warmup():
    """train.kl_warmup epochs at beta 0, then the schedule from its own epoch 0."""
    from conftest import TINY_MODEL_SETS

    from cvae.config import load_config

    cfg = load_config(overrides=[*TINY_MODEL_SETS, "train.kl_weight=1e-4", "train.kl_warmup=3",
                                 "train.kl_anneal_type=Monotonic", "train.kl_anneal_cycle=2",
                                 "train.kl_anneal_ratio=1"])
    assert _betas(training.setup(cfg, torch.device("cpu")), 6) == pytest.approx(
        [0.0, 0.0, 0.0, 0.0, 0.5e-4, 1e-4])


def _betas(state, epochs: int) -> list[float]:
    """beta for each of the first `epochs` epochs, as training steps the schedule."""
    betas = []
    for _ in range(epochs):
        betas.append(state.kl_annealing.beta)
        state.kl_annealing.update()
    return betas


def test_step_options_carry_the_configs_loss_terms():
    from conftest import TINY_MODEL_SETS

    from cvae.config import load_config

    cfg = load_config(overrides=[*TINY_MODEL_SETS, "train.free_bits=2.5",
                                 "train.edge_weight=0.05", "model.blend_mask=true",
                                 "train.mask_penalty=1e-3"])
    options = training.step_options(cfg, torch.device("cpu"), progress=False)
    assert options.terms == LossTerms(free_bits=2.5, edge_weight=0.05, mask_penalty=1e-3)
    default = training.step_options(load_config(overrides=TINY_MODEL_SETS), torch.device("cpu"),
                                    progress=False)
    assert default.terms == LossTerms()
