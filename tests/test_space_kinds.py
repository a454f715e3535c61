"""`--space timesteps|hybrid` end to end on a tiny model: config keys and flags, the budget-fitted
step counts, baselines (uniform and quadratic DDIM) in the population, export of a
`flexopt.schedule/2` file that `rfid` scores to the recorded value, resume, validate."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.run.cost import MacsProfile
from flexopt.run.fitting import fit_placed, fitted_steps
from flexopt.search.config import SpaceChoices, StudyConfig
from flexopt.search.study import SearchSettings, space_from_identity
from flexopt.space.schedule import Schedule


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


EVOLUTION = """
[evolution]
population = 5
n_p = 4
n_c = 3
n_u = 20
"""


def _search(model_dir, tmp_path, weights, kind, n_trials, extra=()):
    config = tmp_path / "study.toml"
    config.write_text(f'[space]\nkind = "{kind}"\nbranches = [1, 2]\n' + EVOLUTION)
    return run("search", config, "--model", model_dir, "--budget", "2x", "--t-ref", 20,
               "--num-images", 6, "--batch-size", 6, "--n-trials", n_trials,
               "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", kind,
               "--device", "cpu", "--cache-dir", tmp_path / "cache", "--inception-weights",
               weights, "--search-seed", 0, "--baselines", "best", "--no-artifacts", *extra)


@pytest.mark.parametrize("kind", ["timesteps", "hybrid"])
def test_search_export_rfid_resume(model_dir, tmp_path, inception_weights, kind):
    r = _search(model_dir, tmp_path, inception_weights, kind, 14)
    assert r.exit_code == 0, r.output
    counts = "7,8,9" if kind == "timesteps" else "9-20"  # K_full-2..K_full; K_full..t_ref
    assert f"space: {kind}, step counts {counts} (fitted to the budget)" in r.output, r.output
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name=kind, storage=storage)
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    names = {t.user_attrs.get("baseline") for t in done} - {None}
    assert "teacher T=9" in names and "ddim-quad T=9" in names, names
    searched = [t for t in done if "baseline" not in t.user_attrs]
    origins = {t.user_attrs.get("origin") for t in searched}
    assert origins & {"crossover", "mutation"}, origins
    for t in done:
        assert "n_steps" in t.params or "schedule" in t.user_attrs
        assert t.user_attrs["avg_macs"] * 2 < t.user_attrs["avg_macs"] * t.user_attrs["speedup"]
        if kind == "timesteps":
            assert "P" not in t.user_attrs["step_types"]
    # the uniform teacher is a candidate of the space: it joins the population as params
    teacher = next(t for t in done if t.user_attrs.get("baseline") == "teacher T=9")
    assert teacher.params["n_steps"] == 9
    out = tmp_path / "best.json"
    r = run("export", "--storage", storage, "--study-name", kind, "--best", "--out", out)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["format"] == "flexopt.schedule/2" and len(data["timesteps"]) >= 7
    schedule = Schedule.load(out)
    r = run("rfid", model_dir, "--schedule", out, "--num-images", 6, "--batch-size", 6,
            "--device", "cpu", "--cache-dir", tmp_path / "cache",
            "--inception-weights", inception_weights)
    assert r.exit_code == 0, r.output
    value = float(re.search(r"^rfid: (\S+)$", r.output, re.M).group(1))
    assert value == pytest.approx(schedule.meta["objective"][0], rel=1e-5)
    # resume: the same command continues up to the new total, the space is the stored one
    r = _search(model_dir, tmp_path, inception_weights, kind, 17)
    assert r.exit_code == 0 and "ran 3 trials this time" in r.output, r.output
    r = run("validate", "--storage", storage, "--study-name", kind, "--num-images", 4,
            "--seed", 5000, "--batch-size", 4, "--device", "cpu", "--cache-dir",
            tmp_path / "cache", "--inception-weights", inception_weights)
    assert r.exit_code == 0, r.output
    assert "best searched" in r.output and "best baseline" in r.output


def test_resume_with_another_space_is_refused(model_dir, tmp_path, inception_weights):
    r = _search(model_dir, tmp_path, inception_weights, "timesteps", 6)
    assert r.exit_code == 0, r.output
    r = _search(model_dir, tmp_path, inception_weights, "timesteps", 6,
                extra=["--steps", "5,6"])
    assert r.exit_code != 0 and "steps" in r.output and "Traceback" not in r.output, r.output


def test_config_and_flags():
    cfg = StudyConfig.from_dict({"space": {"kind": "hybrid", "branches": [1, 3],
                                           "steps": [10, 11]}})
    assert cfg.choices.kind == "hybrid" and cfg.choices.steps == (10, 11)
    assert not cfg.choices.auto
    auto = StudyConfig.from_dict({"space": {"kind": "timesteps"}})
    assert auto.choices.auto and auto.choices.steps is None
    with pytest.raises(FlexoptError, match="space 'steps' is not supported; allowed: segments, "
                                           "timesteps, hybrid"):
        StudyConfig.from_dict({"space": {"kind": "steps"}})
    with pytest.raises(FlexoptError, match="missing key 'segments'"):
        StudyConfig.from_dict({"space": {"branches": [1]}})
    r = run("search", "--model", "x", "--budget", "2x", "--space", "segments", "--steps", "3",
            "--segments", "3", "--branches", "1", "--intervals", "1")
    assert r.exit_code != 0 and "--steps applies to --space timesteps or hybrid" in r.output
    r = run("search", "--space", "cubes")
    assert r.exit_code != 0 and "'cubes' is not one of 'segments', 'timesteps', 'hybrid'" \
        in r.output


def test_space_command_for_placed_spaces(model_dir):
    r = run("space", "--space", "hybrid", "--model", model_dir, "--t-ref", 20, "--budget",
            "2x", "--sample", 2, "--branches", "1,2")
    assert r.exit_code == 0, r.output
    assert "space             : hybrid" in r.output
    assert "step-count choices: 9,10,11,12,13,14,15,16,17,18,19,20" in r.output
    assert "sample 2: K=" in r.output and "F" in r.output
    r = run("space", "--space", "timesteps", "--steps", "4,5", "--json", "--sample", 1)
    data = json.loads(r.output)
    assert data["samples"][0]["format"] == "flexopt.schedule/2"
    assert len(data["samples"][0]["timesteps"]) in (4, 5)


def test_fitted_steps_and_identity_round_trip():
    profile = MacsProfile(full=100, partial=(10, 20, 40))
    # budget 2x of t_ref 20: 1000 MACs in all -> at most 9 full steps
    assert fitted_steps(profile, 20, 50.0, "timesteps") == (7, 8, 9)
    # hybrid: one full step + partial b=1 steps of 10: up to t_ref 20 U-Net calls
    assert fitted_steps(profile, 20, 50.0, "hybrid", (1, 2)) == tuple(range(9, 21))
    fit = fit_placed(profile, 20, 50.0, "hybrid", (1, 2), None, 1000, 1)
    assert fit.costs.cheapest < 50.0 <= fit.costs.heaviest
    with pytest.raises(FlexoptError, match="affords not even one full step"):
        fitted_steps(profile, 20, 4.0, "timesteps")
    settings = SearchSettings(fit.space, "ddim", None)
    ident = settings.identity()
    assert ident["space"] == "hybrid" and ident["offset"] == 1
    assert space_from_identity(ident) == fit.space
    seg = SpaceChoices((3, 4), (1,), (1, 2)).space()
    assert "space" not in SearchSettings(seg).identity()  # old studies resume unchanged
    assert space_from_identity(SearchSettings(seg).identity()) == seg
