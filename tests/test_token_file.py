"""secure_token_file: the local Ray auth token ends readable by its owner only."""

from __future__ import annotations

import os
import stat

from ray_jobs.common import secure_token_file


def test_world_readable_token_becomes_0600(tmp_path):
    token = tmp_path / "auth_token"
    token.write_text("secret")
    os.chmod(token, 0o644)
    assert secure_token_file(token)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "secret"


def test_missing_file_and_links_are_left_alone(tmp_path):
    assert not secure_token_file(tmp_path / "nothing")
    target = tmp_path / "target"
    target.write_text("x")
    os.chmod(target, 0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    assert not secure_token_file(link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
