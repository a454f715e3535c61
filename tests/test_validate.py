"""`flexopt validate` on a tiny model: the best searched schedule and the best baseline scored on
unseen seeds, equal to `flexopt rfid` on the exported schedules; honest export and report."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.search.study import feasible_trials, load_study

SPACE = ["--segments", "auto", "--branches", "1,2", "--intervals", "1,2", "--t-ref", "20"]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, inception_weights):
    root = tmp_path_factory.mktemp("validate")
    model = str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), root / "m"))
    config = root / "study.toml"
    config.write_text("[space]\nsegments = [3]\nbranches = [1]\nintervals = [1]\n"
                      "[evolution]\npopulation = 4\nn_p = 4\nn_c = 2\nn_u = 20\n")
    storage = f"sqlite:///{root / 'study.db'}"
    common = ["--device", "cpu", "--cache-dir", str(root / "cache"), "--inception-weights",
              inception_weights]
    r = run("search", config, "--model", model, "--budget", "2x", *SPACE, "--num-images", 6,
            "--batch-size", 6, "--n-trials", 12, "--storage", storage, "--study-name", "v",
            "--search-seed", 0, "--baselines", "best", "--no-artifacts", *common)
    assert r.exit_code == 0, r.output
    return root, model, storage, common, r.output


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_search_prints_its_fitted_space_and_counts(searched):
    _, _, storage, _, output = searched
    assert "(fitted to the budget)" in output and "cheapest" in output and "heaviest" in output
    study = load_study(storage, "v")
    seeds = [t for t in study.trials if t.user_attrs.get("origin") == "seed"]
    assert seeds, "a baseline the space runs exactly joins the population"
    n_searched = sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE
                     and "baseline" not in t.user_attrs)
    n_baselines = sum(1 for t in study.trials if "baseline" in t.user_attrs)
    assert f"in all {n_searched} searched candidates, {n_baselines} baselines" in output


def test_validate_equals_rfid_of_the_exported_schedules(searched, tmp_path):
    _, model, storage, common, _ = searched
    out = tmp_path / "v.json"
    r = run("validate", "--storage", storage, "--num-images", 4, "--seed", 5000, "--batch-size",
            4, "--json", out, *common)
    assert r.exit_code == 0, r.output
    assert "4 held-out images from seed 5000" in r.output
    data = json.loads(out.read_text())
    labels = [row["label"] for row in data["rows"]]
    assert labels == ["teacher", "best searched", "best baseline"]
    assert data["overlap"] == 0 and "the baseline" in data["verdict"]
    study = load_study(storage, "v")
    feasible = feasible_trials(study)
    best_searched = next(t for t in feasible if "baseline" not in t.user_attrs)
    best_baseline = next(t for t in feasible if "baseline" in t.user_attrs)
    for row, trial in zip(data["rows"][1:], (best_searched, best_baseline), strict=True):
        assert row["search_value"] == pytest.approx(trial.values[0])
        sched = tmp_path / f"t{trial.number}.json"
        assert run("export", "--storage", storage, "--trial", trial.number, "--out",
                   sched).exit_code == 0
        # an independent path to the same number: `flexopt rfid` on the exported schedule
        r2 = run("rfid", model, "--schedule", sched, "--num-images", 4, "--seed", 5000,
                 "--batch-size", 4, *common)
        assert r2.exit_code == 0, r2.output
        value = float(re.search(r"rfid: (\S+)", r2.output).group(1))
        assert row["rfid"] == pytest.approx(value, rel=1e-5)
    assert data["rows"][0]["rfid"] == 0.0


def test_validate_named_trial_and_overlap_warning(searched):
    _, _, storage, common, _ = searched
    r = run("validate", "--storage", storage, "--num-images", 2, "--seed", 3, "--trial", 0,
            "--batch-size", 2, *common)
    assert r.exit_code == 0, r.output
    assert "were also the search's" in r.output  # seeds 3, 4 overlap the search's 0..5
    assert "trial 0" in r.output


def test_validate_bad_input(searched):
    _, _, storage, common, _ = searched
    r = run("validate", "--storage", storage, "--trial", 999, "--num-images", 2, *common)
    assert r.exit_code == 2 and "trial 999 is not in study 'v'" in r.output
    r = run("validate", "--storage", storage, "--num-images", 2, "--class-labels", "1", *common)
    assert r.exit_code == 2 and "class labels" in r.output


def test_export_says_when_the_best_is_a_baseline(searched, tmp_path):
    _, _, storage, _, _ = searched
    study = load_study(storage, "v")
    best = feasible_trials(study)[0]
    r = run("export", "--storage", storage, "--best", "--out", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    assert f"wrote trial {best.number}" in r.output
    if "baseline" in best.user_attrs:
        assert "the best under the budget is a baseline" in r.output
    else:
        assert "is a baseline" not in r.output
