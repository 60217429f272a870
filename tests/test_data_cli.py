"""The cvae-data CLI (cvae.data_cli): info, pack, synth, preview; bad input is one line."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

from cvae.data_cli import main


def run_cli(argv, capsys):
    """main() always exits (cli_entry): return (code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_cli_info_lab(lab, capsys):
    code, out, _ = run_cli(["info", str(lab)], capsys)
    assert code == 0
    assert "train: 12 frames in 2 videos" in out
    assert "val: 6 frames in 1 videos" in out
    assert "test: 2 sequences" in out


def test_cli_pack_and_info(lab, tmp_path, capsys):
    out_dir = tmp_path / "pack"
    code, out, _ = run_cli(["pack", "--root", str(lab), "--out", str(out_dir), "--clip-len",
                            "2", "--height", "8", "--width", "16", "--quiet"], capsys)
    assert code == 0 and "packed 5 train clips of 2 frames" in out
    code, out, _ = run_cli(["info", str(out_dir)], capsys)
    assert code == 0 and "train: 5 clips of 2 frames, 8x16" in out


@pytest.mark.parametrize("make_bad", ["missing", "no_label", "not_data"])
def test_cli_bad_input_one_line_exit_2(lab, tmp_path, capsys, make_bad):
    if make_bad == "missing":
        argv = ["info", str(tmp_path / "nowhere")]
    elif make_bad == "no_label":
        (lab / "train/train_label/frame2.png").unlink()
        argv = ["pack", "--root", str(lab), "--out", str(tmp_path / "p"), "--quiet"]
    else:
        (tmp_path / "plain").mkdir()
        argv = ["info", str(tmp_path / "plain")]
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "p").exists()


def test_cli_synth_and_preview_call_their_modules(make_lab, tmp_path, capsys, monkeypatch):
    """Stand-ins for cvae.synth / cvae.preview: the CLI passes only the options given."""
    calls = {}

    def generate(out, **kw):
        calls["generate"] = kw
        make_lab(out, train=(4, 4))

    def contact_sheet(root, out, **kw):
        calls["contact_sheet"] = kw
        out.write_bytes(b"png")
        return out

    monkeypatch.setitem(sys.modules, "cvae.synth", types.SimpleNamespace(generate=generate))
    monkeypatch.setitem(sys.modules, "cvae.preview",
                        types.SimpleNamespace(contact_sheet=contact_sheet))
    root = tmp_path / "syn"
    code, out, _ = run_cli(["synth", "--out", str(root), "--seed", "3", "--quiet"], capsys)
    assert code == 0 and calls["generate"] == {"seed": 3, "progress": False}
    assert "8 train frames in 2 videos, 6 val frames in 1 video, 2 test sequences" in out
    code, out, _ = run_cli(["preview", str(root), "--out", str(tmp_path / "s.png"),
                            "--frames", "3"], capsys)
    assert code == 0 and calls["contact_sheet"] == {"frames": 3}


def _stub_generate(monkeypatch, make_lab) -> dict:
    """A stand-in cvae.synth whose generate records its options; returns that record."""
    calls = {}

    def generate(out, **kw):
        calls["generate"] = kw
        make_lab(out, train=(4, 4))

    monkeypatch.setitem(sys.modules, "cvae.synth", types.SimpleNamespace(generate=generate))
    return calls


def test_cli_synth_passes_the_stochastic_level(make_lab, tmp_path, capsys, monkeypatch):
    calls = _stub_generate(monkeypatch, make_lab)
    code, _, _ = run_cli(["synth", "--out", str(tmp_path / "syn"), "--stochastic", "0.25",
                          "--quiet"], capsys)  # fmt: skip
    assert code == 0 and calls["generate"] == {"stochastic": 0.25, "progress": False}


@pytest.mark.parametrize("level", ["1.5", "-0.1", "abc", "nan", ""])
def test_cli_synth_refuses_a_bad_level_in_one_line(make_lab, tmp_path, capsys, monkeypatch,
                                                   level):  # fmt: skip
    calls = _stub_generate(monkeypatch, make_lab)
    code, out, err = run_cli(["synth", "--out", str(tmp_path / "syn"), "--stochastic", level],
                             capsys)  # fmt: skip
    assert code == 2 and out == "" and not calls
    assert err.startswith(f"error: --stochastic {level!r}: must be a number from 0 to 1")
    assert err.count("\n") == 1
    assert not (tmp_path / "syn").exists()


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def test_cli_synth_level_zero_writes_the_default_bytes(tmp_path, capsys):
    tiny = ["--train-videos", "2", "--frames-per-video", "6", "--val-frames", "6",
            "--val-videos", "1", "--test-sequences", "1", "--test-frames", "4", "--height", "32",
            "--width", "64", "--seed", "5", "--quiet"]  # fmt: skip
    for name, extra in (("plain", []), ("zero", ["--stochastic", "0"])):
        code, out, _ = run_cli(["synth", "--out", str(tmp_path / name), *tiny, *extra], capsys)
        assert code == 0 and "stochastic" not in out
    plain, zero = _digests(tmp_path / "plain"), _digests(tmp_path / "zero")
    assert len(plain) == 2 * 6 * 2 + 6 * 2 + 1 + 4 + 4 + 3
    assert zero == plain
    code, out, _ = run_cli(["synth", "--out", str(tmp_path / "one"), *tiny, "--stochastic", "1"],
                           capsys)  # fmt: skip
    assert code == 0 and "stochastic 1: " in out and "manifest.json" in out
    labels = [k for k in plain if "_label" in k]
    assert all(_digests(tmp_path / "one")[k] == plain[k] for k in labels)


def test_stochastic_rates_are_in_the_help_and_the_readme(capsys):
    from cvae.synth_events import RATES

    code, out, _ = run_cli(["synth", "--help"], capsys)
    assert code == 0
    help_text = " ".join(out.split())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    data = readme.split("\n## Data\n", 1)[1].split("\n## ", 1)[0]
    data = " ".join(data.split())
    assert "--stochastic" in help_text and "--stochastic LEVEL" in data
    for rate in RATES.values():
        assert f"{rate:g} x LEVEL" in help_text and f"{rate:g} x LEVEL" in data
