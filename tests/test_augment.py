"""Training augmentation (cvae.augment) and its use in training (train.augment)."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

import cvae.training as training
from cvae.augment import augment
from cvae.train_cli import main as train_main


def test_augment_mirrors_clips_and_recolours_frames_only():
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (64, 3, 3, 4, 5), dtype=torch.uint8, generator=g)
    poses = torch.randint(0, 256, (64, 3, 3, 4, 5), dtype=torch.uint8, generator=g)
    out_frames, out_poses = augment(frames, poses, random.Random(0))
    assert out_frames.shape == frames.shape and out_poses.shape == poses.shape
    flips, orders = set(), set()
    for f, p, of, op in zip(frames, poses, out_frames, out_poses, strict=True):
        flipped = not torch.equal(op, p)
        if flipped:  # the poses are mirrored with their frames, never recoloured
            assert torch.equal(op, p.flip(-1))
            f = f.flip(-1)
        matches = [c for c in itertools.permutations(range(3)) if torch.equal(of, f[:, list(c)])]
        assert len(matches) == 1
        flips.add(flipped)
        orders.add(matches[0])
    assert flips == {True, False} and len(orders) == 6  # every case is drawn
    # the same seed draws the same augmentation (a resumed run replays it)
    again = augment(frames, poses, random.Random(0))
    assert torch.equal(again[0], out_frames) and torch.equal(again[1], out_poses)


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
