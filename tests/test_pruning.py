"""Multi-fidelity search (issue 30): images made rung by rung equal one full run bit for bit,
each rung's value is the metric of the first n images against the teacher's first n, pruned
trials are PRUNED with their intermediate values and are never parents nor proposed again,
`--n-trials` counts searched candidates (baselines run in addition), and bad values are one line.
"""

from __future__ import annotations

import random
import re

import numpy as np
import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, score
from flexopt.run.budget import Budget
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.search.baselines import baseline_schedules, enqueue_baselines
from flexopt.search.config import EvolutionConfig, StudyConfig
from flexopt.search.evaluator import EvalSettings, ModelEvaluator
from flexopt.search.loop import optimize
from flexopt.search.objective import Objective, feasibility
from flexopt.search.pruning import default_rungs, make_pruner, parse_rungs
from flexopt.search.sampler import KEY_ATTR
from flexopt.search.study import (
    PRUNED_AT_ATTR,
    SearchSettings,
    TrialCounts,
    make_sampler,
    open_study,
)
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.testing import SyntheticProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRUNED = optuna.trial.TrialState.PRUNED


@pytest.fixture(scope="module")
def pipe():
    return tiny.ddim_pipeline(tiny.unet2d(sample_size=8, blocks=2, channels=8, seed=0))


# ------------------------------------------------------------------------------- the images
@pytest.mark.parametrize("batch", [4, 3])
def test_images_made_in_pieces_equal_one_run_bit_for_bit(pipe, batch):
    sched = Schedule.uniform(12, 3, 2)
    run = apply_schedule(pipe, sched)
    whole = generate_images(run, 16, 5, 4, progress=False)  # batches 0-3, 4-7, 8-11, 12-15
    parts = [generate_images(run, b - a, 5, min(batch, 4), progress=False, start=a)
             for a, b in ((0, 4), (4, 8), (8, 16))]
    if batch == 4:  # the same batches: the same bits
        assert np.array_equal(np.concatenate([p.images for p in parts]), whole.images)
    else:  # other batches: the same noises, the same images up to float rounding (which is
        # why a pruned search splits every candidate's batches at the same rungs)
        np.testing.assert_allclose(np.concatenate([p.images for p in parts]), whole.images,
                                   atol=1e-4)
    assert np.array_equal(np.concatenate([p.seeds for p in parts]), whole.seeds)


def _evaluator(pipe, cache, weights, n=16, batch=4, prefix_mb=64.0) -> ModelEvaluator:
    return ModelEvaluator(pipe, "ddim", 12, EvalSettings(n, seed=3, batch_size=batch),
                          str(cache), weights, False, prefix_mb)


def test_rungs_report_the_metric_of_the_first_n_images(pipe, tmp_path, inception_weights):
    ev = _evaluator(pipe, tmp_path, inception_weights)
    sched = Schedule.uniform(12, 3, 2)
    whole = ev.score(sched)
    whole_images = ev.last_images
    reported: list[tuple[int, float]] = []
    ev2 = _evaluator(pipe, tmp_path, inception_weights)  # a fresh prefix cache
    rung = ev2.score(sched, (4, 8), lambda n, v: reported.append((n, v)))
    assert np.array_equal(ev2.last_images, whole_images)  # batches of 4 split at 4 and 8
    # the same rFID on the same 16 images (Inception's batches differ: float rounding)
    assert rung == pytest.approx(whole, rel=1e-6)
    feats = np.concatenate([ev.features(whole_images[a:b]) for a, b in ((0, 4), (4, 8))])
    teacher = ev.teacher().stats.features
    expected = [(n, score("rfid", FeatureStats.from_features(teacher[:n]), feats[:n]))
                for n in (4, 8)]
    assert [n for n, _ in reported] == [4, 8]
    np.testing.assert_allclose([v for _, v in reported], [v for _, v in expected], rtol=1e-9)
    assert ev2.last_counts["unet_calls"] == 4 * sched.nfe  # four batches, each made once


def test_a_pruned_rung_stops_the_images(pipe, tmp_path, inception_weights):
    ev = _evaluator(pipe, tmp_path, inception_weights)

    def stop(n, value):
        raise optuna.TrialPruned(f"at {n}")

    with pytest.raises(optuna.TrialPruned, match="at 4"):
        ev.score(Schedule.uniform(12, 3, 1), (4, 8), stop)
    assert ev.last_counts["unet_calls"] == Schedule.uniform(12, 3, 1).nfe  # one batch of 4


# --------------------------------------------------------------------------- the search loop
class RungEvaluator:
    """A stand-in model for the search loop: a candidate's score is its distance to a hidden
    target plus noise that shrinks with the image count (as rFID's does)."""

    full_macs = 1.0

    def __init__(self, problem: SyntheticProblem):
        self.problem = problem
        self.images_made = 0

    def avg_macs(self, s: Schedule) -> float:
        return sum(1 + (g.interval - 1) * 0.1 * g.branch for g in s.segments) / s.t_ref

    def _value(self, s: Schedule, n: int) -> float:
        rng = random.Random(f"{s.step_string()}:{n}")
        base = self.problem.score(s.candidate) if s.segment_length == 3 else 20 - s.nfe / 10
        return base + rng.gauss(0, 8 / n ** 0.5)

    def score(self, s: Schedule, rungs=(), on_rung=None) -> float:
        for n in rungs:
            self.images_made += n - (rungs[rungs.index(n) - 1] if rungs.index(n) else 0)
            if on_rung is not None:
                on_rung(n, self._value(s, n))
        self.images_made += 32 - (rungs[-1] if rungs else 0)
        return self._value(s, 32)


SPACE = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)


def _study(tmp_path, pruner: str, rungs=(8, 16), seed=0, name="p"):
    ev = RungEvaluator(SyntheticProblem.make(SPACE, seed=11))
    limit = Budget.parse("0.3").max_avg_macs(ev.full_macs)
    settings = SearchSettings(SPACE, "ddim", Budget.parse("0.3"), False, "rfid", "synthetic", 32)
    smp = make_sampler("evo", SPACE, feasibility(SPACE, "ddim", ev, limit),
                       EvolutionConfig(population=8, n_p=4, n_c=3, n_u=30), seed)
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", name, settings, smp,
                       make_pruner(pruner, rungs, 32))
    enqueue_baselines(study, baseline_schedules(SPACE, "ddim", ev.full_macs, ev.avg_macs, limit))
    objective = Objective(SPACE, ev, "ddim", limit, rungs=tuple(rungs) if pruner != "none" else ())
    return study, objective, ev, smp


@pytest.mark.parametrize("pruner", ["population", "halving", "median", "hyperband"])
def test_pruned_trials_are_never_parents_nor_proposed_again(tmp_path, pruner):
    study, objective, _, smp = _study(tmp_path, pruner)
    optimize(study, objective, n_trials=60)
    trials = study.get_trials(deepcopy=False)
    pruned = [t for t in trials if t.state == PRUNED]
    assert pruned, "the pruner should stop some candidates"
    for t in pruned:  # stopped at a rung, with its intermediate values (the dashboard plots them)
        assert t.user_attrs[PRUNED_AT_ATTR] in (8, 16)
        assert max(t.intermediate_values) == t.user_attrs[PRUNED_AT_ATTR]
        assert "baseline" not in t.user_attrs  # baselines always run to the end
    assert all(set(t.intermediate_values) == {8, 16} for t in trials
               if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in
               t.user_attrs)
    parents = {t.user_attrs["parent"] for t in trials if "parent" in t.user_attrs}
    assert parents and not parents & {t.number for t in pruned}
    population = {t.number for t in smp.population(study, trials)}
    assert not population & {t.number for t in pruned}
    keys = [t.system_attrs[KEY_ATTR] for t in trials if KEY_ATTR in t.system_attrs]
    assert len(keys) == len(set(keys))  # no candidate proposed twice, pruned ones included
    counts = TrialCounts.of(trials)
    assert counts.searched == 60 and counts.pruned == len(pruned) and counts.baselines > 0


def test_pruning_makes_candidates_cheaper(tmp_path):
    """The point of pruning: the same number of candidates for far fewer images."""
    made = {}
    for pruner in ("none", "halving", "population"):
        study, objective, ev, _ = _study(tmp_path, pruner, name=pruner,
                                         rungs=(8,) if pruner == "population" else (8, 16))
        optimize(study, objective, n_trials=60)
        made[pruner] = ev.images_made
    assert made["halving"] < 0.75 * made["none"], made
    assert made["population"] < 0.75 * made["none"], made


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_population_pruner_compares_a_child_with_its_parents_others_with_the_best(
        direction):
    """A child goes on iff its rung value is no worse than its best parent's; a candidate
    without parents iff it is within the best `size` complete feasible trials' (checked against
    numpy's sort; fewer than `size` complete: nothing without parents stops); pruned,
    infeasible and other-rung trials do not count."""
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from flexopt.search.pruning import PopulationPruner

    rng = np.random.default_rng(3)
    study = optuna.create_study(direction=direction)
    pruner = PopulationPruner(5)
    dist = {"x": FloatDistribution(0, 1)}
    worse = (lambda a, b: a > b) if direction == "minimize" else (lambda a, b: a < b)

    def add(value, state=TrialState.COMPLETE, step=8, violated=False):
        study.add_trial(create_trial(
            state=state, value=1.0 if state == TrialState.COMPLETE else None,
            params={"x": 0.5}, distributions=dist, intermediate_values={step: value},
            system_attrs={"constraints": [1.0 if violated else -1.0]}))
        return study.trials[-1].number

    def asks(value, **attrs):
        t = create_trial(state=TrialState.RUNNING, params={"x": 0.5}, distributions=dist,
                         intermediate_values={8: value}, user_attrs=attrs)
        return pruner.prune(study, t)

    values = rng.normal(100, 10, 4)
    for v in values:
        add(float(v))
    assert not asks(1e9) and not asks(-1e9)  # 4 complete < 5: the first population is kept
    assert asks(float(np.max(values) if direction == "minimize" else np.min(values)) + (
        1 if direction == "minimize" else -1), parent=int(np.argmax(values) if direction ==
                                                          "minimize" else np.argmin(values)))
    more = rng.normal(100, 10, 8)
    for v in more:
        add(float(v))
    add(-1e6 if direction == "maximize" else 1e6, step=16)  # another rung
    pruned = add(-50.0 if direction == "minimize" else 500.0, state=TrialState.PRUNED)
    over = add(-60.0 if direction == "minimize" else 600.0, violated=True)  # over a constraint
    feasible = np.concatenate([values, more])
    ranked = np.sort(feasible) if direction == "minimize" else -np.sort(-feasible)
    threshold = ranked[4]
    for v in rng.normal(100, 10, 40):
        assert asks(float(v)) == bool(worse(v, threshold)), (v, threshold)
        a, b = (int(i) for i in rng.choice(12, 2, replace=False))
        assert asks(float(v), parent=a) == bool(worse(v, feasible[a]))
        best = min(feasible[a], feasible[b]) if direction == "minimize" else max(feasible[a],
                                                                                 feasible[b])
        assert asks(float(v), parents=[a, b]) == bool(worse(v, best))
        # a parent that was pruned or is infeasible does not count: the population decides
        assert asks(float(v), parent=pruned) == bool(worse(v, threshold))
        assert asks(float(v), parent=over) == bool(worse(v, threshold))
    assert not asks(float(threshold))  # ties go on
    good = int(np.argmin(feasible) if direction == "minimize" else np.argmax(feasible))
    assert not asks(float(feasible[good]), parent=good)
    assert asks(float("nan"))


# ------------------------------------------------------------------------------- settings
def test_default_and_parsed_rungs():
    assert default_rungs(32) == (8, 16)
    assert default_rungs(1000) == (8, 16, 32, 64, 128, 256, 512)
    assert default_rungs(8) == ()
    assert parse_rungs("4,8", 16) == (4, 8) and parse_rungs(None, 64) == (8, 16, 32)
    # the population pruner: one rung, the rest of a passing child's images in one piece
    assert default_rungs(32, "population") == (8,) and default_rungs(8, "population") == ()
    assert parse_rungs("auto", 64, "population") == (8,)
    for bad in ("8,4", "1,4", "4,16", "four"):
        with pytest.raises(FlexoptError, match=r"rungs .* invalid"):
            parse_rungs(bad, 16)
    with pytest.raises(FlexoptError,
                       match="pruner 'fast' is invalid; allowed: none, population, median"):
        make_pruner("fast", (8,), 16)
    with pytest.raises(FlexoptError, match="pruning at rungs needs one objective"):
        Objective(SPACE, None, "ddim", None, multi_objective=True, rungs=(8,))
    cfg = StudyConfig.from_dict({"pruner": "median", "space": {"segments": [3], "branches": [1],
                                 "intervals": [1]}, "rfid": {"rungs": [4, 8]}})
    assert cfg.pruner == "median" and cfg.rungs == (4, 8)
    with pytest.raises(FlexoptError, match="pruner 'x' is invalid"):
        StudyConfig.from_dict({"pruner": "x", "space": {"segments": [3], "branches": [1],
                                                        "intervals": [1]}})


# ------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


def test_a_12_trial_hybrid_search_evaluates_12_searched_candidates(model_dir, tmp_path,
                                                                   inception_weights):
    """The issue's case: `--space hybrid --budget 3x --t-ref 30 --n-trials 12` ran 0 searched
    candidates (its 12 places went to baselines, 7 of them over the budget)."""
    storage = f"sqlite:///{tmp_path / 'h.db'}"
    r = CliRunner().invoke(main, [str(a) for a in (
        "search", "--model", model_dir, "--space", "hybrid", "--budget", "3x", "--t-ref", 30,
        "--branches", "1,2", "--n-trials", 12, "--num-images", 8, "--pruner", "population",
        "--rungs", 4,
        "--batch-size", 4, "--storage", storage, "--study-name", "h", "--device", "cpu",
        "--cache-dir", tmp_path / "cache", "--inception-weights", inception_weights,
        "--no-artifacts", "--search-seed", 0)])
    assert r.exit_code == 0, r.output
    assert "pruner: population, candidates scored on 4 → 8 images" in r.output
    study = optuna.load_study(study_name="h", storage=storage)
    counts = TrialCounts.of_study(study)
    assert counts.searched == 12 and counts.baselines > 0
    assert re.search(rf"in all 12 searched candidates( \(\d+ stopped at a rung\))?, "
                     rf"{counts.baselines} baselines", r.output)
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    # by default only baselines under the budget are evaluated
    assert all(t.constraints["avg_macs"] <= 0 for t in done if "baseline" in t.user_attrs)


@pytest.mark.parametrize("args, message", [
    (["--pruner", "fast"], "Invalid value for '--pruner'"),
    (["--pruner", "halving", "--rungs", "8,4"],
     "rungs 8,4 are invalid for 8 images per candidate; allowed: increasing image counts from "
     "2 to 7"),
    (["--pruner", "median", "--multi-objective"],
     "--pruner median with --multi-objective: Optuna's pruners compare one objective; "
     "allowed: --pruner none"),
])
def test_bad_pruning_values_are_one_line(model_dir, tmp_path, args, message):
    r = CliRunner().invoke(main, [str(a) for a in (
        "search", "--model", model_dir, "--budget", "1.5x", "--segments", "3", "--branches", "1",
        "--intervals", "1,2", "--t-ref", 6, "--num-images", 8, "--n-trials", 2, "--storage",
        f"sqlite:///{tmp_path / 'b.db'}", "--device", "cpu", "--no-artifacts", *args)])
    assert r.exit_code == 2 and message in r.output, r.output
    assert "Traceback" not in r.output
