"""cluster.yaml: passes Ray's own cluster-config validation (offline) and is safe by default:
token auth on every node, SSH from one CIDR, the dashboard on localhost. Its nodes run the image
built from ./Dockerfile (on Ray's pinned 2.60 image), which holds every dependency of
pyproject.toml, so that no node installs anything at boot."""

from __future__ import annotations

import copy
import posixpath
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
README = ROOT / "README.md"

# The base of the nodes' image: Ray's own, pinned (Ray on the nodes must be the Ray that submits).
BASE_IMAGE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py311-(gpu|cu\d+)")

# This project's dependencies that the base image already holds: Ray itself (the image has
# `ray[all]`, which includes the default, train, tune and data extras) and packages `ray[all]`
# requires (test_base_image_packages_come_with_ray checks each against Ray's own metadata). Only
# names pyproject.toml lists; any other dependency must be installed by the Dockerfile.
BASE_IMAGE_PACKAGES = frozenset({"ray", "filelock", "numpy", "pyarrow", "pyyaml", "tensorboardx"})


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


# ---- the nodes' image: every dependency on every node, nothing installed at boot ----

def dockerfile(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments): continued lines joined and comment lines dropped
    (Docker drops them inside a continued instruction too), ${ARG} defaults substituted."""
    logical, current = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1]
            continue
        current += line
        if current.strip():
            logical.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    instructions = []
    for line in logical:
        word, _, rest = line.partition(" ")
        rest = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), rest.strip())
        if word.upper() == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value.strip('"')
        instructions.append((word.upper(), rest))
    return instructions


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell line (split at ;, &&, ||, |), each as its argv without
    leading VAR=value assignments or sudo."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    out = []
    for argv in commands:
        while argv and (re.fullmatch(r"[A-Za-z_]\w*=.*", argv[0]) or argv[0] == "sudo"):
            argv = argv[1:]
        if argv:
            out.append(argv)
    return out


# pip install options that take a value (the value is not a package to install), short names
# mapped to long ones.
PIP_SHORT_OPTIONS = {"-c": "--constraint", "-r": "--requirement", "-e": "--editable",
                     "-i": "--index-url", "-f": "--find-links", "-t": "--target"}
PIP_LONG_VALUE_OPTIONS = {*PIP_SHORT_OPTIONS.values(), "--extra-index-url", "--prefix", "--root",
                          "--upgrade-strategy", "--platform", "--python-version", "--src",
                          "--config-settings", "--no-binary", "--only-binary", "--trusted-host",
                          "--cache-dir", "--log", "--proxy", "--timeout", "--retries", "--cert"}


@dataclass
class PipInstall:
    """One `pip install`: what it installs (requirements and folders, as given, editable ones
    included) and its options (long names; a flag has no values)."""

    targets: list[str] = field(default_factory=list)
    options: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> set[str]:
        """The packages it names (not folders)."""
        return {canonicalize_name(Requirement(t).name) for t in self.targets if not _is_path(t)}


def _is_path(target: str) -> bool:
    return target.startswith(("/", ".", "~", "$"))


def pip_installs(script: str) -> list[PipInstall]:
    """The `pip install` / `python -m pip install` commands of a shell line."""
    installs = []
    for argv in shell_commands(script):
        if posixpath.basename(argv[0]) in ("pip", "pip3") and argv[1:2] == ["install"]:
            rest = argv[2:]
        elif re.fullmatch(r"python[\d.]*", posixpath.basename(argv[0])) and argv[1:4] == [
                "-m", "pip", "install"]:
            rest = argv[4:]
        else:
            continue
        install, i = PipInstall(), 0
        while i < len(rest):
            arg = rest[i]
            if arg.startswith("-"):
                name, eq, value = arg.partition("=")
                name = PIP_SHORT_OPTIONS.get(name, name)
                values = install.options.setdefault(name, [])
                if name in PIP_LONG_VALUE_OPTIONS:
                    if not eq:
                        i += 1
                        value = rest[i]
                    values.append(value)
                    if name == "--editable":
                        install.targets.append(value)
            else:
                install.targets.append(arg)
            i += 1
        installs.append(install)
    return installs


def image_steps(text: str) -> tuple[str, list[tuple[str, object]]]:
    """A Dockerfile's base image and, in order, its copies of the whole build context (the
    checkout: pyproject.toml and the packages) as ("copy", destination) and its pip installs as
    ("pip", PipInstall), folders made absolute."""
    base, steps, workdir, no_deps_env = "", [], "/", False
    for word, rest in dockerfile(text):
        if word == "FROM":
            base = rest.split()[0]
        elif word == "ENV":
            no_deps_env = no_deps_env or "PIP_NO_DEPS" in rest
        elif word == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif word in ("COPY", "ADD"):
            *sources, dest = [p for p in shlex.split(rest) if not p.startswith("--")]
            if [posixpath.normpath(s) for s in sources] == ["."]:
                steps.append(("copy", posixpath.normpath(posixpath.join(workdir, dest))))
        elif word == "RUN":
            for install in pip_installs(rest):
                install.targets = [posixpath.normpath(posixpath.join(workdir, t))
                                   if t.startswith(".") else t for t in install.targets]
                if no_deps_env or "PIP_NO_DEPS" in rest:  # pip's --no-deps as a variable
                    install.options.setdefault("--no-deps", [])
                steps.append(("pip", install))
    return base, steps


def installs_the_project(steps: list[tuple[str, object]]) -> bool:
    """Whether the image pip-installs a copy of the whole checkout WITH its dependencies, which
    installs every dependency pyproject.toml lists."""
    copied: set[str] = set()
    for kind, what in steps:
        if kind == "copy":
            copied.add(what)
        elif "--no-deps" not in what.options and copied & set(what.targets):
            return True
    return False


def project_dependencies() -> list[str]:
    """pyproject.toml's [project] dependencies (tomllib: Python 3.11, the image's Python)."""
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]


def unreached(dependencies: list[str], dockerfile_text: str, head_setup: list[str],
              worker_setup: list[str]) -> list[str]:
    """The dependencies (pyproject.toml's requirement strings) that some node lacks: not
    installed with the project by the image, nor named by one of the image's installs, nor held
    by the base image, nor installed by the setup commands of the head AND of the workers (the
    driver runs on the head, the training ranks on workers)."""
    _, steps = image_steps(dockerfile_text)
    if installs_the_project(steps):
        return []
    have = set(BASE_IMAGE_PACKAGES)
    for kind, what in steps:
        if kind == "pip":
            have |= what.names()

    def setup_names(lines: list[str]) -> set[str]:
        return {name for line in lines for install in pip_installs(line)
                for name in install.names()}

    have |= setup_names(head_setup) & setup_names(worker_setup)
    return [dep for dep in dependencies if canonicalize_name(Requirement(dep).name) not in have]


def test_every_dependency_reaches_every_node(prepared):
    dependencies = project_dependencies()
    assert {"torchmetrics", "optuna"} <= {canonicalize_name(Requirement(d).name)
                                          for d in dependencies}
    assert unreached(dependencies, DOCKERFILE.read_text(), prepared["head_setup_commands"],
                     prepared["worker_setup_commands"]) == []
    _, steps = image_steps(DOCKERFILE.read_text())
    assert installs_the_project(steps), "the image installs the project with its dependencies"


def test_a_dependency_that_reaches_no_node_is_named(prepared):
    """The checker is not blind: a new dependency in pyproject.toml that nothing installs is
    found, and an install of the project only counts when it really brings the dependencies."""
    head, worker = prepared["head_setup_commands"], prepared["worker_setup_commands"]
    new = [*project_dependencies(), "cvae-new-dependency>=1"]
    # The Dockerfile as it is: the project's install brings the new dependency along.
    assert unreached(new, DOCKERFILE.read_text(), head, worker) == []

    base = "FROM rayproject/ray:2.60.0-py311-gpu\n"
    torch = "RUN pip install torch==2.14.1 torchvision==0.29.1\n"
    for name, text in {
        "--no-deps": f"{base}{torch}COPY . /app\nRUN pip install --no-deps /app\n",
        "another folder": f"{base}{torch}COPY . /app\nRUN pip install /elsewhere\n",
        "installed before the copy": f"{base}{torch}RUN pip install /app\nCOPY . /app\n",
        "pyproject.toml alone": f"{base}{torch}COPY pyproject.toml /app/\nRUN pip install /app\n",
        "editable, --no-deps": f"{base}{torch}COPY . /app\nRUN pip install --no-deps -e /app\n",
        "PIP_NO_DEPS": f"{base}{torch}ENV PIP_NO_DEPS=1\nCOPY . /app\nRUN pip install /app\n",
    }.items():
        missing = {canonicalize_name(Requirement(d).name) for d in unreached(new, text, head,
                                                                              worker)}
        # What neither the base image nor an install names is missing; the rest is there.
        assert {"cvae-new-dependency", "torchmetrics", "optuna", "tqdm"} <= missing, name
        assert not {"torch", "torchvision", "ray", "numpy", "pyarrow"} & missing, name

    # The same install from the image's working directory counts; with --no-deps it does not.
    workdir = f"{base}WORKDIR /app\nCOPY . .\nRUN pip install -q -c pins.txt .\n"
    assert unreached(new, workdir, head, worker) == []
    assert "cvae-new-dependency>=1" in unreached(
        new, workdir.replace("-q", "-q --no-deps"), head, worker)

    # A setup command reaches the nodes only when it runs on the head AND on the workers.
    no_deps = f"{base}{torch}COPY . /app\nRUN pip install --no-deps /app\n"
    line = "pip install -q cvae-new-dependency==1.0"
    assert "cvae-new-dependency>=1" not in unreached(new, no_deps, [*head, line], [*worker, line])
    assert "cvae-new-dependency>=1" in unreached(new, no_deps, [*head, line], worker)


def test_boot_installs_around_a_no_deps_project_leave_dependencies_out():
    """Ray's image alone, with torch and a few packages installed at boot and the project
    installed with --no-deps: torchmetrics (validation) and optuna (--search optuna) are on no
    node, and the checker says so."""
    setup = ["chmod 600 ~/.ray/auth_token",
             "pip install -q torch==2.14.1 torchvision==0.29.1 matplotlib==3.11.2 tqdm==4.70.1",
             "pip install -q --no-deps -e ~/cvae-ray"]
    missing = {canonicalize_name(Requirement(d).name) for d in unreached(
        project_dependencies(), "FROM rayproject/ray:2.60.0-py311-gpu\n", setup, setup)}
    assert {"torchmetrics", "optuna"} <= missing
    assert not {"torch", "tqdm", "ray", "pyyaml"} & missing


def test_base_image_packages_come_with_ray():
    """Every name in BASE_IMAGE_PACKAGES is a requirement of `ray[all]` (the installed Ray's own
    metadata: the client's Ray is the image's), and pyproject's Ray requirement, extras included,
    is met by the base image's Ray."""
    from importlib.metadata import requires, version

    def ray_requires(extra: str) -> set[str]:
        return {canonicalize_name(req.name) for req in map(Requirement, requires("ray"))
                if req.marker is None or req.marker.evaluate({"extra": extra})}

    base, _ = image_steps(DOCKERFILE.read_text())
    match = BASE_IMAGE.fullmatch(base)
    assert match, f"the image's base is Ray's pinned image: {base}"
    assert version("ray") == match["ray"], "the client's Ray is the image's Ray"
    in_all = ray_requires("all")
    assert BASE_IMAGE_PACKAGES - {"ray"} <= in_all
    ray_dep = next(Requirement(d) for d in project_dependencies()
                   if canonicalize_name(Requirement(d).name) == "ray")
    assert ray_dep.specifier.contains(match["ray"])
    for extra in ray_dep.extras:
        assert ray_requires(extra) <= in_all, f"ray[all] holds ray[{extra}]"


def test_nodes_run_the_image_the_dockerfile_builds(prepared):
    docker = prepared["docker"]
    images = {docker["image"], docker.get("head_image", docker["image"]),
              docker.get("worker_image", docker["image"])}
    assert len(images) == 1, "one image on every node"
    image = images.pop()
    match = re.fullmatch(r"(?P<repo>\S+/cvae-ray):(?P<tag>\w[\w.-]*)", image)
    assert match, f"a pinned tag of the project's image in a registry: {image}"
    base, _ = image_steps(DOCKERFILE.read_text())
    ray_version = BASE_IMAGE.fullmatch(base)["ray"]
    assert match["tag"] != "latest" and match["tag"].endswith(f"-ray{ray_version}"), (
        "the tag names the Ray it is built on: another Ray is another image")
    import ray

    assert ray.__version__ == ray_version, "the client's Ray is the image's Ray"
    readme = README.read_text()
    assert f"docker build -t {image} ." in readme, "README builds the image cluster.yaml names"
    assert f"docker push {image}" in readme


def _installs_something(argv: list[str]) -> bool:
    name = posixpath.basename(argv[0])
    return (name in ("pip", "pip3", "conda", "mamba", "apt", "apt-get", "yum", "dnf")
            and "install" in argv[1:2]) or argv[1:4] == ["-m", "pip", "install"] or (
        name == "uv" and argv[1:3] == ["pip", "install"])


def test_nothing_is_installed_at_boot(prepared):
    """The image holds everything: no boot command installs a package, and the checkout is not
    copied onto the nodes (each job brings its code with `--working-dir`)."""
    boot = (prepared.get("initialization_commands", []) + prepared["head_setup_commands"]
            + prepared["worker_setup_commands"] + prepared["head_start_ray_commands"]
            + prepared["worker_start_ray_commands"])
    for line in boot:
        for argv in shell_commands(line):
            assert not _installs_something(argv), f"installs at boot: {line}"
    assert _installs_something(shell_commands("sudo apt-get install -y rsync")[0])  # it can fail
    assert _installs_something(shell_commands("pip install -q --no-deps -e ~/cvae-ray")[0])
    local = {str(v).rstrip("/") for v in prepared["file_mounts"].values()}
    assert not local & {".", ""}, "no copy of the checkout on the nodes"


def test_image_layers_torch_then_dependencies_then_source():
    """Cache-friendly order: the pinned CUDA torch first, then the dependencies, then the
    source; every install after torch keeps the image's Ray and that torch (a constraint)."""
    _, steps = image_steps(DOCKERFILE.read_text())
    installs = [(i, what) for i, (kind, what) in enumerate(steps) if kind == "pip"]
    copy_at = next(i for i, (kind, _) in enumerate(steps) if kind == "copy")
    torch_at, torch = next((i, w) for i, w in installs if "torch" in w.names())
    assert {"torch", "torchvision"} <= torch.names()
    assert all("==" in t for t in torch.targets), f"pinned: {torch.targets}"
    assert torch.options["--index-url"][0].startswith("https://download.pytorch.org/whl/cu"), (
        "a CUDA build from PyTorch's index")
    assert torch_at < copy_at, "torch before the source"
    assert any(torch_at < i < copy_at and "--requirement" in w.options for i, w in installs), (
        "the dependencies before the source")
    for i, what in installs:
        assert "ray" not in what.names(), "Ray comes from the base image"
        if i > torch_at:
            assert what.options.get("--constraint"), f"keeps Ray and torch: {what}"


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's patterns leave `path` out of the build context (a pattern that
    matches a folder leaves out all in it; the last matching pattern wins; `!` keeps)."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        keep = pattern.startswith("!")
        glob = pattern.lstrip("!").strip("/")
        regex = "".join("(.*/)?" if tok == "**/" else ".*" if tok == "**" else "[^/]*"
                        if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
                        for tok in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", glob))
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not keep
    return ignored


def test_dockerignore_keeps_the_project_and_leaves_data_out():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.strip().startswith("#")]
    for path in ("pyproject.toml", "README.md", "cvae/__init__.py", "ray_jobs/__init__.py",
                 "config/train.yaml"):
        assert (ROOT / path).exists() and not _docker_ignored(path, patterns), path
    for path in ("data/dance/train/x.png", "runs/a/metrics.csv", ".venv/bin/python", ".git/HEAD",
                 "cvae/__pycache__/model.pyc", "sweeps/s/sweep.json", "best.pt"):
        assert _docker_ignored(path, patterns), path


def _gpu_training_job(lines: list[str]) -> list[str]:
    """The first `ray job submit ... ray_jobs.train ... --use-gpu` command in `lines` (continued
    with trailing backslashes), as argv."""
    for start, line in enumerate(lines):
        if not line.startswith("ray job submit"):
            continue
        command = []
        for part in lines[start:]:
            command.append(part.rstrip("\\").strip())
            if not part.rstrip().endswith("\\"):
                break
        argv = shlex.split(" ".join(command))
        if "ray_jobs.train" in argv and "--use-gpu" in argv:
            return argv
    raise AssertionError("no GPU training job")


def test_cluster_yaml_and_readme_give_the_same_s3_job():
    """The example job in cluster.yaml's header is the README's: data and run storage in the
    bucket (which every node reaches), --out a folder on the head."""
    header = [line.lstrip("#").strip() for line in CLUSTER_YAML.read_text().splitlines()
              if line.startswith("#")]
    readme = [line.strip() for line in README.read_text().splitlines()]
    job = _gpu_training_job(header)
    assert job == _gpu_training_job(readme)
    entry = job[job.index("--") + 1:]
    assert entry[:3] == ["python", "-m", "ray_jobs.train"]
    assert _flag(entry, "--data").startswith("s3://")
    assert _flag(entry, "--storage-path").startswith("s3://")
    assert _flag(entry, "--out").startswith("/") and "/mnt/" not in _flag(entry, "--out")
