"""What the filesystem refuses (a full disk, a read-only folder, a file where a folder goes) is
one `error: <file>: <reason>` line and exit code 2, for every command; nothing half-written stays.
"""

from __future__ import annotations

import errno
import os

import pytest
from conftest import WRITING_COMMANDS, writing_commands

from cvae import storage
from cvae.errors import cli_entry


@pytest.mark.parametrize(("code", "reason"), [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EROFS, "read-only file system"),
    (errno.EACCES, "permission denied (read-only or not yours)"),
    (errno.ENOTDIR, "a file where a folder is needed"),
])
def test_cli_entry_turns_an_os_error_into_one_line_naming_the_file(code, reason, capsys):
    @cli_entry
    def main() -> int:
        raise OSError(code, os.strerror(code), "/runs/a/metrics.csv")

    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: /runs/a/metrics.csv: {reason}\n"


def test_cli_entry_keeps_the_traceback_of_a_programming_error():
    @cli_entry
    def main() -> int:
        raise TypeError("a bug")

    with pytest.raises(TypeError, match="a bug"):
        main()


def test_a_failed_atomic_write_removes_its_temp_file(tmp_path):
    dest = tmp_path / "last.pt"
    dest.write_text("previous")

    def full_disk(path):
        path.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with pytest.raises(OSError), storage.atomic_path(dest) as tmp:
        full_disk(tmp)
    assert dest.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("command", WRITING_COMMANDS)
def test_an_out_that_is_a_file_is_one_line(command, cli, capsys, tmp_path):
    out = tmp_path / "out"
    out.write_text("not a folder")
    main, argv = writing_commands()[command]
    assert cli(main, argv(out)) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out}: exists and is not a folder (choose another --out)\n"


def test_a_read_only_run_folder_is_one_line(tiny_train_argv, cli, capsys, tmp_path, monkeypatch):
    """(Simulated: the tests may run as root, whom chmod does not stop.)"""
    from cvae import train_cli

    real = os.replace

    def read_only(src, dst):
        if str(dst).endswith("config.yaml"):
            raise PermissionError(errno.EROFS, "Read-only file system", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", read_only)
    out = tmp_path / "run"
    assert cli(train_cli.main, tiny_train_argv(out, "--epochs", "1")) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"error: {out / 'config.yaml'}: read-only file system"
    assert not any("Traceback" in line for line in err)
    assert not out.exists()  # nothing was written: the folder the command made is gone
