"""cluster.yaml: passes Ray's own cluster-config validation (offline) and is safe by default:
token auth on every node, SSH from one CIDR, the dashboard on localhost, a pinned Ray 2.60 image."""

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


def _commands(lines: list[str]) -> list[tuple[dict, list[str]]]:
    """Each `ray start ...` invocation in a list of shell lines: (env assignments, argv)."""
    starts = []
    for line in lines:
        for part in re.split(r"[;&|]+", line):
            argv = shlex.split(part)
            env = {}
            while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
                key, value = argv.pop(0).split("=", 1)
                env[key] = value
            if argv[:2] == ["ray", "start"]:
                starts.append((env, argv))
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
    gpus = sorted(t["resources"]["GPU"] for t in gpu_types.values())
    assert gpus[0] == 1, "a single-GPU worker type"
    assert gpus[-1] >= 4, "a multi-GPU worker type"
    for t in gpu_types.values():
        assert t["min_workers"] == 0, "GPU nodes are added on demand"
        assert 1 <= t["max_workers"] <= prepared["max_workers"]
        assert t["resources"]["CPU"] >= 2, "CPUs beside the GPU for Ray Data"
    for t in types.values():
        assert all(isinstance(v, int) for v in t["resources"].values())


def test_dashboard_bound_to_localhost(prepared):
    head_starts = _commands(prepared["head_start_ray_commands"])
    assert len(head_starts) == 1
    _, argv = head_starts[0]
    assert "--head" in argv
    assert _flag(argv, "--dashboard-host") == "127.0.0.1"
    assert "0.0.0.0" not in " ".join(prepared["head_start_ray_commands"])
    assert _flag(argv, "--autoscaling-config") == "~/ray_bootstrap_config.yaml"
    worker_starts = _commands(prepared["worker_start_ray_commands"])
    assert len(worker_starts) == 1
    assert _flag(worker_starts[0][1], "--address") == "$RAY_HEAD_IP:6379"


def test_no_inbound_rule_opens_ray_ports(prepared):
    rules = prepared["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
        for port in (8265, 6379, 10001):
            assert not (low == -1 or low <= port <= high), f"inbound rule opens {port}: {rule}"


def test_ssh_only_from_the_configured_cidr(prepared):
    """One SSH rule, from one CIDR that is not the whole internet, and no node type brings its
    own group (which would bypass the one created from these rules)."""
    from ray_jobs.cluster_sg import ingress_rules

    sg = prepared["provider"]["security_group"]
    rules = ingress_rules(prepared)
    assert sg["GroupName"]
    ssh = [r for r in rules if r["FromPort"] <= 22 <= r["ToPort"]]
    assert len(ssh) == 1 and ssh[0]["IpProtocol"] == "tcp"
    cidrs = [r["CidrIp"] for r in ssh[0]["IpRanges"]]
    assert len(cidrs) == 1 and cidrs[0] not in ("0.0.0.0/0", "::/0")
    assert not ssh[0].get("Ipv6Ranges")
    for t in prepared["available_node_types"].values():
        assert "SecurityGroupIds" not in t["node_config"]


def test_group_helper_refuses_a_world_open_rule(raw):
    from ray_jobs.cluster_sg import ingress_rules

    bad = copy.deepcopy(raw)
    bad["provider"]["security_group"]["IpPermissions"][0]["IpRanges"] = [{"CidrIp": "0.0.0.0/0"}]
    with pytest.raises(ValueError, match="open to the world"):
        ingress_rules(bad)
    bad["provider"]["security_group"]["IpPermissions"] = []
    with pytest.raises(ValueError, match="empty"):
        ingress_rules(bad)


def test_token_auth_on_every_node(prepared):
    """RAY_AUTH_MODE=token for head and workers (start commands and the container's
    environment) and the same token file, 0600, on every node."""
    starts = (_commands(prepared["head_start_ray_commands"])
              + _commands(prepared["worker_start_ray_commands"]))
    assert len(starts) == 2
    for env, _ in starts:
        assert env.get("RAY_AUTH_MODE") == "token"
    docker = prepared["docker"]
    for key in ("head_run_options", "worker_run_options"):
        options = " ".join(docker.get("run_options", []) + docker.get(key, []))
        assert re.search(r"(-e|--env)[ =]RAY_AUTH_MODE=token\b", options), key
    mounts = prepared["file_mounts"]
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        assert "chmod 600 ~/.ray/auth_token" in prepared[key], key
    assert not any("RAY_AUTH_TOKEN=" in line for line in
                   prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]), (
        "the token stays in the 0600 file, not on a command line")


def test_image_pinned_to_ray_2_60(prepared):
    docker = prepared["docker"]
    images = [docker["image"], docker.get("head_image", docker["image"]),
              docker.get("worker_image", docker["image"])]
    for image in images:
        assert re.fullmatch(r"rayproject/ray(-ml)?:2\.60\.0-py311-(gpu|cu\d+)", image), image
    import ray

    assert ray.__version__ == "2.60.0", "the client's Ray is the image's Ray"


def test_instance_profile_on_every_node_type(prepared):
    for name, t in prepared["available_node_types"].items():
        profile = t["node_config"].get("IamInstanceProfile", {})
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+",
                            profile.get("Arn", "")), name


def test_reaches_eight_gpus(prepared):
    """The most GPUs the autoscaler can reach under the per-type and global node limits."""
    types = [t for name, t in prepared["available_node_types"].items()
             if name != prepared["head_node_type"]]
    left, gpus = prepared["max_workers"], 0
    for t in sorted(types, key=lambda t: -t["resources"].get("GPU", 0)):
        n = min(t["max_workers"], left)
        gpus += n * t["resources"].get("GPU", 0)
        left -= n
    assert gpus >= 8


def test_setup_installs_the_project(prepared):
    mounts = prepared["file_mounts"]
    remote = next(r for r, local in mounts.items() if local in (".", "./"))
    for key in ("head_setup_commands", "worker_setup_commands"):  # setup_commands merged in
        lines = prepared[key]
        installs = [shlex.split(line) for line in lines if line.startswith("pip install")]
        project = [argv for argv in installs if remote in argv]
        assert len(project) == 1, key
        assert "--no-deps" in project[0] and "-e" in project[0], (
            "the project alone: its dependencies would let pip replace the image's Ray")
        for argv in installs:
            packages = [a for a in argv[2:] if not a.startswith("-") and a != remote]
            assert not any(re.match(r"ray\b", p) for p in packages), "Ray comes from the image"
            if argv not in project and key == "worker_setup_commands":
                assert all("==" in p for p in packages), f"pinned versions: {argv}"
    excluded = set(prepared["rsync_exclude"])
    assert {".venv", "data", "runs", "sweeps", ".git"} <= excluded
