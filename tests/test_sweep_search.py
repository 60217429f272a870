"""Ray-free parts of a sweep (ray_jobs.tune): the searcher and its space, the trials that fit
at once, and the ranking of finished trials. Nothing here starts Ray."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import optuna.distributions as od
import pytest
from conftest import tiny_sets
from test_report import make_run

from cvae.errors import CvaeError
from cvae.spaces import load_space, parse_space
from ray_jobs import tune

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "tune_spaces" / "smoke.yaml"
EVERY_KIND = {
    "train.kl_anneal_type": {"grid": ["Monotonic", "None"]},
    "train.kl_anneal_cycle": {"choice": [2, 4]},
    "train.kl_anneal_ratio": {"uniform": [0.25, 1.0]},
    "train.lr": {"loguniform": [1.0e-4, 1.0e-2]},
    "train.tfr_sde": {"randint": [2, 6]},
    "train.tfr_d_step": {"quniform": [0.07, 0.3, 0.1]},
}


def optuna_space(space, search="optuna"):
    from ray.tune.search.optuna import OptunaSearch

    params, notes = tune.search_params(space, search)
    return OptunaSearch.convert_search_space(tune.param_space(params)), notes


def test_smoke_space_for_optuna_turns_each_grid_into_a_choice_and_says_so():
    space = load_space(SMOKE)
    converted, notes = optuna_space(space)
    assert converted["train.kl_anneal_type"] == od.CategoricalDistribution(["Monotonic", "None"])
    assert converted["model.output_activation"] == od.CategoricalDistribution(["sigmoid", "none"])
    assert converted["train.tfr_d_step"] == od.CategoricalDistribution([0.25, 0.5])
    assert notes == [
        "train.kl_anneal_type: grid -> choice (optuna cannot grid; it picks among "
        "['Monotonic', 'None'])",
        "model.output_activation: grid -> choice (optuna cannot grid; it picks among "
        "['sigmoid', 'none'])"]


def test_every_param_kind_maps_to_its_optuna_distribution():
    converted, notes = optuna_space(parse_space(EVERY_KIND))
    assert converted == {
        "train.kl_anneal_type": od.CategoricalDistribution(["Monotonic", "None"]),
        "train.kl_anneal_cycle": od.CategoricalDistribution([2, 4]),
        "train.kl_anneal_ratio": od.FloatDistribution(0.25, 1.0),
        "train.lr": od.FloatDistribution(1e-4, 1e-2, log=True),
        "train.tfr_sde": od.IntDistribution(2, 5),  # randint's upper bound is excluded
        "train.tfr_d_step": od.FloatDistribution(0.1, 0.3, step=0.1),  # on the grid of q
    }
    assert len(notes) == 1


def test_random_search_keeps_the_grid():
    from ray import tune as ray_tune

    params, notes = tune.search_params(parse_space(EVERY_KIND), "random")
    space = tune.param_space(params)
    assert space["train.kl_anneal_type"] == ray_tune.grid_search(["Monotonic", "None"])
    assert notes == []


def test_optuna_is_seeded_by_the_sweeps_seed():
    def first_trials(seed):
        settings = {"search": "optuna", "seed": seed, "max_concurrent_resolved": 2}
        searcher = tune.search_alg(settings)
        params, _ = tune.search_params(parse_space(EVERY_KIND), "optuna")
        searcher.set_search_properties("val_psnr_avg3", "max", tune.param_space(params))
        return [searcher.suggest(f"t{i}") for i in range(2)]

    first = first_trials(7)
    assert first == first_trials(7) and first != first_trials(8)
    assert all(set(t) == set(EVERY_KIND) for t in first)


def test_optuna_refuses_values_it_cannot_choose():
    space = parse_space({"train.lr_milestones": {"choice": [[2, 3], [3, 4]]}})
    with pytest.raises(CvaeError, match="^--search optuna: train.lr_milestones: choice value"):
        tune.search_params(space, "optuna")
    assert tune.search_params(space, "random")[1] == []


@pytest.mark.parametrize("search, given, expected", [
    ("random", None, 1), ("random", 3, 3), ("optuna", None, 4), ("optuna", 10, 10)])
def test_num_samples(search, given, expected):
    args = argparse.Namespace(search=search, num_samples=given)
    assert tune.total_samples(args, load_space(SMOKE)) == expected


def test_dry_run_shows_the_searcher(cli, capsys, tmp_path):
    argv = ["--space", str(SMOKE), "--out", str(tmp_path / "s"), "--dry-run", *tiny_sets()]
    assert cli(tune.main, [*argv, "--search", "optuna", "--num-samples", "6"]) == 0
    out = capsys.readouterr().out
    assert "searcher: optuna (Optuna's TPE through Ray Tune's OptunaSearch, seed 1): 6 trials " \
           "in all" in out
    assert out.count("grid -> choice") == 2
    assert cli(tune.main, argv) == 0
    out = capsys.readouterr().out
    assert "searcher: random (seed 1): 4 trials (grid 4 x 1 samples)" in out
    assert "grid -> choice" not in out


def test_bad_gpus_per_worker_is_one_line(cli, capsys, tmp_path):
    argv = ["--space", str(SMOKE), "--out", str(tmp_path / "s"), "--dry-run",
            "--gpus-per-worker", "1.5"]
    assert cli(tune.main, argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --gpus-per-worker 1.5: must be a share of one GPU in (0, 1] or a whole number "
        "of GPUs"]


def test_sweep_json_keeps_the_search_for_resume(tiny_data, tmp_path, capsys):
    parser = tune.build_parser()
    args = parser.parse_args(["--space", str(SMOKE), "--data", str(tiny_data), "--out",
                              str(tmp_path / "s"), "--search", "optuna", "--metric", "val_psnr",
                              "--gpus-per-worker", "0.25", *tiny_sets()])
    settings = tune.new_sweep(args)
    saved = json.loads((tmp_path / "s" / tune.SWEEP_FILE).read_text())
    assert (saved["search"], saved["metric"], saved["num_samples"]) == ("optuna", "val_psnr", 4)
    assert saved["cluster"]["gpus_per_worker"] == 0.25
    assert tune.load_sweep(parser.parse_args(["--out", str(tmp_path / "s"), "--resume"])) \
        == settings
    assert capsys.readouterr().out.count("grid -> choice") == 2


@pytest.mark.parametrize("cpus, gpus, workers, cpu_each, gpu_each, expected", [
    (9, 0, 1, 1.0, 0.0, 5),      # (9 - 1) / 1.5 CPUs a trial
    (9, 1, 1, 1.0, 0.25, 4),     # four trials share the one GPU
    (9, 1, 1, 1.0, 1.0, 1),      # a whole GPU each
    (33, 2, 2, 1.0, 0.25, 4),    # 2 workers x 0.25 GPU: 4 trials on 2 GPUs
    (3, 8, 1, 1.0, 1.0, 1),      # CPUs bound it; never fewer than one
    (129, 16, 1, 1.0, 0.5, 32),  # an autoscaler's maximum, not the head node alone
])
def test_trials_at_once(cpus, gpus, workers, cpu_each, gpu_each, expected):
    assert tune.trials_at_once(cpus, gpus, workers, cpu_each, gpu_each) == expected


# ---- ranking the finished trials


@pytest.fixture
def finished(tmp_path) -> Path:
    """Two finished trials: one lucky epoch (best raw val_psnr) against a steady climb."""
    trials = tmp_path / "sweep" / "trials"
    make_run(trials / "lucky", kl="None", epochs=4, ran=4, psnr0=0, psnrs=[18, 21.8, 18, 18],
             params={"train.kl_anneal_type": "None"})
    make_run(trials / "steady", kl="Monotonic", epochs=4, ran=4, psnr0=0,
             psnrs=[19, 20, 20.5, 20.5], params={"train.kl_anneal_type": "Monotonic"})
    (trials / "steady" / "checkpoints" / "best.pt").write_bytes(b"steady epoch 3")
    return tmp_path / "sweep"


def _ranked(out: Path) -> list[str]:
    with open(out / "results.csv", newline="") as fh:
        return [r["trial_id"] for r in csv.DictReader(fh)]


def test_summary_ranks_and_exports_by_the_chosen_metric(finished):
    rows, best = tune.summarize(finished, "val_psnr_avg3")
    assert _ranked(finished) == ["steady", "lucky"] and best["trial_id"] == "steady"
    assert (finished / "best" / "checkpoint.pt").read_bytes() == b"steady epoch 3"
    info = json.loads((finished / "best" / "trial.json").read_text())
    assert info["ranked_by"] == "val_psnr_avg3" and info["best_epoch"] == 3  # raw best epoch
    assert json.loads((finished / "report_data.json").read_text())["best"] == "steady"

    rows, best = tune.summarize(finished, "val_psnr")
    assert _ranked(finished) == ["lucky", "steady"] and best["trial_id"] == "lucky"
    assert (finished / "best" / "checkpoint.pt").read_bytes() == b"fake"


@pytest.fixture
def one_node(monkeypatch):
    """Ray answering as a cluster of one node of `have` resources (set have[...])."""
    import ray

    have = {"CPU": 9.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(have))
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": dict(have)}])
    return have


def saved_sweep(tiny_data, tmp_path, *flags: str) -> tuple[argparse.Namespace, dict]:
    """A new sweep's settings, as sweep.json keeps them, and the command line."""
    args = tune.build_parser().parse_args(
        ["--space", str(SMOKE), "--data", str(tiny_data), "--out", str(tmp_path / "s"),
         "--resource-timeout", "0", *flags, *tiny_sets()])
    tune.new_sweep(args)
    return args, json.loads((tmp_path / "s" / tune.SWEEP_FILE).read_text())


@pytest.mark.parametrize("flags, have, expected", [
    ([], {"CPU": 9.0}, 5),
    (["--gpus-per-worker", "0.25"], {"CPU": 9.0, "GPU": 1.0}, 4),
    (["--use-gpu"], {"CPU": 9.0, "GPU": 1.0}, 1),
    (["--max-cluster-cpus", "33"], {"CPU": 9.0}, 21),  # what the cluster can scale up to
])
def test_size_trials_from_the_settings_a_sweep_stores(one_node, tiny_data, tmp_path, capsys,
                                                      flags, have, expected):
    one_node.update(have)
    args, settings = saved_sweep(tiny_data, tmp_path, *flags)
    tune.size_trials(args, settings, attached=False)
    assert settings["max_concurrent_resolved"] == expected
    assert f"; {expected} at once" in capsys.readouterr().out


def test_a_sweep_saved_before_the_cluster_record_sizes_the_same(one_node, capsys):
    legacy = {"num_workers": 1, "use_gpu": True, "cpus_per_worker": None, "max_failures": 1,
              "gpus_per_worker": 0.25, "max_concurrent": None, "max_cluster_cpus": None,
              "max_cluster_gpus": None, "storage_path": None}
    one_node.update({"GPU": 1.0})
    args = tune.build_parser().parse_args(["--resource-timeout", "0"])
    tune.size_trials(args, legacy, attached=False)
    assert legacy["max_concurrent_resolved"] == 4


def test_a_gpu_trial_on_a_cluster_without_gpus_fails_at_once(one_node, tiny_data, tmp_path):
    args, settings = saved_sweep(tiny_data, tmp_path, "--gpus-per-worker", "0.5",
                                 "--max-cluster-gpus", "0")
    with pytest.raises(CvaeError, match="cluster can scale up to 0 GPU at most"):
        tune.size_trials(args, settings, attached=True)


def test_the_placement_strategy_reaches_every_trial(one_node, tiny_data, tmp_path, cli, capsys,
                                                     monkeypatch):
    """Saved in sweep.json, handed to each trial's trainer; and STRICT_SPREAD of 2 workers per
    trial on a one-node cluster fails at once, with one line."""
    from ray_jobs import trial

    args, settings = saved_sweep(tiny_data, tmp_path, "--workers-per-trial", "2",
                                 "--placement-strategy", "SPREAD")
    assert trial.sweep_cluster(settings).placement_strategy == "SPREAD"
    monkeypatch.setattr(tune.common, "connect", lambda address: False)
    argv = ["--space", str(SMOKE), "--data", str(tiny_data), "--out", str(tmp_path / "t"),
            "--workers-per-trial", "2", "--placement-strategy", "STRICT_SPREAD", *tiny_sets()]
    capsys.readouterr()
    assert cli(tune.main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --placement-strategy STRICT_SPREAD puts each of the 2 "
                          "workers on a node of its own, but 1 node(s)") and "\n" not in err


def test_more_trials_at_once_than_fit_are_lowered_with_a_warning(capsys):
    """Two trials of 1.5 CPU on 2 CPUs would take the CPU Ray Data reads with, and both would
    wait for their data forever: --max-concurrent is lowered to what fits, and says so."""
    fits = tune.trials_at_once(2, 0, 1, 1.0, 0.0)
    assert fits == 1
    assert tune.concurrency(2, fits) == 1
    assert "warning: --max-concurrent 2: 1 trial(s) fit" in capsys.readouterr().err
    assert tune.concurrency(None, 3) == 3 and tune.concurrency(2, 3) == 2
    assert capsys.readouterr().err == ""
