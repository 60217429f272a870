"""Tests of the Tester (`cvae-test`): submission.csv, GIFs, PSNR files, and bad inputs."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_error_line
from PIL import Image

from cvae.lab_folder import load_image
from cvae.lock import LOCK_FILE
from cvae.test_cli import main as cvae_test
from cvae.tester import load_model, write_submission

K, T, H, W = 2, 6, 32, 64  # tiny data: 2 test sequences; test.seq_len = 6; 32x64 frames
TEST_SETS = ("test.seq_len=6", "run.progress=false", "run.flush_denormal=false")


def argv_for(checkpoint, data: Path, out: Path, *extra: str) -> list[str]:
    """cvae-test argv; ``extra`` flags come last, so their --set wins over TEST_SETS."""
    argv = ["--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out)]
    for text in TEST_SETS:
        argv += ["--set", text]
    return [*argv, *extra]


def read_submission(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], np.array([[int(v) for v in row] for row in rows[1:]], dtype=np.int64)


@pytest.fixture(scope="module")
def tested(tiny_run, tiny_data, tmp_path_factory) -> Path:
    """cvae-test on the tiny run's best.pt; the output folder."""
    out = tmp_path_factory.mktemp("tested") / "out"
    with pytest.raises(SystemExit) as exc:
        cvae_test(argv_for(tiny_run / "checkpoints" / "best.pt", tiny_data, out))
    assert exc.value.code == 0
    return out


VIEWS = {"compare_seq0.gif", "compare_seq1.gif", "strip_seq0.png", "strip_seq1.png"}
SCORE_FILES = {"test_scores.csv", "test_scores_summary.csv", "test_psnr_per_frame.png"}


def test_output_files(tested):
    assert {p.name for p in tested.iterdir()} - {LOCK_FILE} == {
        "submission.csv", "pred_seq0.gif", "pred_seq1.gif", "psnr_per_frame.csv",
        "psnr_per_frame.png", "rollout_regions.csv", *VIEWS, *SCORE_FILES}


def test_submission_header_and_ids(tested):
    header, rows = read_submission(tested / "submission.csv")
    assert len(header) == 3 * H * W + 1 == 6145
    assert header == ["id", *map(str, range(3 * H * W))]
    assert rows.shape == (K * T, 3 * H * W + 1)
    assert rows[:, 0].tolist() == list(range(K * T))


def test_submission_values_are_bytes(tested):
    _, rows = read_submission(tested / "submission.csv")
    values = rows[:, 1:]
    assert values.min() >= 0 and values.max() <= 255
    text = (tested / "submission.csv").read_text().splitlines()[1]
    assert "." not in text and "e" not in text  # integers, not floats
    assert len(np.unique(values)) > 10  # not a constant image


def test_frame0_is_the_given_first_frame(tested, tiny_data):
    _, rows = read_submission(tested / "submission.csv")
    frames = rows[:, 1:].reshape(K, T, 3, H, W)
    for k in range(K):
        first = load_image(tiny_data / "test" / "test_img" / str(k) / "frame0.png", H, W)
        assert np.array_equal(frames[k, 0], first.numpy().astype(np.int64))
        # later frames are generated, not copies of frame 0
        assert not np.array_equal(frames[k, 1], frames[k, 0])
    assert not np.array_equal(frames[0, 0], frames[1, 0])


def test_gifs(tested):
    for k in range(K):
        with Image.open(tested / f"pred_seq{k}.gif") as im:
            assert im.format == "GIF"
            assert im.n_frames == T
            assert im.size == (2 * W, 2 * H)  # enlarged 2x


def test_gif_first_frame_matches_the_submission(tested):
    _, rows = read_submission(tested / "submission.csv")
    first = rows[0, 1:].reshape(3, H, W).transpose(1, 2, 0)
    with Image.open(tested / "pred_seq0.gif") as im:
        im.seek(0)
        shown = np.asarray(im.convert("RGB"))[::2, ::2].astype(np.int64)
    # GIF palettes quantize colours: close, not exact
    assert np.abs(shown - first).mean() < 12


def test_psnr_per_frame(tested):
    lines = (tested / "psnr_per_frame.csv").read_text().splitlines()
    assert lines[0] == ("frame,psnr,baseline_psnr,ssim,baseline_ssim,box_ssim,baseline_box_ssim,"
                        "sharpness,baseline_sharpness")
    body = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in body] == list(range(1, T))  # the val video capped at seq_len
    assert all(0 < float(r[1]) < 100 and 0 < float(r[2]) < 100 for r in body)
    assert all(-1 <= float(r[3]) <= 1 and -1 <= float(r[4]) <= 1 for r in body)
    assert all(-1 <= float(r[5]) <= 1 and -1 <= float(r[6]) <= 1 for r in body)
    assert all(float(r[7]) > 0 and float(r[8]) > 0 for r in body)  # every pose has a skeleton
    with Image.open(tested / "psnr_per_frame.png") as im:
        assert im.format == "PNG"


def test_rollout_regions(tested):
    from cvae.evaluate import REGION_COLUMNS

    lines = (tested / "rollout_regions.csv").read_text().splitlines()
    assert lines[0] == ",".join(REGION_COLUMNS)
    body = [line.split(",") for line in lines[1:]]
    assert [(int(r[0]), int(r[1])) for r in body] == [(1, T - 1)]  # one window: T < 70
    assert all(float(v) >= 0 for v in body[0][2:4])  # whole-frame errors are never nan


# ------------------------------------------------------ held-out score and side-by-side views


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _png_array(path: Path) -> np.ndarray:
    """A frame PNG as float64 [3,H,W] in [0,1], read with PIL and numpy alone."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64).transpose(2, 0, 1) / 255


def _numpy_psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1 / np.mean((a - b) ** 2)))


def test_heldout_scores_baseline_rows_are_frame0_repeated(tested, tiny_data):
    rows = _read_csv(tested / "test_scores.csv")
    assert list(rows[0]) == ["sequence", "frame", "psnr", "baseline_psnr", "ssim",
                             "baseline_ssim", "box_ssim", "baseline_box_ssim", "sharpness",
                             "baseline_sharpness"]
    assert [(int(r["sequence"]), int(r["frame"])) for r in rows] == [
        (k, t) for k in range(K) for t in range(1, T)]
    for r in rows:
        k, t = r["sequence"], int(r["frame"])
        given = _png_array(tiny_data / "test" / "test_img" / k / "frame0.png")
        true = _png_array(tiny_data / "test" / "test_truth" / k / f"frame{t}.png")
        assert float(r["baseline_psnr"]) == pytest.approx(_numpy_psnr(given, true), abs=1e-3)
        assert -1 <= float(r["ssim"]) <= 1 and -1 <= float(r["baseline_ssim"]) < 1
        assert -1 <= float(r["box_ssim"]) <= 1 and -1 <= float(r["baseline_box_ssim"]) < 1
        assert float(r["sharpness"]) > 0 and float(r["baseline_sharpness"]) > 0


def test_heldout_scores_model_rows_score_the_submission(tested, tiny_data):
    _, sub = read_submission(tested / "submission.csv")
    frames = sub[:, 1:].reshape(K, T, 3, H, W) / 255
    for r in _read_csv(tested / "test_scores.csv"):
        k, t = int(r["sequence"]), int(r["frame"])
        true = _png_array(tiny_data / "test" / "test_truth" / str(k) / f"frame{t}.png")
        assert float(r["psnr"]) == pytest.approx(_numpy_psnr(frames[k, t], true), abs=1e-3)


def test_heldout_summary_is_the_mean_of_the_rows(tested, capsys):
    rows = _read_csv(tested / "test_scores.csv")
    summary = {r["sequence"]: r for r in _read_csv(tested / "test_scores_summary.csv")}
    assert list(summary) == ["0", "1", "all", "late"]
    assert int(summary["all"]["frames"]) == K * (T - 1)
    # the late window is the last 130 predicted frames: all 5 of them here
    assert [summary["late"][k] for k in ("first_frame", "last_frame", "frames")] == [
        "1", str(T - 1), str(K * (T - 1))]
    for name in ("psnr", "baseline_psnr", "ssim", "baseline_ssim", "box_ssim",
                 "baseline_box_ssim", "sharpness", "baseline_sharpness"):
        mean = np.mean([float(r[name]) for r in rows])
        assert float(summary["all"][name]) == pytest.approx(mean, abs=1e-3), name
        assert float(summary["late"][name]) == pytest.approx(mean, abs=1e-3), name
        mean0 = np.mean([float(r[name]) for r in rows if r["sequence"] == "0"])
        assert float(summary["0"][name]) == pytest.approx(mean0, abs=1e-3), name
    with Image.open(tested / "test_psnr_per_frame.png") as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_side_by_side_gif_and_strip(tested):
    from cvae.montage import strip_steps

    for k in range(K):
        with Image.open(tested / f"compare_seq{k}.gif") as im:
            assert im.n_frames == T
            assert im.size == (3 * 2 * W + 2 * 2, 14 + 2 * H)  # truth | prediction | baseline
        with Image.open(tested / f"strip_seq{k}.png") as im:
            columns = len(strip_steps(T))  # t = 1 and the last frame
            assert columns == 2
            assert im.size[1] == 14 + 3 * (2 * H + 2)  # rows truth, prediction, baseline
            assert im.size[0] > columns * 2 * W


def test_without_truth_no_score_and_two_panel_views(tiny_run, tiny_data, tmp_path, cli,
                                                    capsys):
    data = _copy_data(tiny_data, tmp_path)
    shutil.rmtree(data / "test" / "test_truth")
    out = tmp_path / "out"
    assert cli(cvae_test, argv_for(tiny_run, data, out)) == 0
    assert "held-out" not in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert VIEWS <= names and not SCORE_FILES & names
    with Image.open(out / "compare_seq0.gif") as im:
        assert im.size == (2 * 2 * W + 2, 14 + 2 * H)  # prediction | poses


def test_truth_missing_for_one_sequence(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    shutil.rmtree(data / "test" / "test_truth" / "1")
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out, "test_truth", "not found")


def test_truth_shorter_than_the_rollout(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    for n in range(3, 8):
        (data / "test" / "test_truth" / "0" / f"frame{n}.png").unlink()
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out, "test_truth", "3 true frames")


def test_run_folder_is_accepted_and_gives_the_same_submission(tested, tiny_run, tiny_data,
                                                               tmp_path, cli):
    out = tmp_path / "from_run"
    assert cli(cvae_test, argv_for(tiny_run, tiny_data, out)) == 0
    assert (out / "submission.csv").read_bytes() == (tested / "submission.csv").read_bytes()


def test_same_seed_same_submission_other_seed_differs(tested, tiny_run, tiny_data, tmp_path,
                                                      cli):
    best = tiny_run / "checkpoints" / "best.pt"
    out = tmp_path / "seed1"
    assert cli(cvae_test, argv_for(best, tiny_data, out, "--set", "test.seed=1")) == 0
    _, a = read_submission(tested / "submission.csv")
    _, b = read_submission(out / "submission.csv")
    frames_a, frames_b = a[:, 1:].reshape(K, T, -1), b[:, 1:].reshape(K, T, -1)
    assert np.array_equal(frames_a[:, 0], frames_b[:, 0])  # the given frames
    assert not np.array_equal(frames_a[:, 1:], frames_b[:, 1:])  # z is drawn from the seed


def test_shorter_seq_len(tiny_run, tiny_data, tmp_path, cli):
    out = tmp_path / "short"
    argv = argv_for(tiny_run / "checkpoints" / "best.pt", tiny_data, out, "--set",
                     "test.seq_len=3")
    assert cli(cvae_test, argv) == 0
    _, rows = read_submission(out / "submission.csv")
    assert rows.shape[0] == K * 3
    assert rows[:, 0].tolist() == list(range(K * 3))


def test_seq_len_longer_than_the_poses_uses_every_pose(tiny_run, tiny_data, tmp_path, cli):
    out = tmp_path / "long"
    argv = argv_for(tiny_run / "checkpoints" / "best.pt", tiny_data, out, "--set",
                     "test.seq_len=50")
    assert cli(cvae_test, argv) == 0
    _, rows = read_submission(out / "submission.csv")
    assert rows.shape[0] == K * 8  # the tiny data has 8 poses per sequence


def test_load_model_rebuilds_from_the_stored_config(tiny_run):
    model, cfg = load_model(tiny_run / "checkpoints" / "best.pt", torch.device("cpu"))
    assert not model.training
    assert cfg.model.frame_channels == 8 and cfg.data.height == H and cfg.data.width == W
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state["model"][key])


def test_write_submission_rejects_mixed_shapes(tmp_path):
    a = np.zeros((3, 3, 4, 4), np.uint8)
    b = np.zeros((2, 3, 4, 4), np.uint8)
    with pytest.raises(Exception, match="differ in shape"):
        write_submission([a, b], tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()


def test_write_submission_layout(tmp_path):
    seq = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)  # T=2, C,H,W
    write_submission([seq, seq + 100], tmp_path / "s.csv")
    header, rows = read_submission(tmp_path / "s.csv")
    assert header == ["id", *map(str, range(12))]
    assert rows[:, 0].tolist() == [0, 1, 2, 3]
    assert rows[1, 1:].tolist() == list(range(12, 24))  # C,H,W order, frame after frame
    assert rows[2, 1:].tolist() == list(range(100, 112))


# ---------------------------------------------------------------------------- bad inputs


def _fails(cli, capsys, argv, out: Path, *expected: str) -> str:
    capsys.readouterr()
    assert cli(cvae_test, argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err
    for text in expected:
        assert text in lines[0], lines[0]
    assert not (out / "submission.csv").exists()
    assert not list(out.glob(".submission*")) if out.exists() else True
    return lines[0]


def test_missing_checkpoint(tiny_data, tmp_path, cli, capsys):
    missing = tmp_path / "nope.pt"
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(missing, tiny_data, out), out, str(missing), "not found")


def test_folder_without_a_checkpoint(tiny_data, tmp_path, cli, capsys):
    folder = tmp_path / "empty_run"
    folder.mkdir()
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(folder, tiny_data, out), out, str(folder), "best.pt")


def test_random_bytes_are_not_a_checkpoint(tiny_data, tmp_path, cli, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(bad, tiny_data, out), out, str(bad), "not a readable checkpoint")


def test_a_torch_file_that_is_not_a_cvae_checkpoint(tiny_data, tmp_path, cli, capsys):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(other, tiny_data, out), out, str(other), "not a cvae checkpoint")


def test_weights_that_do_not_match_the_stored_config(tiny_run, tiny_data, tmp_path, cli,
                                                     capsys):
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["model"]["frame_channels"] = 16
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(edited, tiny_data, out), out, str(edited),
           "do not match the stored model config")


def test_invalid_stored_config(tiny_run, tiny_data, tmp_path, cli, capsys):
    state = torch.load(tiny_run / "checkpoints" / "best.pt", weights_only=True)
    state["config"]["train"]["tfr"] = 5.0
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(edited, tiny_data, out), out, "train.tfr")


def _copy_data(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    return data


def test_sequences_with_different_pose_counts(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    for n in range(4, 8):  # sequence 1 keeps 4 poses, fewer than seq_len 6; sequence 0 has 8
        (data / "test" / "test_label" / "1" / f"frame{n}.png").unlink()
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out, "different pose counts", "1: 4")


def test_pose_counts_must_match_even_when_seq_len_is_longer(tiny_run, tiny_data, tmp_path,
                                                             cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    (data / "test" / "test_label" / "0" / "frame7.png").unlink()  # 7 poses vs 8
    out = tmp_path / "out"
    argv = argv_for(tiny_run, data, out, "--set", "test.seq_len=50")
    _fails(cli, capsys, argv, out, "different pose counts", "0: 7", "1: 8")


def test_missing_test_folder(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    shutil.rmtree(data / "test")
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out, "test_img", "not found")


def test_missing_test_labels_of_one_sequence(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    shutil.rmtree(data / "test" / "test_label" / "1")
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out)


def test_missing_first_frame(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    (data / "test" / "test_img" / "0" / "frame0.png").unlink()
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out), out, "frame0.png")


def test_no_checkpoint_given(tiny_data, tmp_path, cli, capsys):
    out = tmp_path / "out"
    argv = ["--data", str(tiny_data), "--out", str(out), "--set", "run.progress=false"]
    _fails(cli, capsys, argv, out, "test.checkpoint", "--checkpoint")


# ------------------------------------------------------------- the command line (cvae.test_cli)


def test_unknown_key_exits_2_with_one_line(cli, capsys, tmp_path):
    argv = ["--out", str(tmp_path / "o"), "--set", "train.epoch=3", "--set", "test.checkpoint=x"]
    assert cli(cvae_test, argv) == 2
    line = one_error_line(capsys)
    assert "unknown key 'train.epoch'" in line
    assert "did you mean 'train.epochs'" in line
    assert not (tmp_path / "o").exists()


def test_tester_without_checkpoint(cli, capsys, tmp_path):
    assert cli(cvae_test, ["--out", str(tmp_path / "o")]) == 2
    assert "--checkpoint" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # cvae-train and cvae-test end to end, per model option
@pytest.mark.parametrize("sets, rebuilt", [
    (("model.blend_mask=true", "model.predict_change=true"),
     lambda model: model.generator[-1].out_channels == 4),
    (("model.prior=learned",), lambda model: model.prior is not None),
    (("model.latent_cell=0", "model.prior=learned"),
     lambda model: model.latent_cell == 0 and model.prior.cell == model.posterior.cell == 0),
], ids=["blend_mask", "learned_prior", "whole_frame_latent"])
def test_a_checkpoint_with_model_options_reloads_and_tests(sets, rebuilt, tiny_train_argv,
                                                           tiny_data, tmp_path, cli):
    """A run trained with a model option: its checkpoint rebuilds the option's parts (the mask
    channel, the learned prior, z's grain) and cvae-test writes the submission."""
    from cvae.train_cli import main as cvae_train

    run = tmp_path / "run"
    assert cli(cvae_train, tiny_train_argv(run, "--epochs", "1", sets=sets)) == 0
    model, cfg = load_model(run / "checkpoints" / "best.pt", torch.device("cpu"))
    assert rebuilt(model)
    assert cli(cvae_test, argv_for(run, tiny_data, tmp_path / "out")) == 0
    assert (tmp_path / "out" / "submission.csv").is_file()


def test_run_tester_result_carries_the_box_scores(tiny_run, tiny_data, tmp_path):
    """What cvae-test returns (and prints through heldout.summary_lines): the dancer-box SSIM
    and sharpness, model and baseline, over all frames and the late window, and the validation
    video's."""
    from cvae.config import load_config
    from cvae.heldout import summary_lines
    from cvae.tester import run_tester

    cfg = load_config(None, [f"data.root={tiny_data}", f"run.out={tmp_path / 'out'}",
                             *TEST_SETS])
    result = run_tester(cfg, tiny_run / "checkpoints" / "best.pt", torch.device("cpu"))
    for name in ("box_ssim", "baseline_box_ssim", "sharpness", "baseline_sharpness"):
        assert np.isfinite(result[f"test_{name}"]) and np.isfinite(result[f"test_late_{name}"])
    assert (result["late_first_frame"], result["late_last_frame"]) == (1, T - 1)
    assert isinstance(result["late_goal_met"], bool)
    assert {"val_box_ssim", "baseline_box_ssim", "val_sharpness", "baseline_sharpness"} <= set(
        result)
    lines = summary_lines(result)
    assert f"box SSIM {result['test_late_box_ssim']:.3f}" in lines[2]
    assert f"sharpness {result['test_sharpness']:.2f}" in lines[1]


def test_samples_keep_the_submission_and_score_every_sample(tested, tiny_run, tiny_data,
                                                            tmp_path, cli, capsys):
    """test.samples=3: the submission is sample 0, unchanged; test_samples.csv scores 3 rollouts
    per sequence, sample 0's row is the held-out score of the submission, and the summary's
    mean and best are those of the rows."""
    out = tmp_path / "samples"
    argv = argv_for(tiny_run / "checkpoints" / "best.pt", tiny_data, out, "--set",
                    "test.samples=3")
    assert cli(cvae_test, argv) == 0
    printed = capsys.readouterr().out
    assert (out / "submission.csv").read_bytes() == (tested / "submission.csv").read_bytes()
    rows = _read_csv(out / "test_samples.csv")
    assert [(r["sequence"], r["sample"]) for r in rows] == [
        (str(k), str(i)) for k in range(K) for i in range(3)]
    summary = {r["sequence"]: r for r in _read_csv(tested / "test_scores_summary.csv")}
    psnr = np.array([float(r["psnr"]) for r in rows]).reshape(K, 3)
    for k in range(K):
        assert psnr[k, 0] == pytest.approx(float(summary[str(k)]["psnr"]), abs=1e-3)
    assert not np.allclose(psnr[:, 0], psnr[:, 1])  # each sample draws its own z
    mean, best = psnr.mean(1).mean(), psnr.max(1).mean()
    assert f"mean PSNR {mean:.2f} dB" in printed and f"best of 3 PSNR {best:.2f} dB" in printed


def test_samples_need_the_true_frames(tiny_run, tiny_data, tmp_path, cli, capsys):
    data = _copy_data(tiny_data, tmp_path)
    shutil.rmtree(data / "test" / "test_truth")
    out = tmp_path / "out"
    _fails(cli, capsys, argv_for(tiny_run, data, out, "--set", "test.samples=2"), out,
           "test.samples = 2", "test_truth")


def test_summarise_takes_the_best_sample_by_psnr_with_its_own_ssim():
    from cvae.samples import summarise

    rows = {0: [(20.0, 0.5), (22.0, 0.4), (21.0, 0.9)], 3: [(30.0, 0.8)] * 3}
    s = summarise(rows)
    assert s["test_samples"] == 3
    assert s["test_samples_mean_psnr"] == pytest.approx((21.0 + 30.0) / 2)
    assert s["test_samples_best_psnr"] == pytest.approx((22.0 + 30.0) / 2)
    assert s["test_samples_best_ssim"] == pytest.approx((0.4 + 0.8) / 2)
    assert s["test_samples_spread_psnr"] == pytest.approx((2.0 + 0.0) / 2)


def test_gif_frames_keep_their_colours(tmp_path, monkeypatch):
    """Each frame is quantized to its own palette by fast octree, and every frame of the file
    reads back within a few levels of its RGB frame, a flat frame and a patch included."""
    from cvae.montage import write_gif

    methods = []
    quantize = Image.Image.quantize

    def spy(self, *args, **kwargs):
        methods.append(kwargs.get("method"))
        return quantize(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "quantize", spy)

    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (4, 3, 8, 12), generator=g, dtype=torch.uint8).numpy()
    frames[2] = 40  # a flat frame
    frames[3, :, 2:6, 3:7] = np.array([200, 30, 90], np.uint8)[:, None, None]  # a patch
    path = write_gif(frames, tmp_path / "a.gif", fps=10, scale=1)
    assert methods == [Image.Quantize.FASTOCTREE] * 4
    with Image.open(path) as im:
        assert im.n_frames == 4
        for t in range(4):
            im.seek(t)
            shown = np.asarray(im.convert("RGB")).astype(int)
            assert np.abs(shown - frames[t].transpose(1, 2, 0)).mean() < 4, t
