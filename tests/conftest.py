"""Shared fixtures: tiny lab-layout folders of random PNGs, the one tiny model, tiny runs.

Test modules import the shared constants and helpers directly (`from conftest import
TINY_MODEL`): pytest puts this folder on sys.path (rootdir-relative "prepend" imports)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, size: tuple[int, int] = (20, 10), mode: str = "RGB",
              seed: int = 0) -> Path:
    """A random image of ``size`` (W, H) in ``mode``."""
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return path


def build_lab(root: Path, *, train: tuple[int, ...] = (5, 7), val: int | tuple[int, ...] = 6,
              test: tuple[int, ...] = (3, 4), manifest: bool = True,
              size: tuple[int, int] = (20, 10)) -> Path:
    """A lab-layout folder: train videos of the given lengths (frame numbers run on across
    videos), val videos likewise (an int: one), test sequences with the given pose counts;
    (W, H) images."""
    seed = 0

    def pair(split: str, n: int) -> None:
        nonlocal seed
        for d in ("img", "label"):
            write_png(root / split / f"{split}_{d}" / f"frame{n}.png", size, seed=seed)
            seed += 1

    def videos(split: str, lengths: tuple[int, ...]) -> list[dict]:
        first, listed = 0, []
        for vid, n in enumerate(lengths):
            for f in range(first, first + n):
                pair(split, f)
            listed.append({"video_id": vid, "first_frame": first, "num_frames": n})
            first += n
        return listed

    splits = {"train": videos("train", train),
              "val": videos("val", (val,) if isinstance(val, int) else val)}
    if manifest:
        w, h = size
        for split, vids in splits.items():
            doc = {"format": "cvae-synth/1", "seed": 0, "height": h, "width": w, "videos": vids}
            (root / split / "manifest.json").write_text(json.dumps(doc))
    for k, n in enumerate(test):
        for f in range(2):  # frame1 must be ignored: only frame0 is used
            write_png(root / "test" / "test_img" / str(k) / f"frame{f}.png", size, seed=seed)
            seed += 1
        for f in range(n):
            write_png(root / "test" / "test_label" / str(k) / f"frame{f}.png", size, seed=seed)
            seed += 1
    return root


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """Two train videos (5 + 7 frames) with a manifest, 6 val frames, 2 test sequences."""
    return build_lab(tmp_path / "lab")


@pytest.fixture
def make_lab():
    """The ``build_lab`` builder, for tests that need another shape of folder."""
    return build_lab


@pytest.fixture
def png():
    """The ``write_png`` helper."""
    return write_png


# ---- the one tiny model: every test that trains or runs a model small enough for a CPU ----

# The model dims, defined once: as a ModelConfig (tiny_model_config), a CVAE (make_tiny_model,
# the tiny_model fixture) and as `--set` flags for the command lines (TINY_MODEL_SETS).
TINY_MODEL = {"frame_channels": 8, "label_channels": 4, "latent_channels": 4,
              "decoder_channels": 8}
TINY_MODEL_SETS = tuple(f"model.{key}={value}" for key, value in TINY_MODEL.items())


def tiny_model_config(**overrides):
    """The tiny model's ModelConfig (``overrides``: other ModelConfig fields)."""
    from cvae.config import ModelConfig

    return ModelConfig(**{**TINY_MODEL, **overrides})


def make_tiny_model(seed: int = 0, **overrides):
    """A tiny CVAE, its weights drawn from torch seed ``seed``."""
    import torch

    from cvae.model import CVAE

    torch.manual_seed(seed)
    return CVAE(tiny_model_config(**overrides))


@pytest.fixture
def tiny_model():
    """A tiny CVAE (seed 0) in training mode."""
    return make_tiny_model()


def set_flags(*texts: str) -> list[str]:
    """``--set`` flags: ["--set", text, "--set", text, ...]."""
    flags: list[str] = []
    for text in texts:
        flags += ["--set", text]
    return flags


# ---- tiny end-to-end runs (cvae-train / cvae-test on a few frames of synthetic data) ----

TINY_SETS = (
    *TINY_MODEL_SETS, "data.clip_len=4", "train.max_steps_per_epoch=2",
    "validation.val_len=6", "test.seq_len=6", "run.progress=false", "run.flush_denormal=false",
)  # fmt: skip


def tiny_sets(*extra: str) -> list[str]:
    """`--set` flags for a tiny model on the tiny data (plus ``extra`` section.key=value)."""
    return set_flags(*TINY_SETS, *extra)


def metrics_rows(run: Path) -> list[dict[str, str]]:
    """<run>/metrics.csv as written: one dict of strings per row. Read with the csv module, not
    with cvae.rundir.read_metrics, so the tests check the file itself."""
    with open(Path(run) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def saved_state(path) -> dict:
    """A .pt file as written, read with torch.load (CPU, weights only), not with
    cvae.checkpoint.load_checkpoint's checks, so the tests check the file itself."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def one_error_line(capsys) -> str:
    """The one `error: ...` line a command printed on stderr (and no traceback)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def run_main(main, argv: list[str]) -> int:
    """Call a `cli_entry` main and return its exit code (they always raise SystemExit)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny synthetic data set (32x64): 2 train videos of 12 frames, a 12-frame val video,
    2 test sequences of 8 poses. Shared by the whole session: copy it before changing it."""
    from cvae.synth import generate

    out = tmp_path_factory.mktemp("tiny") / "data"
    generate(out, train_videos=2, frames_per_video=12, val_frames=12, test_sequences=2,
             test_frames=8, height=32, width=64, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_train_argv(tiny_data):
    """argv for `cvae-train` on the tiny data: tiny_train_argv(out, *flags, sets=(...))."""

    def argv(out: Path, *flags: str, sets: tuple[str, ...] = ()) -> list[str]:
        return ["--data", str(tiny_data), "--out", str(out), *flags, *tiny_sets(*sets)]

    return argv


@pytest.fixture(scope="session")
def tiny_run(tiny_train_argv, tmp_path_factory) -> Path:
    """A finished 3-epoch `cvae-train` run folder on the tiny data. Shared: copy it before
    changing it."""
    from cvae.train_cli import main

    out = tmp_path_factory.mktemp("run") / "A"
    code = run_main(main, tiny_train_argv(out, "--epochs", "3"))
    assert code == 0
    return out


WRITING_COMMANDS = ("cvae-train", "ray_jobs.train", "cvae-test", "cvae-report", "ray_jobs.tune")


def writing_commands() -> dict:
    """Every command that writes into an --out folder: name -> (main, argv(out)), with argv
    enough to reach the point where the command takes its --out (data and checkpoint made up)."""
    from cvae import report, test_cli, train_cli
    from ray_jobs import train, tune

    return {"cvae-train": (train_cli.main, lambda out: ["--data", "d", "--out", str(out)]),
            "ray_jobs.train": (train.main, lambda out: ["--data", "d", "--out", str(out)]),
            "cvae-test": (test_cli.main,
                          lambda out: ["--checkpoint", "c.pt", "--data", "d", "--out", str(out)]),
            "cvae-report": (report.main, lambda out: ["d", "--out", str(out)]),
            "ray_jobs.tune": (tune.main, lambda out: ["--space", "tune_spaces/smoke.yaml",
                                                      "--data", "d", "--out", str(out)])}


@pytest.fixture
def cli():
    """run_main: call a console-script main, return its exit code."""
    return run_main


# ---- an S3-compatible server on this machine (moto), for every storage path that may be a URI ----

S3_BUCKET = "cvae-test"


@pytest.fixture(scope="session")
def s3():
    """A moto S3 server on 127.0.0.1 with one bucket; `s3(prefix)` gives a URI that
    pyarrow.fs, Ray Data and Ray Train open (the endpoint rides in the query string). Dummy
    credentials are put in the environment, so Ray processes started later inherit them."""
    import boto3
    from moto.server import ThreadedMotoServer

    from ray_jobs.common import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(Bucket=S3_BUCKET)

    def uri(prefix: str) -> str:
        return (f"s3://{S3_BUCKET}/{prefix.strip('/')}?scheme=http"
                f"&endpoint_override=127.0.0.1:{port}")

    try:
        yield uri
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny tensors: one intra-op thread is as fast, and far faster on a busy CPU
    (spinning OpenMP workers on oversubscribed cores slow tiny ops down 100x)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def teacher_forced_both_ways(model, frames, poses, noise, beta):
    """(pred, loss, mse, kl, gradients) of a teacher-forced clip through the batched pass, then
    through the per-frame loop."""
    from cvae.losses import clip_loss

    results = []
    for stepwise in (False, True):
        model.zero_grad(set_to_none=True)
        out = model(frames, poses, True, noise=noise, stepwise=stepwise)
        pred = out.pred
        loss, mse, kl = clip_loss(pred, frames[:, 1:], out.mu, out.logvar, beta=beta)
        loss.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        results.append((pred.detach(), loss.detach(), mse.detach(), kl.detach(), grads))
    return results


def float64_both_ways(frames, poses, **options):
    """teacher_forced_both_ways in float64 for a tiny CVAE with the ModelConfig `options` (torch
    seed 0, chunks of 2 frames, z's noise drawn from seed 2, beta 1)."""
    import torch

    from cvae.model import CVAE

    torch.manual_seed(0)
    model = CVAE(tiny_model_config(**options)).to(torch.float64).train()
    model.chunk_frames = 2
    frames, poses = frames.to(torch.float64), poses.to(torch.float64)
    b, t, _, h, w = frames.shape
    noise = torch.randn(b, t - 1, *model.latent_shape(h, w),
                        generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return teacher_forced_both_ways(model, frames, poses, noise, beta=1.0)


def uint8_batches(n: int, *, fetched: list | None = None, t: int = 3, size: int = 8):
    """n batches of one random uint8 clip (frames, poses [1,t,3,size,size], ids [1]), batch i
    drawn from seed i; `fetched` records which were fetched."""
    import torch

    for i in range(n):
        if fetched is not None:
            fetched.append(i)
        g = torch.Generator().manual_seed(i)
        shape = (1, t, 3, size, size)
        yield (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
               torch.randint(0, 256, shape, generator=g, dtype=torch.uint8),
               torch.tensor([i]))
