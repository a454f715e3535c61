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
from flexopt.search.study import VALIDATION_ATTR, feasible_trials, load_study
from flexopt.search.validation import BASELINE_FAMILIES, baseline_family

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
    families = set(BASELINE_FAMILIES.values())
    assert labels[:2] == ["teacher", "best searched"] and len(labels) > 2
    assert set(labels[2:]) <= families and len(set(labels[2:])) == len(labels) - 2
    # the segment space's own fewer-step teacher (on its grid) does not stand in for the plain
    # one: each is scored, so a search is judged against the fewer-step teacher itself
    assert {"fewer-step teacher", "fewer-step teacher on the space's grid"} <= set(labels)
    # printed whole in the table (a fixed 19-character column cut it to "fewer-step teacher")
    assert any(line.startswith("fewer-step teacher on the space's grid trial ")
               for line in r.output.splitlines())
    assert data["overlap"] == 0 and "best baseline" in data["verdict"]
    study = load_study(storage, "v")
    feasible = feasible_trials(study)
    best_searched = next(t for t in feasible if "baseline" not in t.user_attrs)
    # each family's strongest feasible baseline by the search's own score
    strongest = {}
    for t in feasible:
        if "baseline" in t.user_attrs:
            strongest.setdefault(baseline_family(t.user_attrs["baseline"]), t)
    trials = [best_searched, *strongest.values()]
    assert [r["name"] for r in data["rows"][1:]] == [
        f"trial {t.number}" + (f" ({t.user_attrs['baseline']})" if "baseline" in t.user_attrs
                               else "") for t in trials]
    for row, trial in zip(data["rows"][1:], trials, strict=True):
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
    # every baseline gets its difference (point estimates without --bootstrap)
    rfid = {r["name"]: r["rfid"] for r in data["rows"]}
    searched_name = data["rows"][1]["name"]
    assert [d["baseline"] for d in data["differences"]] == [r["name"] for r in data["rows"][2:]]
    for d in data["differences"]:
        assert d["value"] == pytest.approx(rfid[searched_name] - rfid[d["baseline"]])
        assert d["low"] is None and d["verdict"] in ("beats", "does not beat")
    assert "point estimates" in data["verdict"]
    assert data["rows"][0]["rfid"] == 0.0


def test_validate_again_scores_from_the_features_cache(searched, tmp_path, monkeypatch):
    """A second held-out check on the same seeds generates nothing: the schedules' features
    come from the cache (the teacher's too), and give the same table; a corrupt entry is
    rebuilt, not read."""
    from flexopt.search.evaluator import ModelEvaluator

    root, _, storage, common, _ = searched
    args = ["validate", "--storage", storage, "--num-images", 4, "--seed", 9000, "--batch-size",
            4, *common]
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    cache = root / "cache" / "features"
    before = set(cache.glob("*.npz"))  # other tests' held-out seeds
    assert run(*args, "--json", first).exit_code == 0
    made = []
    original = ModelEvaluator.images
    monkeypatch.setattr(ModelEvaluator, "images",
                        lambda self, *a, **k: made.append(1) or original(self, *a, **k))
    r = run(*args, "--json", second)
    assert r.exit_code == 0, r.output
    assert made == [] and json.loads(second.read_text()) == json.loads(first.read_text())
    entries = sorted(set(cache.glob("*.npz")) - before)
    assert len(entries) >= 2  # the searched schedule and at least one baseline
    entries[0].write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="corrupt"):
        r = run(*args, "--json", second)
    assert r.exit_code == 0, r.output
    assert len(made) == 1 and json.loads(second.read_text()) == json.loads(first.read_text())


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


def test_validate_bootstrap_gives_intervals_and_the_report_shows_them(searched, tmp_path):
    _, _, storage, common, _ = searched
    out = tmp_path / "v.json"
    r = run("validate", "--storage", storage, "--num-images", 6, "--seed", 7000, "--batch-size",
            6, "--bootstrap", 50, "--json", out, *common)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["resamples"] == 50 and data["differences"]
    for d in data["differences"]:
        assert d["se"] > 0 and d["low"] <= d["high"]
        word = ("beats" if d["high"] < 0 else "loses" if d["low"] > 0
                else "not distinguishable on these images")
        assert d["verdict"] == word
        assert f"{d['baseline']}: rFID difference" in r.output
    best = min((row for row in data["rows"] if row["kind"] == "baseline"),
               key=lambda row: row["rfid"])
    assert f"(best baseline: {best['label']}, {best['name']})" in data["verdict"]
    assert data["verdict"] in r.output
    # kept on the study: the report shows it
    assert load_study(storage, "v").user_attrs[VALIDATION_ATTR] == data
    html = tmp_path / "r.html"
    r = run("report", "--storage", storage, "--out", html, "--no-artifacts")
    assert r.exit_code == 0, r.output
    text = html.read_text()
    assert "Held-out validation" in text and "6 held-out images from seed 7000" in text
    assert "paired bootstrap, 50 resamples" in text and "95% interval" in text


def test_validate_one_resample_is_refused(searched):
    _, _, storage, common, _ = searched
    r = run("validate", "--storage", storage, "--num-images", 2, "--bootstrap", 1, *common)
    assert r.exit_code == 2 and "bootstrap 1 is invalid" in r.output



@pytest.mark.parametrize(("low", "high", "word"), [
    (-2.0, -0.5, "beats"), (0.5, 2.0, "loses"), (-1.0, 1.0, "not distinguishable on these images")])
def test_the_verdict_follows_the_interval_against_the_best_baseline(low, high, word):
    """The baseline to beat is the best on the held-out images (not on the search's seeds), and
    the verdict is read off the interval of the difference, not the point estimate."""
    from flexopt.metrics.bootstrap import Interval
    from flexopt.search.validation import Difference, Validation, ValidationRow
    from flexopt.space.schedule import Schedule

    s = Schedule.uniform(10, 2, 1)

    def row(label, name, kind, rfid, search):
        return ValidationRow(label, name, kind, s, 1.0, 2.0, 5, rfid, search_value=search)

    rows = [row("best searched", "trial 9", "searched", 10.0, 1.0),
            row("fewer-step teacher", "trial 1 (teacher T=5)", "baseline", 10.4, 2.0),
            row("DeepCache-uniform", "trial 2 (deepcache n=2 b=1)", "baseline", 11.0, 1.5)]
    diffs = [Difference("rfid", rows[1].name, -0.4, Interval(-0.4, 0.3, low, high, 0.95)),
             Difference("rfid", rows[2].name, -1.0, Interval(-1.0, 0.3, -2.0, -0.1, 0.95))]
    v = Validation(rows, 100, 5000, 0, differences=diffs, resamples=200)
    assert v.best_baseline().name == "trial 1 (teacher T=5)"  # held-out, not search value
    phrase = {"beats": "beats it", "loses": "loses to it"}.get(
        word, "is not distinguishable from it on these images")
    assert v.verdict().endswith(f"the searched schedule {phrase}")
    assert "best baseline: fewer-step teacher, trial 1 (teacher T=5)" in v.verdict()
    assert f"[{low:.3g}, {high:.3g}]" in v.verdict()


def test_a_named_trial_is_shown_but_not_the_baseline_to_beat():
    from flexopt.report.html import _validation
    from flexopt.search.validation import Difference, Validation, ValidationRow
    from flexopt.space.schedule import Schedule

    s = Schedule.uniform(10, 2, 1)
    rows = [ValidationRow("best searched", "trial 9", "searched", s, 1.0, 2.0, 5, 10.0),
            ValidationRow("fewer-step teacher", "trial 1 (teacher T=5)", "baseline", s, 1.0, 2.0,
                          5, 12.0),
            # named with --trial, maybe over the budget: never the baseline to beat
            ValidationRow("trial 4", "trial 4 (teacher T=9)", "baseline", s, 1.0, 2.0, 9, 3.0)]
    v = Validation(rows, 8, 5000, 0, differences=[Difference("rfid", rows[1].name, -2.0)])
    assert v.best_baseline().name == "trial 1 (teacher T=5)"
    assert "the searched schedule beats it" in v.verdict()
    # the report says when the search has moved on since the validation
    assert "its best searched is now trial 12" in _validation(v.to_dict(), 12)
    assert "has continued" not in _validation(v.to_dict(), 9)
