"""``cvae-data``: make synthetic data, pack it into Parquet shards, preview it, describe it."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from cvae.errors import CvaeError, DataError, cli_entry
from cvae.lab_folder import frame_files, image_size, split_dirs, split_videos

DEFAULT_HEIGHT, DEFAULT_WIDTH, DEFAULT_CLIP_LEN = 32, 64, 16


def _given(args: argparse.Namespace, names: list[str]) -> dict:
    """The options the user gave (None = left to the library's default)."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def lab_summary(root: str | Path) -> dict:
    """Counts of a lab-layout folder: {split: {frames, videos, size}} and test sequences."""
    root = Path(root)
    out: dict = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            continue
        img_dir, _, videos = split_videos(root, split)
        w, h = image_size(img_dir / videos[0].names[0])
        out[split] = {"frames": sum(len(v.names) for v in videos), "videos": len(videos),
                      "size": f"{w}x{h}",
                      "manifest": (root / split / "manifest.json").is_file()}
    img_dir, label_dir = split_dirs(root, "test")
    if label_dir.is_dir():
        ks = sorted(int(p.name) for p in label_dir.iterdir() if p.name.isdigit())
        lengths = [len(frame_files(label_dir / str(k))) for k in ks]
        out["test"] = {"sequences": len(ks), "poses": lengths}
    return out


def _stochastic_level(text: str) -> float:
    """The --stochastic value as a number in [0, 1], or one error line naming the flag."""
    try:
        level = float(text)
    except ValueError:
        level = math.nan
    if not 0.0 <= level <= 1.0:  # NaN fails too
        raise CvaeError(f"--stochastic {text!r}: must be a number from 0 to 1 "
                        f"(0, the default: no events)")
    return level


def _cmd_synth(args: argparse.Namespace) -> None:
    opts = _given(args, ["seed", "train_videos", "frames_per_video", "val_frames",
                         "val_videos", "test_sequences", "test_frames", "height", "width"])
    if args.stochastic is not None:
        opts["stochastic"] = _stochastic_level(args.stochastic)
    try:
        from cvae.synth import generate
    except ImportError as err:
        raise CvaeError(f"synthetic data generator not available ({err})") from None
    t0 = time.perf_counter()
    made = generate(args.out, progress=not args.quiet, **opts)
    s = lab_summary(args.out)
    tr, va = s.get("train", {}), s.get("val", {})
    print(f"wrote {args.out}: {tr.get('frames', 0)} train frames in {tr.get('videos', 0)} "
          f"videos, {va.get('frames', 0)} val frames in {_videos(va.get('videos', 0))}, "
          f"{s.get('test', {}).get('sequences', 0)} test sequences, "
          f"{tr.get('size', '?')} (WxH) in {time.perf_counter() - t0:.1f} s")
    if opts.get("stochastic") and isinstance(made, dict) and "events" in made:
        n = made["events"]
        print(f"stochastic {opts['stochastic']:g}: {n['shirt']} shirt colour changes, "
              f"{n['flicker']} light flickers, {n['object']} objects; each video's events "
              f"are in <split>/manifest.json")


def _cmd_pack(args: argparse.Namespace) -> None:
    from cvae.packs import pack_to

    r = pack_to(args.root, args.out, clip_len=args.clip_len, height=args.height,
             width=args.width, rows_per_file=args.rows_per_file, progress=not args.quiet)
    tr, va = r["splits"]["train"], r["splits"]["val"]
    print(f"packed {tr['num_clips']} train clips of {tr['clip_len']} frames "
          f"({len(tr['files'])} files) and {_val_videos(va)}, "
          f"{r['height']}x{r['width']} (HxW), into {r['out']} in {r['seconds']:.1f} s")


def _videos(n: int) -> str:
    return f"{n} video" + ("" if n == 1 else "s")


def _val_videos(val: dict) -> str:
    """'a 630-frame val video' or '4 val videos of 630 frames' from a pack's val metadata."""
    if val["num_clips"] == 1:
        return f"a {val['clip_len']}-frame val video"
    return f"{val['num_clips']} val videos of {val['clip_len']} frames"


def _cmd_preview(args: argparse.Namespace) -> None:
    from cvae.preview import contact_sheet

    if args.out.is_dir():
        raise CvaeError(f"--out {args.out}: a folder; give the PNG file to write")
    if args.out.exists() and not args.force:
        raise CvaeError(f"--out {args.out} already exists: pass --force to replace it")
    path = contact_sheet(args.root, args.out, **_given(args, ["videos", "frames", "scale"]))
    print(f"wrote {path}")


def _cmd_info(args: argparse.Namespace) -> None:
    root = Path(args.root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    if (root / "meta.json").is_file():
        from cvae.packs import check_pack, read_meta

        meta = read_meta(root)
        tr = meta["splits"]["train"]
        check_pack(root, height=tr["height"], width=tr["width"], clip_len=tr["clip_len"])
        print(f"{root}: clip pack ({meta['format']}) of {meta['source']}")
        for split, s in meta["splits"].items():
            print(f"  {split}: {s['num_clips']} clips of {s['clip_len']} frames, "
                  f"{s['height']}x{s['width']} (HxW), {len(s['files'])} files")
        return
    if not any((root / s).is_dir() for s in ("train", "val", "test")):
        raise DataError(f"{root}: neither a lab-layout data folder (train/, val/, test/) "
                        f"nor a clip pack (meta.json)")
    s = lab_summary(root)
    print(f"{root}: lab-layout data")
    for split in ("train", "val"):
        if split in s:
            d = s[split]
            where = "per manifest.json" if d["manifest"] else "no manifest"
            print(f"  {split}: {d['frames']} frames in {d['videos']} videos ({where}), "
                  f"{d['size']} (WxH)")
    if "test" in s:
        print(f"  test: {s['test']['sequences']} sequences, poses per sequence "
              f"{json.dumps(s['test']['poses'])}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cvae-data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate a synthetic lab-layout dataset")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--seed", type=int)
    s.add_argument("--train-videos", type=int)
    s.add_argument("--frames-per-video", type=int)
    s.add_argument("--val-frames", type=int, help="frames per validation video")
    s.add_argument("--val-videos", type=int, help="validation videos (generator default: 4)")
    s.add_argument("--test-sequences", type=int)
    s.add_argument("--test-frames", type=int)
    s.add_argument("--height", type=int, help="source frame height (generator default)")
    s.add_argument("--width", type=int, help="source frame width (generator default)")
    s.add_argument("--stochastic", metavar="LEVEL",
                   help="0 to 1 (default 0: none): add per video events the pose cannot "
                        "foretell; expected per 100 frames: 2 x LEVEL shirt colour changes "
                        "(held 8-40 frames), 4 x LEVEL light flickers (1-4 frames), 1 x LEVEL "
                        "objects that appear and stay; listed in <split>/manifest.json")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_synth)

    s = sub.add_parser("pack", help="write train clips and the val videos as Parquet shards")
    s.add_argument("--root", required=True, type=Path, help="lab-layout data folder")
    s.add_argument("--out", required=True,
                   help="new (or empty) pack folder, or a URI such as s3://bucket/prefix")
    s.add_argument("--clip-len", type=int, default=DEFAULT_CLIP_LEN)
    s.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    s.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    s.add_argument("--rows-per-file", type=int, default=64)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_cmd_pack)

    s = sub.add_parser("preview", help="contact sheet PNG of a data folder")
    s.add_argument("root", type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--videos", type=int)
    s.add_argument("--frames", type=int)
    s.add_argument("--scale", type=int)
    s.add_argument("--force", action="store_true", help="replace an existing --out file")
    s.set_defaults(func=_cmd_preview)

    s = sub.add_parser("info", help="what a data folder or clip pack holds")
    s.add_argument("root", type=Path)
    s.set_defaults(func=_cmd_info)
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``cvae-data``."""
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    main()
