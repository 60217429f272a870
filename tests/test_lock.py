"""One writer per output folder (cvae.lock): a second writing command fails at once, naming the
folder and the holder; a crashed holder leaves nothing to clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import WRITING_COMMANDS, writing_commands

from cvae.lock import HOLDER_FILE, LOCK_FILE, lock_folder

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\nfrom cvae.lock import lock_folder\n"
        "with lock_folder(sys.argv[1]):\n    print('held', flush=True)\n    sys.stdin.read()\n")


@pytest.fixture
def holder():
    """hold(folder): a child process holding folder's lock until the test ends (or kills it)."""
    children = []

    def hold(folder: Path) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=ROOT,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        children.append(child)
        assert child.stdout.readline().strip() == "held"
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait()


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_a_second_writer_fails_at_once_naming_the_folder_and_the_holder(
        command, holder, cli, capsys, tmp_path):
    out = tmp_path / "run"
    child = holder(out)
    main, argv = writing_commands()[command]
    assert cli(main, argv(out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert str(out) in err and f"pid {child.pid}" in err and "another command" in err


def test_the_lock_is_free_again_when_the_holder_crashes(holder, tmp_path):
    out = tmp_path / "run"
    child = holder(out)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with lock_folder(out):  # the OS released the crashed holder's lock
        assert (out / HOLDER_FILE).is_file()


def test_a_folder_the_lock_made_and_nothing_filled_is_removed(tmp_path):
    with lock_folder(tmp_path / "new") as folder:
        assert (folder / LOCK_FILE).exists()
    assert not (tmp_path / "new").exists()
    with lock_folder(tmp_path / "kept") as folder:
        (folder / "metrics.csv").write_text("epoch\n")
    assert (tmp_path / "kept" / "metrics.csv").is_file()
    assert not (tmp_path / "kept" / HOLDER_FILE).exists()


def test_an_out_that_is_a_file_is_one_error(tmp_path):
    from cvae.errors import CvaeError

    (tmp_path / "f").write_text("x")
    with pytest.raises(CvaeError, match="exists and is not a folder"), lock_folder(tmp_path / "f"):
        pass
