"""The sweep's searcher: which configurations its trials train, as Ray Tune takes them.

Random search draws every key of the space (a grid: every combination, `--num-samples` times
each); Optuna's TPE picks each trial from the results so far. Ray-free up to the Tune objects
themselves, so the choices are tested without a Ray start.
"""

from __future__ import annotations

import argparse
from typing import Any

from cvae.errors import CvaeError
from cvae.spaces import Param, Space

SEARCHERS = ("random", "optuna")
OPTUNA_VALUE_TYPES = (str, int, float, bool, type(None))  # what an Optuna categorical holds


def total_samples(args: argparse.Namespace, space: Space) -> int:
    """Tune's num_samples: per grid combination for random search, all trials for Optuna."""
    if args.num_samples is not None:
        return args.num_samples
    return space.grid_size if args.search == "optuna" else 1


def search_params(space: Space, search: str) -> tuple[dict[str, Param], list[str]]:
    """The searched keys as the searcher takes them, and one line per grid turned into a choice
    (a sequential searcher such as Optuna's TPE cannot enumerate a grid)."""
    if search == "random":
        return dict(space.searched), []
    params, notes = {}, []
    for key, param in space.searched.items():
        if param.kind in ("grid", "choice"):
            _check_optuna_values(key, param)
        if param.kind == "grid":
            param = Param(key, "choice", param.args)
            notes.append(f"{key}: grid -> choice ({search} cannot grid; it picks among "
                         f"{list(param.args)})")
        params[key] = param
    return params, notes


def _check_optuna_values(key: str, param: Param) -> None:
    bad = [v for v in param.args if not isinstance(v, OPTUNA_VALUE_TYPES)]
    if bad:
        raise CvaeError(f"--search optuna: {key}: {param.kind} value {bad[0]!r} is not a "
                        "number, string, true/false or null (Optuna cannot choose it); use "
                        "--search random")


def describe_search(search: str, num_samples: int, space: Space, metric: str, seed: int) -> str:
    if search == "optuna":
        return (f"searcher: optuna (Optuna's TPE through Ray Tune's OptunaSearch, seed {seed}): "
                f"{num_samples} trials in all, each chosen from the results so far; ASHA and "
                f"the ranking use {metric}")
    trials = space.grid_size * num_samples
    return (f"searcher: random (seed {seed}): {trials} trials (grid {space.grid_size} x "
            f"{num_samples} samples); ASHA and the ranking use {metric}; e.g.:")


def param_space(params: dict[str, Param]) -> dict[str, Any]:
    """Tune's param_space: each key's Tune distribution (a grid only for random search)."""
    from ray import tune

    return {k: _tune_dist(tune, p) for k, p in params.items()}


def search_alg(settings: dict[str, Any]):
    """The searcher, holding at most the resolved number of trials at once."""
    if settings.get("search", "random") == "optuna":
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        # Tune's max_concurrent_trials would wrap it the same way; explicit is clearer.
        return ConcurrencyLimiter(OptunaSearch(seed=settings["seed"]),
                                  max_concurrent=settings["max_concurrent_resolved"])
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune ignores max_concurrent_trials when given a BasicVariantGenerator.
    return BasicVariantGenerator(max_concurrent=settings["max_concurrent_resolved"],
                                 random_state=settings["seed"])


def _tune_dist(tune, param: Param):
    a = param.args
    return {
        "grid": lambda: tune.grid_search(list(a)),
        "choice": lambda: tune.choice(list(a)),
        "uniform": lambda: tune.uniform(a[0], a[1]),
        "loguniform": lambda: tune.loguniform(a[0], a[1]),
        "randint": lambda: tune.randint(a[0], a[1]),
        # lo and hi rounded inwards onto the grid of q (the edges): Tune refuses a lo off the
        # grid, and Optuna steps from lo.
        "quniform": lambda: tune.quniform(*param.edges(), a[2]),
    }[param.kind]()
