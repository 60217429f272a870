"""cluster.yaml: passes Ray's own cluster-config validation (offline) and is safe by default."""

from __future__ import annotations

import copy
import re
import shlex
import socket
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection (AWS, a metadata server) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"cluster.yaml validation tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


@pytest.fixture
def prepared(raw, no_network) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = prepare_config(copy.deepcopy(raw))
    validate_config(cfg)
    return cfg


def _commands(lines: list[str]) -> list[list[str]]:
    """Each `ray start ...` invocation in a list of shell lines, as argv lists."""
    starts = []
    for line in lines:
        for part in re.split(r"[;&|]+", line):
            argv = shlex.split(part)
            if argv[:2] == ["ray", "start"]:
                starts.append(argv)
    return starts


def _flag(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
    return None


def test_passes_ray_validation_offline(prepared):
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] in prepared["available_node_types"]


def test_invalid_config_is_rejected(raw, no_network):
    """The validation really checks something: fractional resources are refused."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = copy.deepcopy(raw)
    worker = next(k for k in bad["available_node_types"] if k != bad["head_node_type"])
    bad["available_node_types"][worker]["resources"]["CPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


def test_node_types(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head is a CPU node"
    assert head["resources"].get("CPU", 0) >= 1
    gpu_types = {name: t for name, t in types.items()
                 if name != prepared["head_node_type"] and t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "a GPU worker node type"
    for t in gpu_types.values():
        assert t["min_workers"] == 0, "GPU nodes are added on demand"
        assert 1 <= t["max_workers"] <= prepared["max_workers"]
        assert t["resources"]["CPU"] >= 2, "CPUs beside the GPU for Ray Data"
    for t in types.values():
        assert all(isinstance(v, int) for v in t["resources"].values())


def test_dashboard_bound_to_localhost(prepared):
    head_starts = _commands(prepared["head_start_ray_commands"])
    assert len(head_starts) == 1
    argv = head_starts[0]
    assert "--head" in argv
    assert _flag(argv, "--dashboard-host") == "127.0.0.1"
    assert "0.0.0.0" not in " ".join(prepared["head_start_ray_commands"])
    assert _flag(argv, "--autoscaling-config") == "~/ray_bootstrap_config.yaml"
    worker_starts = _commands(prepared["worker_start_ray_commands"])
    assert len(worker_starts) == 1
    assert _flag(worker_starts[0], "--address") == "$RAY_HEAD_IP:6379"


def test_no_inbound_rule_opens_ray_ports(prepared):
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        for port in (8265, 6379, 10001):
            assert not (low == -1 or low <= port <= high), f"inbound rule opens {port}: {rule}"


def test_setup_installs_the_project(prepared):
    mounts = prepared["file_mounts"]
    remote = next(r for r, local in mounts.items() if local in (".", "./"))
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        lines = " ; ".join(prepared[key])
        assert f"pip install -q -e {remote}" in lines or f"pip install -e {remote}" in lines, key
        assert "ray[default" in lines, "Ray with the dashboard/job server on every node"
    excluded = set(prepared["rsync_exclude"])
    assert {".venv", "data", "runs", "sweeps", ".git"} <= excluded
