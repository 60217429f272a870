"""train.ema_decay: the weights' moving average, what checkpoints serve and how resume keeps it."""

from __future__ import annotations

import random

import torch
from conftest import TINY_MODEL_SETS, make_tiny_model, uint8_batches

import cvae.training as training
from cvae.batches import EpochData
from cvae.checkpoint import load_checkpoint
from cvae.config import load_config
from cvae.train_state import EpochPlan, moving_average
from cvae.training import StepOptions, fit, train_epoch


def _float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def test_the_average_takes_in_the_weights_after_every_step(monkeypatch):
    model = make_tiny_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    average = moving_average(model, 0.75)
    after: list[dict[str, torch.Tensor]] = []  # the weights after each step
    step = training.train_step

    def recorded(*args, **kwargs):
        out = step(*args, **kwargs)
        after.append(_float_state(model))
        return out

    monkeypatch.setattr(training, "train_step", recorded)
    train_epoch(model, optimizer, uint8_batches(3), EpochPlan(0, 1, beta=0.0, tfr=1.0),
                StepOptions(torch.device("cpu"), progress=False), tf_rng=random.Random(0),
                average=average)
    assert len(after) == 3 and int(average.n_averaged) == 3
    w1, w2, w3 = after
    served = _float_state(average.module)
    changed = 0
    for key, value in served.items():
        # the first update copies; each later one keeps 0.75 of the average
        expected = 0.75 * (0.75 * w1[key] + 0.25 * w2[key]) + 0.25 * w3[key]
        torch.testing.assert_close(value, expected, msg=key)
        changed += not torch.allclose(value, w3[key])
    assert changed  # the average is not the last weights
    # BatchNorm's running statistics are averaged alike
    assert any("running_mean" in key for key in served)


def _fit(tmp_path, epochs: int, resume: dict | None = None, name: str = "run") -> dict:
    cfg = load_config(overrides=[
        *TINY_MODEL_SETS, f"train.epochs={epochs}", f"run.out={tmp_path / name}",
        "run.progress=false", "train.per_save=0", "train.ema_decay=0.5", "train.lr=1e-2",
    ])
    data = EpochData(lambda epoch: uint8_batches(2), steps_per_epoch=2)
    fit(cfg, data=data, val_videos=None, device=torch.device("cpu"), resume_state=resume)
    return load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")


def test_checkpoints_serve_the_average_and_resume_continues_both(tmp_path):
    whole = _fit(tmp_path, 3, name="whole")
    assert whole["ema_updates"] == 6  # 3 epochs x 2 steps
    assert whole["model"].keys() == whole["train_model"].keys()
    assert any(not torch.equal(whole["model"][k], whole["train_model"][k])
               for k in whole["model"] if whole["model"][k].is_floating_point())
    # The Tester loads "model": the average
    model = make_tiny_model()
    model.load_state_dict(whole["model"])

    first = _fit(tmp_path, 2, name="split")
    resumed = _fit(tmp_path, 3, resume=first, name="split")
    assert resumed["ema_updates"] == 6
    for part in ("model", "train_model"):
        for key, value in whole[part].items():
            torch.testing.assert_close(resumed[part][key], value, rtol=1e-6, atol=1e-7,
                                       msg=f"{part}.{key} differs after resume")


def test_without_an_average_the_checkpoint_holds_the_weights_alone(tmp_path):
    cfg = load_config(overrides=[
        *TINY_MODEL_SETS, "train.epochs=1", f"run.out={tmp_path / 'run'}",
        "run.progress=false", "train.per_save=0",
    ])
    fit(cfg, data=EpochData(lambda epoch: uint8_batches(2), steps_per_epoch=2), val_videos=None,
        device=torch.device("cpu"))
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert "train_model" not in state and "ema_updates" not in state
