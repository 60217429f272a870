"""`cvae-test`: Generates the test sequences from a checkpoint, writes submission.csv."""

from __future__ import annotations

import argparse

from cvae import cli
from cvae.errors import ConfigError, cli_entry
from cvae.heldout import summary_lines
from cvae.lock import lock_folder
from cvae.samples import sample_lines
from cvae.tester import check_out, run_tester
from cvae.training import resolve_device


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cvae-test", description=__doc__,
                                     parents=[cli.config_args("config/test.yaml")])
    parser.add_argument("--checkpoint", help="a .pt file, a Ray checkpoint folder, a run folder "
                        "or a sweep's best/ folder (test.checkpoint)")
    parser.add_argument("--into-run", action="store_true",
                        help="allow --out to be a training run folder (its psnr_per_frame.* "
                        "are replaced by the Tester's)")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.checkpoint:
        args.overrides = [*args.overrides, f"test.checkpoint={args.checkpoint}"]
    cfg = cli.config_from_args(args)
    if not cfg.test.checkpoint:
        raise ConfigError("test.checkpoint is empty: pass --checkpoint PATH")
    check_out(cfg.run.out, args.into_run)
    cli.configure_torch(cfg)
    with lock_folder(cfg.run.out):
        result = run_tester(cfg, cfg.test.checkpoint, resolve_device(cfg.run.device))
    print_result(result)
    return 0


def print_result(result: dict) -> None:
    print(f"submission: {result['submission']} ({result['sequences']} sequences x "
          f"{result['frames']} frames)")
    print(f"GIFs: {', '.join(result['gifs'])}; side by side: {', '.join(result['compare_gifs'])}")
    if "test_psnr" in result:
        print("\n".join(summary_lines(result)))
    if "test_samples" in result:
        print("\n".join(sample_lines(result)))
    if "val_psnr" in result:
        print(f"{result['val_source']}: val_psnr {result['val_psnr']:.2f} dB (copy-last baseline "
              f"{result['baseline_psnr']:.2f}), val_psnr_short {result['val_psnr_short']:.2f} dB "
              f"(baseline {result['baseline_psnr_short']:.2f}); one step from the true previous "
              f"frame {result['val_psnr_one_step']:.2f} dB (copying it "
              f"{result['baseline_psnr_one_step']:.2f}); SSIM {result['val_ssim']:.3f} (baseline "
              f"{result['baseline_ssim']:.3f}); figure {result['psnr_png']}; "
              f"background vs dancer errors per 70 frames (the first video) "
              f"{result['regions_csv']}")


if __name__ == "__main__":
    main()
