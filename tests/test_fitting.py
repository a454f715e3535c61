"""A space fitted to its budget, a first population spread up to it, and the baselines the space
runs exactly joining that population (issue: "a search that spends its budget")."""

from __future__ import annotations

import random
import statistics

import optuna
import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.run.cost import MacsProfile, candidate_avg_macs
from flexopt.run.fitting import cost_range, fit_space, fitted_segments
from flexopt.search.baselines import baseline_schedules, enqueue_baselines, representable
from flexopt.search.config import StudyConfig
from flexopt.search.sampler import CostLimit, FlexEvolutionSampler, candidate_key
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment

# The embedded teacher's profile (flexopt macs flexopt:fashion-mnist), branches 1..3.
PROFILE = MacsProfile(175_960_000, (7_900_000, 20_230_000, 35_170_000))
T_REF = 50


@pytest.mark.parametrize("speedup", [1.3, 1.6, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0])
@pytest.mark.parametrize("intervals", [(1, 2), (1, 2, 3), (1, 2, 3, 4, 5)])
def test_fitted_space_puts_the_budget_inside_its_cost_range(speedup, intervals):
    limit = PROFILE.full / speedup
    fit = fit_space(PROFILE, T_REF, limit, (1, 2, 3), intervals)
    space = fit.space
    assert fit.warning is None
    assert fit.costs.fits(limit)
    assert fit.costs.cheapest < limit <= fit.costs.heaviest / 0.9
    # the most segments: the fewer-step teacher on the grid is just under the budget
    n_max = space.segments[-1]
    teacher = Candidate((Segment(1, 1),) * n_max)
    assert candidate_avg_macs(teacher, PROFILE, T_REF) < limit
    assert (n_max + 1) * PROFILE.full / T_REF >= limit
    # the fewest: its heaviest candidate still reaches 0.9x the budget, one fewer would not
    n_min = space.segments[0]
    heavy = PROFILE.full + (intervals[-1] - 1) * PROFILE.partial[2]
    assert n_min * heavy >= 0.9 * limit * T_REF or n_min == n_max
    if n_min > 1 and n_min < n_max:
        assert (n_min - 1) * heavy < 0.9 * limit * T_REF


def test_intervals_without_1_count_their_partial_steps():
    """SD 1.5's Table 8 space (intervals 2, 3): every segment has a partial step."""
    limit = PROFILE.full / 2
    fit = fit_space(PROFILE, T_REF, limit, (1, 3), (2, 3))
    assert fit.warning is None and fit.costs.fits(limit)
    n_max = fit.space.segments[-1]
    assert fit.costs.cheapest == candidate_avg_macs(fit.space.lightest(), PROFILE, T_REF)
    assert candidate_avg_macs(Candidate(((1, 2),) * n_max), PROFILE, T_REF) < limit
    assert candidate_avg_macs(Candidate(((1, 2),) * (n_max + 1)), PROFILE, T_REF) >= limit


def test_explicit_space_that_cannot_reach_its_budget_warns_with_numbers():
    limit = PROFILE.full / 2
    fit = fit_space(PROFILE, T_REF, limit, (1, 2, 3), (1, 2, 3, 4, 5), segments=(8, 9, 10))
    assert fit.space.segments == (8, 9, 10)
    assert fit.warning is not None
    heaviest = cost_range(fit.space, PROFILE).heaviest
    assert heaviest < 0.9 * limit
    suggested = fitted_segments(PROFILE, T_REF, limit, (1, 2, 3), (1, 2, 3, 4, 5))
    assert f"--segments {suggested[0]}-{suggested[-1]}" in fit.warning
    assert "63.33M" in fit.warning and "87.98M" in fit.warning  # heaviest, budget


def test_explicit_space_over_budget_is_refused_with_a_suggestion():
    with pytest.raises(FlexoptError, match=r"even the lightest.*--segments \d+-\d+"):
        fit_space(PROFILE, T_REF, PROFILE.full / 4, (1, 2, 3), (1, 2, 3), segments=(20, 21))


def test_budget_below_one_full_step_is_refused():
    with pytest.raises(FlexoptError, match="affords not even one segment"):
        fit_space(PROFILE, T_REF, PROFILE.full / T_REF * 0.9)


def test_config_segments_auto(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('budget = "2x"\nt_ref = 50\n[space]\nsegments = "auto"\nbranches = [1, 2]\n'
                 'intervals = [1, 2]\n')
    cfg = StudyConfig.load(p)
    assert cfg.choices.auto and cfg.choices.branches == (1, 2)
    with pytest.raises(FlexoptError, match="needs a budget and a model"):
        _ = cfg.space
    p.write_text('[space]\nsegments = "all"\nbranches = [1]\nintervals = [1]\n')
    with pytest.raises(FlexoptError, match='"auto"'):
        StudyConfig.load(p)


# ----------------------------------------------------------------------------- first population
SPACE = fit_space(PROFILE, T_REF, PROFILE.full / 2.5, (1, 2, 3), (1, 2, 3)).space
LIMIT = PROFILE.full / 2.5


def _cost(c: Candidate) -> float:
    return candidate_avg_macs(c, PROFILE, T_REF)


def test_space_baselines_are_the_teacher_and_deepcache_it_runs_exactly():
    space = SearchSpace((8, 10, 12), (1, 2), (1, 5), t_ref=50)
    names = space.baselines()
    assert names["teacher T=12 (grid 60)"] == Candidate(((1, 1),) * 12)
    assert names["deepcache n=5 b=2"] == Candidate(((2, 5),) * 10)
    # DeepCache-uniform's own schedule is exactly that candidate
    sched = Schedule.uniform(50, 5, 2)
    assert representable(space, sched) == names["deepcache n=5 b=2"]
    assert representable(space, Schedule.uniform(50, 2, 2)) is None  # another grid


def test_default_seeds_are_the_heaviest_feasible_baselines():
    sampler = FlexEvolutionSampler(SPACE, CostLimit(_cost, LIMIT), seed=0)
    (name, teacher), = [(n, c) for n, c in sampler.seeds.items() if n.startswith("teacher")]
    assert name == "teacher T=19 (grid 57)"
    assert teacher.n_segments == SPACE.segments[-1] == 19 and _cost(teacher) < LIMIT
    assert not any(n.startswith("deepcache") for n in sampler.seeds)  # t_ref 50 % L=3 != 0
    with pytest.raises(FlexoptError, match="not feasible"):
        FlexEvolutionSampler(SPACE, CostLimit(_cost, LIMIT),
                             seeds={"x": Candidate(((3, 3),) * 19)})


def test_first_population_is_spread_up_to_the_budget():
    """The spread draws cover 0.6x-1x the budget evenly, over several N-segment choices."""
    spread = FlexEvolutionSampler(SPACE, CostLimit(_cost, LIMIT), seed=0)
    draws = [spread.random_feasible(set(), spread._spread(i)) for i in range(30)]
    costs = [_cost(c) for c in draws]
    assert all(c < LIMIT for c in costs)
    assert max(costs) > 0.95 * LIMIT and min(costs) < 0.7 * LIMIT
    deciles = statistics.quantiles(costs, n=10)
    assert deciles[0] < 0.7 * LIMIT and deciles[-1] > 0.93 * LIMIT
    assert len({c.n_segments for c in draws}) >= 4
    # without the cost, draws are made lighter until they fit: they pile just under the budget
    plain = FlexEvolutionSampler(SPACE, lambda c: _cost(c) < LIMIT, seed=0)
    plain_costs = [_cost(plain.random_feasible()) for _ in range(30)]
    assert statistics.pstdev(costs) > 1.5 * statistics.pstdev(plain_costs)


def test_spread_targets_in_a_space_below_its_budget_stay_feasible():
    """The old demo space (its heaviest is under the budget): the targets above what it can
    reach give its heaviest candidates, still feasible, and spread beyond the uniform median."""
    space = SearchSpace((8, 9, 10), (1, 2, 3), (1, 2, 3, 4, 5), t_ref=50)
    spread = FlexEvolutionSampler(space, CostLimit(_cost, LIMIT), seed=0)
    costs = [_cost(spread.random_feasible(set(), spread._spread(i))) for i in range(20)]
    assert all(c < LIMIT for c in costs)
    assert statistics.median(costs) > cost_range(space, PROFILE).median


def _objective(space, value_of):
    def objective(trial: optuna.Trial) -> float:
        return value_of(space.suggest(trial))
    return objective


def test_seeds_join_the_population_and_the_search_never_ends_worse():
    """A synthetic score where the fewer-step teacher is good: it is evaluated first, becomes a
    parent, and the search's best is never worse than it."""
    rng = random.Random(0)
    noise = {}

    def value_of(c: Candidate) -> float:
        key = str(SPACE.canonical(c))
        noise.setdefault(key, rng.random())
        teacher = c.n_segments == 19 and c.nfe == 19
        return 0.5 if teacher else 1.0 / _cost(c) * 1e8 + 0.3 * noise[key]

    # n_p covers the whole population: the tournament's winner is the population's best
    sampler = FlexEvolutionSampler(SPACE, CostLimit(_cost, LIMIT), population_size=6, n_p=50,
                                   n_c=2, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(_objective(SPACE, value_of), n_trials=30)
    first = study.trials[0]
    assert first.user_attrs == {"origin": "seed", "baseline": "teacher T=19 (grid 57)"}
    assert study.best_value <= first.value
    assert any(t.user_attrs.get("parent") == 0 for t in study.trials)  # it became a parent


def test_enqueued_representable_baselines_are_candidates(tmp_path):
    space = SearchSpace((8, 10), (1, 2), (1, 5), t_ref=50)
    limit = PROFILE.full / 2

    def avg(s: Schedule) -> float:
        return _cost(s.candidate) * T_REF / s.t_ref

    bl = baseline_schedules(space, "ddim", PROFILE.full, avg, limit, mode="all")
    study = optuna.create_study()
    assert enqueue_baselines(study, bl, space) == len(bl)
    assert enqueue_baselines(study, bl, space) == 0  # never twice
    waiting = study.get_trials(states=[optuna.trial.TrialState.WAITING])
    dc = [t for t in waiting if t.user_attrs["baseline"] == "deepcache n=5 b=2"]
    assert dc[0].system_attrs["fixed_params"] == space.to_params(Candidate(((2, 5),) * 10))
    other = [t for t in waiting if t.user_attrs["baseline"] == "deepcache n=2 b=1"]
    assert "schedule" in other[0].user_attrs  # not in the space: runs its own schedule
    # all mode: under-budget first, heaviest first; then the over-budget ones, lightest first
    costs = [avg(s) for _, s in bl]
    under = [c for c in costs if c < limit]
    assert costs[:len(under)] == sorted(under, reverse=True)
    assert costs[len(under):] == sorted(costs[len(under):])
    best = baseline_schedules(space, "ddim", PROFILE.full, avg, limit, mode="best")
    assert sorted(n.split()[0] for n, _ in best) == ["deepcache", "teacher"]
    assert all(avg(s) < limit for _, s in best)
    assert max(avg(s) for n, s in bl if n.startswith("teacher") and avg(s) < limit) in [
        avg(s) for _, s in best]
    assert baseline_schedules(space, "ddim", PROFILE.full, avg, limit, mode="none") == []


def test_sampler_does_not_propose_a_baseline_already_enqueued():
    space = SearchSpace((8, 10), (1, 2), (1, 5), t_ref=50)
    limit = PROFILE.full / 2
    sampler = FlexEvolutionSampler(space, CostLimit(_cost, limit), population_size=4, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial(space.to_params(Candidate(((1, 1),) * 10)),
                        user_attrs={"baseline": "teacher T=10 (grid 50)", "origin": "seed"})
    study.optimize(_objective(space, lambda c: _cost(c) / 1e6), n_trials=6)
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    keys = [candidate_key(space, space.from_params(t.params)) for t in done]
    assert len(set(keys)) == len(keys)
    assert [t.user_attrs.get("baseline") for t in study.trials[:3]] == [
        "teacher T=10 (grid 50)", "deepcache n=5 b=2", None]


# ----------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


def test_space_command_prints_the_cost_range(model_dir):
    r = CliRunner().invoke(main, ["space", "--segments", "auto", "--branches", "1,2",
                                  "--intervals", "1,2", "--t-ref", "20", "--budget", "2x",
                                  "--model", model_dir])
    assert r.exit_code == 0, r.output
    assert "fitted to it" in r.output and "space cost" in r.output
    assert "cheapest" in r.output and "median" in r.output and "heaviest" in r.output
    r = CliRunner().invoke(main, ["space", "--segments", "2", "--branches", "1",
                                  "--intervals", "1,2", "--t-ref", "20", "--budget", "2x",
                                  "--model", model_dir])
    assert r.exit_code == 0, r.output
    assert "cannot come near the budget" in r.output and "try --segments" in r.output
    r = CliRunner().invoke(main, ["space", "--segments", "auto", "--branches", "1",
                                  "--intervals", "1,2", "--budget", "2x"])
    assert r.exit_code == 2 and "needs a model" in r.output
