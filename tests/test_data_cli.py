"""The cvae-data CLI (cvae.data_cli): info, pack, synth, preview; bad input is one line."""

from __future__ import annotations

import sys
import types

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
    assert "8 train frames in 2 videos, 6 val frames, 2 test sequences" in out
    code, out, _ = run_cli(["preview", str(root), "--out", str(tmp_path / "s.png"),
                            "--frames", "3"], capsys)
    assert code == 0 and calls["contact_sheet"] == {"frames": 3}
