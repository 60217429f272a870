"""Tune search spaces as YAML, loaded and validated without Ray.

A space file maps config keys (`section.key`, as `--set` takes them) to a distribution or a
constant:

    train.kl_anneal_type: {grid: [Monotonic, Cyclical, None]}   # every value, one trial each
    train.kl_anneal_cycle: {choice: [5, 10, 20]}                # one value drawn per trial
    train.kl_anneal_ratio: {uniform: [0.25, 1.0]}               # float in [lo, hi]
    train.lr: {loguniform: [1.0e-4, 3.0e-3]}                    # float, log-uniform in [lo, hi]
    train.tfr_sde: {randint: [2, 15]}                           # int in [lo, hi) (as in Tune)
    train.tfr_d_step: {quniform: [0.05, 0.3, 0.05]}             # float in [lo, hi], step q
    train.epochs: 30                                            # a constant

Constants are defaults for the sweep: the command line (--epochs, --set) overrides them; a searched
key cannot be overridden. Everything is checked here, before Ray starts: unknown keys, unknown
distributions, values of the wrong type and impossible values fail with one line naming the key.
The check draws every value a distribution can give at its edges (each choice, each bound) into a
real `Config` (`set_key` + `validate`).
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import random
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cvae.config import Config, all_keys, read_yaml_file, sections, set_key, validate
from cvae.config_load import field_types
from cvae.errors import ConfigError

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform", "randint", "quniform")
MAX_TRIALS = 10_000  # a sweep's trials: grid combinations x --num-samples

# Keys a sweep must not vary: the data pack is made once for all trials, and each trial's output
# folder is set by the sweep.
FIXED_KEYS = {
    "data.root": "the data is packed once for the whole sweep (use --data)",
    "data.height": "the data pack is shared by every trial (pack once per frame size)",
    "data.width": "the data pack is shared by every trial (pack once per frame size)",
    "data.clip_len": "the data pack is shared by every trial (pack once per clip length)",
    "run.out": "each trial writes to <out>/trials/<trial id> (use --out)",
    "model.preset": "a preset only fills in defaults; search model.* widths instead",
    "test.checkpoint": "the sweep exports its best checkpoint to <out>/best",
}
# ASHA needs one epoch budget for all trials: train.epochs may be a constant, not searched.
NOT_SEARCHABLE = {"train.epochs": "ASHA needs one epoch budget: make it a constant or use --epochs"}


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` as a string; a space means the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Param:
    """One key of a space: `kind` is a distribution name or "constant"."""

    key: str
    kind: str
    args: tuple

    @property
    def searched(self) -> bool:
        return self.kind != "constant"

    def edges(self) -> list[Any]:
        """Every value worth checking: each choice, each bound (randint's upper is exclusive)."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "constant":
            return [self.args[0]]
        lo, hi = self.args[0], self.args[1]
        if self.kind == "randint":
            return [lo, hi - 1]
        if self.kind == "quniform":
            return list(_q_bounds(lo, hi, self.args[2]))
        return [float(lo), float(hi)]

    def draw(self, rng: random.Random) -> Any:
        """One sample, as Tune would draw it (grid values are enumerated by `sample`)."""
        if self.kind in ("choice", "grid"):
            return rng.choice(self.args)
        if self.kind == "constant":
            return self.args[0]
        lo, hi = self.args[0], self.args[1]
        if self.kind == "uniform":
            return rng.uniform(lo, hi)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(lo), math.log(hi)))
        if self.kind == "randint":
            return rng.randrange(lo, hi)
        q = self.args[2]
        qlo, qhi = _q_bounds(lo, hi, q)
        return round(round(rng.uniform(qlo, qhi) / q) * q, 10)

    def describe(self) -> str:
        if self.kind == "constant":
            return repr(self.args[0])
        return f"{self.kind}{list(self.args)}"


def _q_bounds(lo: float, hi: float, q: float) -> tuple[float, float]:
    """The smallest and largest multiples of q inside [lo, hi] (Tune's quniform rounds its
    bounds inwards onto the grid of q)."""
    eps = 1e-9
    return (round(math.ceil(lo / q - eps) * q, 10), round(math.floor(hi / q + eps) * q, 10))


@dataclass
class Space:
    """A validated search space."""

    path: str
    params: dict[str, Param]

    @property
    def searched(self) -> dict[str, Param]:
        return {k: p for k, p in self.params.items() if p.searched}

    @property
    def constants(self) -> dict[str, Any]:
        return {k: p.args[0] for k, p in self.params.items() if not p.searched}

    @property
    def grid_size(self) -> int:
        """The grid's combinations, counted (never enumerated)."""
        return math.prod(len(p.args) for p in self.params.values() if p.kind == "grid")

    def check_trials(self, num_samples: int, bound: int = MAX_TRIALS) -> int:
        """grid combinations x samples, refused above `bound` before anything enumerates it."""
        trials = self.grid_size * num_samples
        if trials > bound:
            raise ConfigError(f"{self.path}: {self.grid_size:,} grid combinations x "
                              f"{num_samples} sample(s) = {trials:,} trials, more than "
                              f"{bound:,}; search fewer grid values (or use choice)")
        return trials

    def sample(self, num_samples: int = 1, seed: int = 0) -> list[dict[str, Any]]:
        """The searched values of each trial, as a Tune run with `num_samples` would make them:
        every grid combination, `num_samples` times, other distributions drawn per trial."""
        rng = random.Random(seed)
        grid = {k: p.args for k, p in self.searched.items() if p.kind == "grid"}
        trials = []
        for _ in range(num_samples):
            for combo in itertools.product(*grid.values()):
                values = dict(zip(grid, combo, strict=True))
                for key, param in self.searched.items():
                    if param.kind != "grid":
                        values[key] = param.draw(rng)
                trials.append({k: values[k] for k in self.searched})
        return trials

    def apply(self, base: Config, values: dict[str, Any]) -> Config:
        """A copy of `base` with one trial's searched values set, validated."""
        cfg = copy.deepcopy(base)
        for key, value in values.items():
            set_key(cfg, key, value, self.path)
        try:
            validate(cfg)
        except ConfigError as err:
            raise ConfigError(f"{self.path}: {err}") from None
        return cfg


def _type_of(key: str) -> Any:
    section, _, name = key.partition(".")
    return field_types(sections(Config())[section])[name]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_param(key: str, value: Any, source: str) -> Param:
    where = f"{source}: {key}"
    if not isinstance(value, dict):
        return Param(key, "constant", (value,))
    if len(value) != 1:
        raise ConfigError(f"{where}: expected one distribution ({', '.join(DISTRIBUTIONS)}) "
                          f"or a constant, got the mapping {value!r}")
    ((kind, args),) = value.items()
    if kind not in DISTRIBUTIONS:
        hint = difflib.get_close_matches(str(kind), DISTRIBUTIONS, n=1)
        more = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(f"{where}: unknown distribution '{kind}'{more}; expected one of "
                          f"{', '.join(DISTRIBUTIONS)}")
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"{where}: cannot be searched: {NOT_SEARCHABLE[key]}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} needs a non-empty list, got {args!r}")
    bad = next((a for a in args if isinstance(a, float) and not math.isfinite(a)), None)
    if bad is not None:
        raise ConfigError(f"{where}: {kind} values must be finite numbers, got {bad} in "
                          f"{args!r}")
    field_type = _type_of(key)
    if kind in ("choice", "grid"):
        return Param(key, kind, tuple(args))
    size = 3 if kind == "quniform" else 2
    shape = "[lo, hi, q]" if kind == "quniform" else "[lo, hi]"
    if len(args) != size:
        raise ConfigError(f"{where}: {kind} takes {shape}, got {args!r}")
    if kind == "randint":
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"{where}: randint takes integers [lo, hi), got {args!r}")
        if field_type not in (int, float):
            raise ConfigError(f"{where}: randint gives integers but {key} is "
                              f"{_type_label(field_type)}")
    else:
        if not all(_is_number(a) for a in args):
            raise ConfigError(f"{where}: {kind} takes numbers {shape}, got {args!r}")
        if field_type is not float:
            raise ConfigError(f"{where}: {kind} gives floats but {key} is "
                              f"{_type_label(field_type)}"
                              + ("; use randint or choice" if field_type is int else ""))
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise ConfigError(f"{where}: {kind} needs lo < hi, got {args!r}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"{where}: loguniform needs lo > 0, got {args!r}")
    if kind == "quniform":
        if args[2] <= 0:
            raise ConfigError(f"{where}: quniform needs q > 0, got {args!r}")
        qlo, qhi = _q_bounds(lo, hi, args[2])
        if qlo > qhi:
            raise ConfigError(f"{where}: quniform {args!r} has no multiple of q between lo "
                              "and hi")
    return Param(key, kind, tuple(args))


def _type_label(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return "a list"
    return {bool: "true/false", int: "an integer", str: "a string"}.get(annotation, "a number")


def parse_space(values: Any, source: str = "space", base: Config | None = None, *,
                check: bool = True) -> Space:
    """Validate a space given as a mapping (what a YAML file holds). `check` also sets every
    edge value into `base` (default: the default config) and validates it."""
    if not isinstance(values, dict) or not values:
        raise ConfigError(f"{source}: a search space must be a non-empty mapping of "
                          "section.key: distribution")
    keys = all_keys()
    params: dict[str, Param] = {}
    for key, value in values.items():
        if not isinstance(key, str) or key not in keys:
            hint = difflib.get_close_matches(str(key), keys, n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"{source}: unknown key '{key}'{more}")
        if key in FIXED_KEYS:
            raise ConfigError(f"{source}: {key}: cannot be set by a search space: "
                              f"{FIXED_KEYS[key]}")
        params[key] = _parse_param(key, value, source)
    space = Space(str(source), params)
    if check:
        check_values(space, base)
    return space


def check_values(space: Space, base: Config | None = None) -> None:
    """Every edge value of every key, set into a real config (others at their first value),
    must pass `set_key` and `validate`."""
    base = copy.deepcopy(base) if base is not None else Config()
    for key, value in space.constants.items():
        _set(base, key, value, space.path)
    first = {k: p.edges()[0] for k, p in space.searched.items()}
    for key, param in space.searched.items():
        for value in param.edges():
            cfg = copy.deepcopy(base)
            for other, other_value in first.items():
                if other != key:
                    _set(cfg, other, other_value, space.path)
            _set(cfg, key, value, space.path)
            _validate(cfg, space.path)
    _validate(base, space.path)


def _set(cfg: Config, key: str, value: Any, source: str) -> None:
    set_key(cfg, key, value, source)  # ConfigError: "<source>: key = value: expected ..."


def _validate(cfg: Config, source: str) -> None:
    try:
        validate(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def load_space(path: str | Path, base: Config | None = None, *, check: bool = True) -> Space:
    """Read and validate a space file; every problem is one ConfigError naming the key."""
    path = Path(path)
    values = read_yaml_file(path, "search space", loader=_Loader)
    return parse_space(values, str(path), base, check=check)


__all__ = ["DISTRIBUTIONS", "FIXED_KEYS", "Param", "Space", "check_values", "load_space",
           "parse_space"]
