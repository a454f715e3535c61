"""FlexEvolutionSampler: Optuna's own sampler tests, the algorithm on a synthetic problem,
shared storage, resumption and enqueued trials."""

from __future__ import annotations

import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, MultiObjectiveSamplerTestCase

from flexopt.errors import FlexoptError
from flexopt.search.sampler import FlexEvolutionSampler, candidate_key
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate
from flexopt.testing import SyntheticProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)


class TestOptunaBasic(BasicSamplerTestCase):
    """Optuna's sampler test-suite: params outside the segment-wise space still work."""

    @pytest.fixture
    def sampler(self):
        return lambda: FlexEvolutionSampler(SPACE, seed=0, population_size=3)


class TestOptunaMultiObjective(MultiObjectiveSamplerTestCase):
    @pytest.fixture
    def sampler(self):
        return lambda: FlexEvolutionSampler(SPACE, seed=0, population_size=3)


def _run(problem, n_trials, seed, storage=None, study_name=None, **kw):
    sampler = FlexEvolutionSampler(
        problem.space, problem.feasible, seed=seed,
        **({"population_size": 10, "n_p": 5, "n_c": 3, "n_u": 30} | kw),
    )
    study = optuna.create_study(
        sampler=sampler, storage=storage, study_name=study_name, load_if_exists=True
    )
    study.optimize(problem.objective, n_trials=n_trials)
    return study


@pytest.mark.parametrize("seed", [0, 1])
def test_finds_known_optimum(seed):
    problem = SyntheticProblem.make(SPACE, seed=100 + seed)
    study = _run(problem, 400, seed)
    assert study.best_value == 0.0
    assert SPACE.canonical(SPACE.from_params(study.best_params)) == SPACE.canonical(problem.target)


def test_every_proposal_is_feasible_and_new_and_children_match_their_mutation():
    problem = SyntheticProblem.make(SPACE, seed=5)
    study = _run(problem, 120, seed=3)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    keys = [candidate_key(SPACE, SPACE.from_params(t.params)) for t in trials]
    assert len(set(keys)) == len(keys), "a candidate was evaluated twice"
    children = 0
    for t in trials:
        c = SPACE.from_params(t.params)
        assert problem.feasible(c), f"trial {t.number} is over budget"
        if t.user_attrs["origin"] != "mutation":
            continue
        children += 1
        parent = SPACE.from_params(study.trials[t.user_attrs["parent"]].params)
        (m,) = t.user_attrs["mutation"]  # n_m = 1: one recorded change
        if "split" in m or "merge" in m:
            assert c.n_segments != parent.n_segments
        else:
            seg, dim, change = m.split()[1], m.split()[2], m.split()[3]
            old, new = map(int, change.split("->"))
            diff = [i for i, (a, b) in enumerate(zip(parent.segments, c.segments, strict=True))
                    if a != b]
            assert diff == [int(seg)]
            assert getattr(parent.segments[int(seg)], dim) == old
            assert getattr(c.segments[int(seg)], dim) == new
    assert children > 50


def test_state_lives_in_storage_resume_and_two_workers(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    problem = SyntheticProblem.make(SPACE, seed=9)
    _run(problem, 25, seed=1, storage=storage, study_name="s")
    # A fresh sampler object (another worker, or a restarted search) continues the same study.
    _run(problem, 25, seed=2, storage=storage, study_name="s")
    study = _run(problem, 25, seed=3, storage=storage, study_name="s")
    assert len(optuna.get_all_study_names(storage)) == 1
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) >= 75
    origins = [t.user_attrs["origin"] for t in done]
    # the initial population (random draws after the seed baselines) is not redrawn on resume
    assert origins.count("random") + origins.count("seed") == 10
    keys = [candidate_key(SPACE, SPACE.from_params(t.params)) for t in done]
    assert len(set(keys)) == len(keys)


def test_enqueued_trial_is_respected():
    problem = SyntheticProblem.make(SPACE, seed=2)
    sampler = FlexEvolutionSampler(SPACE, problem.feasible, seed=0, population_size=2)
    study = optuna.create_study(sampler=sampler)
    mine = Candidate(((3, 3),) * 6)
    study.enqueue_trial(SPACE.to_params(mine), user_attrs={"baseline": "mine"})
    study.optimize(problem.objective, n_trials=3)
    assert SPACE.from_params(study.trials[0].params) == mine
    assert study.trials[0].user_attrs["baseline"] == "mine"


def test_multi_objective_study_runs():
    problem = SyntheticProblem.make(SPACE, seed=4)
    sampler = FlexEvolutionSampler(SPACE, seed=0, population_size=5, n_p=3, n_c=2)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        score = problem.objective(trial)
        return score, trial.user_attrs["cost"]

    study.optimize(objective, n_trials=40)
    assert len(study.best_trials) >= 1
    assert any(t.user_attrs.get("origin") == "mutation" for t in study.trials)


def test_impossible_budget_is_a_clear_error():
    sampler = FlexEvolutionSampler(SPACE, lambda c: False, seed=0)
    with pytest.raises(FlexoptError, match="even the lightest"):
        sampler.random_feasible()


def test_tight_budget_still_gets_feasible_candidates():
    problem = SyntheticProblem(SPACE, SPACE.lightest(), budget=4.5)  # only N=4, mostly light
    sampler = FlexEvolutionSampler(SPACE, problem.feasible, seed=0, max_tries=5)
    for _ in range(20):
        assert problem.feasible(sampler.random_feasible())
