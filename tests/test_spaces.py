"""Search spaces: every shipped space samples to valid configs; bad spaces fail before Ray,
with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvae.config import Config, set_key, validate
from cvae.errors import ConfigError
from cvae.spaces import load_space, parse_space

SPACES = sorted((Path(__file__).resolve().parent.parent / "tune_spaces").glob("*.yaml"))


def test_the_three_spaces_are_shipped():
    assert {p.name for p in SPACES} >= {"kl_tfr.yaml", "kl_strategies.yaml", "smoke.yaml"}


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_samples_to_valid_configs(path):
    space = load_space(path)
    trials = space.sample(num_samples=20, seed=3)
    assert len(trials) == 20 * space.grid_size
    for values in trials:
        cfg = Config()
        for key, value in {**space.constants, **values}.items():
            set_key(cfg, key, value, path.name)
        validate(cfg)
        for key, value in values.items():  # the draw lands in the config, in its domain
            section, _, name = key.partition(".")
            assert getattr(getattr(cfg, section), name) == value
    # Every edge of every distribution is drawable and valid (the loader checked them too).
    for key, param in space.searched.items():
        for value in param.edges():
            space.apply(Config(), {**{k: p.edges()[0] for k, p in space.searched.items()},
                                   key: value})


def test_kl_spaces_cover_what_the_spec_searches():
    kl_tfr = load_space(SPACES[0].parent / "kl_tfr.yaml")
    assert set(kl_tfr.searched) >= {"train.kl_anneal_type", "train.kl_anneal_cycle",
                                    "train.kl_anneal_ratio", "train.tfr_sde", "train.tfr_d_step"}
    assert set(kl_tfr.searched["train.kl_anneal_type"].args) == {"Monotonic", "Cyclical", "None"}
    strategies = load_space(SPACES[0].parent / "kl_strategies.yaml")
    assert list(strategies.searched) == ["train.kl_anneal_type"]  # everything else fixed
    assert strategies.searched["train.kl_anneal_type"].kind == "grid"
    assert [t["train.kl_anneal_type"] for t in strategies.sample()] == [
        "Monotonic", "Cyclical", "None"]
    smoke = load_space(SPACES[0].parent / "smoke.yaml")
    assert smoke.grid_size == 4


def test_draws_stay_in_their_domain():
    space = parse_space({
        "train.lr": {"loguniform": [1e-4, 1e-2]},
        "train.tfr_sde": {"randint": [2, 5]},
        "train.kl_anneal_ratio": {"quniform": [0.1, 0.9, 0.25]},
        "train.tfr_d_step": {"uniform": [0.05, 0.3]},
        "train.kl_anneal_cycle": {"choice": [5, 10]},
    })
    draws = space.sample(num_samples=200, seed=0)
    assert all(1e-4 <= d["train.lr"] <= 1e-2 for d in draws)
    assert {d["train.tfr_sde"] for d in draws} == {2, 3, 4}  # upper bound excluded, as in Tune
    assert {d["train.kl_anneal_ratio"] for d in draws} <= {0.25, 0.5, 0.75}
    assert all(0.05 <= d["train.tfr_d_step"] <= 0.3 for d in draws)
    assert {d["train.kl_anneal_cycle"] for d in draws} == {5, 10}


def test_yaml_exponents_are_numbers(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text("train.lr: {loguniform: [1e-4, 3e-3]}\n")  # plain YAML reads 1e-4 as text
    assert load_space(file).searched["train.lr"].args == (1e-4, 3e-3)


BAD = [
    # (space, the key the message must name, a fragment of the reason)
    ({"train.kl_anneal_typo": {"choice": ["Monotonic"]}}, "train.kl_anneal_typo",
     "did you mean 'train.kl_anneal_type'"),
    ({"kl_anneal_type": {"choice": ["Monotonic"]}}, "kl_anneal_type", "unknown key"),
    ({"train.lr": {"normal": [0.0, 1.0]}}, "train.lr", "unknown distribution 'normal'"),
    ({"train.lr": {"uniform": [0.001, 0.01], "choice": [1]}}, "train.lr", "one distribution"),
    ({"train.lr": {"uniform": ["a", 0.01]}}, "train.lr", "takes numbers"),
    ({"train.lr": {"uniform": [0.01]}}, "train.lr", "[lo, hi]"),
    ({"train.lr": {"uniform": [0.01, 0.001]}}, "train.lr", "lo < hi"),
    ({"train.lr": {"loguniform": [0.0, 0.01]}}, "train.lr", "lo > 0"),
    ({"train.lr": {"choice": [0.001, "fast"]}}, "train.lr", "expected a number"),
    ({"train.lr": {"choice": []}}, "train.lr", "non-empty list"),
    ({"train.lr": -0.1}, "train.lr", "must be > 0"),
    ({"train.tfr_sde": {"uniform": [1.0, 5.0]}}, "train.tfr_sde", "use randint"),
    ({"train.tfr_sde": {"randint": [1.5, 5]}}, "train.tfr_sde", "integers"),
    ({"train.kl_anneal_type": {"randint": [0, 3]}}, "train.kl_anneal_type", "is a string"),
    ({"train.kl_anneal_type": {"grid": ["Monotonic", "Linear"]}}, "train.kl_anneal_type",
     "must be one of"),
    ({"train.kl_anneal_ratio": {"uniform": [0.5, 1.5]}}, "train.kl_anneal_ratio",
     "must be in [0, 1]"),
    ({"train.kl_anneal_ratio": {"quniform": [0.1, 0.2, 0.5]}}, "train.kl_anneal_ratio",
     "no multiple of q"),
    ({"train.kl_anneal_cycle": {"choice": [10, 0]}}, "train.kl_anneal_cycle", "must be >= 1"),
    ({"train.tfr_d_step": {"grid": [0.1, True]}}, "train.tfr_d_step", "expected a number"),
    ({"train.epochs": {"choice": [2, 4]}}, "train.epochs", "cannot be searched"),
    ({"data.clip_len": 8}, "data.clip_len", "data pack"),
    ({"run.out": "elsewhere"}, "run.out", "cannot be set"),
]


@pytest.mark.parametrize("values,key,why", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_space_is_rejected_naming_the_key(values, key, why):
    with pytest.raises(ConfigError) as info:
        parse_space(values, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad.yaml: ")
    assert key in message and why in message


@pytest.mark.parametrize("text,why", [
    ("[1, 2]\n", "non-empty mapping"),
    ("train.lr: [0.1\n", "not valid YAML"),
    ("", "non-empty mapping"),
])
def test_bad_space_file(tmp_path, text, why):
    file = tmp_path / "space.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match="space.yaml") as info:
        load_space(file)
    assert why in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")


def test_bad_space_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    """The tune entrypoint checks the space before it connects to (or starts) Ray."""
    from ray_jobs import common, tune

    def no_ray(*_a, **_k):
        raise AssertionError("Ray must not start for a bad space")

    monkeypatch.setattr(common, "connect", no_ray)
    monkeypatch.setattr(common, "prepare_data", no_ray)
    space = tmp_path / "bad.yaml"
    space.write_text("train.kl_anneal_ratio: {uniform: [0.5, 2.0]}\n")
    with pytest.raises(SystemExit) as info:
        tune.main(["--space", str(space), "--out", str(tmp_path / "sweep")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.kl_anneal_ratio" in err
    # A key set on the command line that the space also searches is ambiguous.
    space.write_text("train.lr: {choice: [0.001, 0.002]}\n")
    with pytest.raises(SystemExit):
        tune.main(["--space", str(space), "--out", str(tmp_path / "sweep"),
                   "--set", "train.lr=0.01"])
    assert "--set train.lr" in capsys.readouterr().err
    # The command line overrides a space's constants, and the result is checked as a whole.
    space.write_text("train.lr: {choice: [0.001, 0.002]}\ntrain.epochs: 5\n")
    with pytest.raises(SystemExit):
        tune.main(["--space", str(space), "--out", str(tmp_path / "sweep"), "--epochs", "3",
                   "--grace-period", "4"])
    assert "--grace-period 4" in capsys.readouterr().err


def test_dry_run_lists_the_trials_without_ray(tmp_path, capsys, monkeypatch):
    from ray_jobs import common, tune

    def no_ray(*_a, **_k):
        raise AssertionError("--dry-run must not start Ray")

    monkeypatch.setattr(common, "connect", no_ray)
    monkeypatch.setattr(common, "prepare_data", no_ray)
    with pytest.raises(SystemExit) as info:
        tune.main(["--space", "tune_spaces/smoke.yaml", "--out", str(tmp_path / "s"),
                   "--epochs", "3", "--dry-run"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "4 trials" in out and "epochs: 3" in out  # --epochs overrides the space's constant
    assert not (tmp_path / "s").exists()
