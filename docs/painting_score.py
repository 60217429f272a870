"""The held-out score of the painting alone (docs/model_quality.md): the recipe's model with
model.posed_base, untrained (init_copy_last: no change yet), rolled out on the test sequences.
Each frame is then frame 0's colours on the skeleton pixels the pose painting could paint
(cvae.posed) and what the step keeps elsewhere (the room, frame 0's dancer's area filled from
its surround): nothing learned.

    python docs/painting_score.py --data data/dance
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cvae.config import load_config
from cvae.heldout import late, load_truth, overall, score_sequence
from cvae.lab_folder import load_test_sequences
from cvae.model import CVAE, init_copy_last
from cvae.tester import to_uint8

# The Makefile's MODEL_SETTINGS, with the painting as the change's reference.
SETTINGS = ["model.predict_change=true", "model.pose_region=1", "model.prev_pose=true",
            "model.hidden_fill=surround", "model.first_frame_skip=true",
            "model.first_frame_posed=true", "model.posed_base=true"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    args = p.parse_args()
    cfg = load_config(None, preset="small", overrides=SETTINGS)
    model = CVAE(cfg.model)
    init_copy_last(model)
    model.eval()
    sequences = load_test_sequences(args.data, cfg.data.height, cfg.data.width)
    length = min(len(s.poses) for s in sequences)
    truth = load_truth(args.data, [s.index for s in sequences], cfg.data.height,
                       cfg.data.width, length)
    first = torch.stack([s.first_frame for s in sequences]).float() / 255
    poses = torch.stack([s.poses[:length] for s in sequences]).float() / 255
    pred = to_uint8(model.generate(first, poses, noise=torch.zeros(
        len(sequences), length - 1, *model.latent_shape(cfg.data.height, cfg.data.width))))
    scores = []
    for seq, frames, true in zip(sequences, pred, truth, strict=True):
        frames[0] = seq.first_frame.numpy()
        scores.append(score_sequence(seq.index, frames, seq.first_frame, true, seq.poses[:length]))
    for name, means in (("all frames", overall(scores)), ("frames 500-629", late(scores))):
        print(name, {k: round(v, 4) for k, v in means.items()})


if __name__ == "__main__":
    main()
