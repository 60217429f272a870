"""The strips in docs/model_quality.md: held-out test sequences at frames 0, 150, 300, 450 and
629, the truth over each Tester output folder's prediction (read back from its submission.csv).

    python docs/strips.py --data data/dance --seq 4 --out docs/figures/strip_seq4.png \
        today=runs/long/test first_frame_skip=runs/skip_long/test
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from cvae.lab_folder import contiguous_frames, load_image
from cvae.montage import write_strip

STEPS = [0, 150, 300, 450, 629]


def predicted(test_dir: Path, seq: int, frames: int, height: int, width: int) -> np.ndarray:
    """Sequence `seq` of a Tester folder's submission.csv: uint8 [frames,3,H,W]."""
    first, rows = seq * frames, []
    with open(test_dir / "submission.csv", newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if first < i <= first + frames:  # line 0 is the header
                rows.append(np.array(row[1:], dtype=np.uint8))
    return np.stack(rows).reshape(frames, 3, height, width)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seq", type=int, default=4)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("runs", nargs="+", help="NAME=TESTER_FOLDER")
    args = p.parse_args()
    paths = contiguous_frames(args.data / "test" / "test_truth" / str(args.seq), first=0)
    truth = np.stack([load_image(f, args.height, args.width).numpy() for f in paths])
    sources = {"truth": truth}
    for spec in args.runs:
        name, _, folder = spec.partition("=")
        sources[name] = predicted(Path(folder), args.seq, len(paths), args.height, args.width)
    sources["copy frame 0"] = np.repeat(truth[:1], len(paths), axis=0)
    print(write_strip(sources, args.out, steps=[min(s, len(paths) - 1) for s in STEPS]))


if __name__ == "__main__":
    main()
