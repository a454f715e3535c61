"""Timestep search spaces (issue 16): encoding, validity of mutation and crossover, baselines,
exact size, and AutoDiffusion's evolutionary search with `FlexEvolutionSampler`."""

from __future__ import annotations

import itertools
import math
import random

import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase

from flexopt.errors import FlexoptError
from flexopt.search.sampler import CostLimit, FlexEvolutionSampler, candidate_key
from flexopt.search.strategies import autodiffusion_children, fill_child
from flexopt.space.schedule import PlacedStep, Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.timestep import Placement, TimestepSpace
from flexopt.testing import SyntheticPlacementProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)

TIMESTEPS = TimestepSpace((4, 6, 8), t_ref=20, train_timesteps=100)
HYBRID = TimestepSpace((4, 6, 8), branches=(1, 2, 3), t_ref=20, train_timesteps=100)
SPACES = pytest.mark.parametrize("space", [TIMESTEPS, HYBRID], ids=["timesteps", "hybrid"])


class TestOptunaBasic(BasicSamplerTestCase):
    """Optuna's sampler test-suite over a hybrid space: other params still work."""

    @pytest.fixture
    def sampler(self):
        return lambda: FlexEvolutionSampler(HYBRID, seed=0, population_size=3)


def cost(c: Placement) -> float:
    """A MACs-like cost: full 1, partial 0.1 + 0.2 · branch."""
    return sum(1.0 if b == 0 else 0.1 + 0.2 * b for b in c.branches)


def assert_valid(space: TimestepSpace, c: Placement) -> None:
    ts = c.timesteps
    assert c.k in space.steps
    assert all(0 <= t < space.train_timesteps for t in ts)
    assert all(a > b for a, b in itertools.pairwise(ts)), ts
    assert c.steps[0].branch == 0
    assert all(b in (0, *space.branches) for b in c.branches)
    space.check(c)


def test_kind_sizes_placement_basics():
    assert TIMESTEPS.kind == "timesteps" and HYBRID.kind == "hybrid"
    assert SearchSpace((4, 5), (1,), (1,)).kind == "segments"
    assert SearchSpace((4, 5), (1,), (1,)).sizes == (4, 5)
    assert HYBRID.sizes == (4, 6, 8)
    p = Placement([(99, 0), (50, 2), PlacedStep(10), 3])
    assert p.k == p.nfe == 4 and p.timesteps == (99, 50, 10, 3)
    assert str(p) == "99F 50P2 10F 3F"
    with pytest.raises(FlexoptError, match="step count K choice 0 is below 1"):
        TimestepSpace((0, 4))
    with pytest.raises(FlexoptError, match="exceeds"):
        TimestepSpace((4,), train_timesteps=3)


def test_size_matches_enumeration_on_tiny_space():
    for space in (TimestepSpace((1, 2, 3), train_timesteps=5),
                  TimestepSpace((1, 3), branches=(1, 2), train_timesteps=5)):
        all_cands = set()
        for k in space.steps:
            for ts in itertools.combinations(range(space.train_timesteps - 1, -1, -1), k):
                for types in itertools.product((0, *space.branches), repeat=k):
                    c = Placement(tuple(zip(ts, types, strict=True)))
                    if space.contains(c):
                        all_cands.add(c)
        assert space.size == len(all_cands)
        assert isinstance(space.size, int)
    assert TimestepSpace((10,)).size == math.comb(1000, 10)


@SPACES
def test_sample_is_valid_and_uniform_on_tiny_space(space):
    rng = random.Random(0)
    for _ in range(200):
        assert_valid(space, space.sample(rng))
        assert space.sample(rng, 4).k == 4
    tiny = TimestepSpace((1, 2), branches=space.branches[:1], train_timesteps=4)
    counts: dict[Placement, int] = {}
    for _ in range(8000):
        c = tiny.sample(rng)
        counts[c] = counts.get(c, 0) + 1
    assert len(counts) == tiny.size
    expected = 8000 / tiny.size
    assert all(abs(n - expected) < 0.25 * expected for n in counts.values())
    with pytest.raises(FlexoptError, match="step count K 5 is not a choice"):
        space.sample(rng, 5)


@SPACES
def test_params_round_trip_and_fixed_distributions(space):
    rng = random.Random(1)
    dists = space.distributions()
    for _ in range(200):
        c = space.sample(rng)
        params = space.to_params(c)
        assert space.from_params(params) == c
        assert set(params) <= set(dists)
        for name, value in params.items():
            assert dists[name]._contains(dists[name].to_internal_repr(value))
    assert ("step_0_branch" in dists) == (space.kind == "hybrid")


@SPACES
def test_suggest_with_a_real_optuna_study(space):
    cands = [space.sample(random.Random(s)) for s in range(3)]
    study = optuna.create_study()
    for c in cands:
        study.enqueue_trial(space.to_params(c))
    got = []
    study.optimize(lambda t: (got.append(space.suggest(t)), 0.0)[1], n_trials=3)
    assert got == cands
    assert [space.from_params(t.params) for t in study.trials] == cands


def test_bad_params_name_the_value():
    good = HYBRID.to_params(HYBRID.sample(random.Random(0), 4))
    cases = [
        ({"n_steps": 5}, "n_steps 5 is not a choice; allowed: 4,6,8"),
        ({"step_1_t": 100}, "step 1 timestep 100 is out of range"),
        ({"step_2_t": good["step_1_t"]}, f"step 2 timestep {good['step_1_t']} is not below"),
        ({"step_0_branch": 2}, "step 0 branch 2 is partial"),
        ({"step_3_branch": 7}, "step 3 branch 7 is not a choice; allowed: 0 \\(full\\) or 1,2,3"),
        ({"step_3_t": "x"}, "step_3_t 'x' is not an integer"),
    ]
    for change, message in cases:
        with pytest.raises(FlexoptError, match=message):
            HYBRID.from_params(good | change)
    with pytest.raises(FlexoptError, match="lack 'step_3_branch'"):
        HYBRID.from_params({k: v for k, v in good.items() if k != "step_3_branch"})
    with pytest.raises(FlexoptError, match=r"step 1 branch 2 is not a choice; allowed: 0 \(full\)"):
        TIMESTEPS.check(Placement([(90, 0), (80, 2), (70, 0), (60, 0)]))


@SPACES
def test_mutation_stays_valid_and_in_the_choices(space):
    rng = random.Random(2)
    changed_k = changed_t = 0
    for seed in range(300):
        parent = space.sample(random.Random(seed))
        for n in (1, 3):
            child, record = space.mutate(parent, rng, n, prob=0.1)
            assert_valid(space, child)
            assert child != parent and len(record) >= n
            assert all(isinstance(str(r), str) and str(r) for r in record)
            changed_k += child.k != parent.k
            changed_t += child.k == parent.k and child.timesteps != parent.timesteps
    assert changed_k > 50 and changed_t > 50


@SPACES
def test_directed_mutation_is_really_lighter_or_heavier(space):
    rng = random.Random(3)
    for seed in range(300):
        parent = space.sample(random.Random(seed))
        for mode, better in (("lighter", lambda a, b: a < b), ("heavier", lambda a, b: a > b)):
            try:
                child, record = space.mutate(parent, rng, 1, modes=(mode,))
            except FlexoptError as err:
                assert f"already the {'lightest' if mode == 'lighter' else 'heaviest'}" in str(err)
                continue
            assert_valid(space, child)
            assert better(cost(child), cost(parent)), (mode, parent, child, record)
            assert all(r.mode == mode for r in record)
    lightest = space.lightest()
    assert_valid(space, lightest)
    with pytest.raises(FlexoptError, match="already the lightest"):
        space.mutate(lightest, rng, 1, modes=("lighter",))
    heaviest = Placement(range(80, 0, -10))  # K = 8, all full
    with pytest.raises(FlexoptError, match="already the heaviest"):
        space.mutate(heaviest, rng, 1, modes=("heavier",))


@SPACES
def test_crossover_stays_valid_and_takes_from_both_parents(space):
    rng = random.Random(4)
    for seed in range(300):
        a, b = space.sample(random.Random(seed)), space.sample(random.Random(seed + 10_000))
        child = space.crossover(a, b, rng)
        assert_valid(space, child)
        assert child.k in (a.k, b.k)
        steps = {*a.steps, *b.steps}
        for i, s in enumerate(child.steps):
            if i == 0:
                assert s.timestep in a.timesteps + b.timesteps
            else:
                assert s in steps  # a timestep keeps the type of a parent it came from


def test_fill_adds_partial_steps_at_the_gaps_midpoints():
    space = TimestepSpace(tuple(range(4, 13)), branches=(1, 2, 3), t_ref=20, train_timesteps=100)
    parent = Placement([(75, 0), (50, 0), (25, 2), (0, 0)])
    assert space.fill_gaps(parent) == [0, 1, 2]  # nothing below t = 0
    child, record = space.fill(parent, 2, [1, 2])
    assert str(child) == "75F 50F 37P2 25P2 12P2 0F"
    assert [str(r) for r in record] == ["K 4->6 (+37P2)", "K 4->6 (+12P2)"]
    assert_valid(space, child)
    assert set(parent.steps) <= set(child.steps)
    # a gap with no free timestep inside, and the one below the last step
    tight = Placement([(9, 0), (8, 0), (3, 0)])
    assert TimestepSpace((3, 4, 5), (1,), t_ref=20, train_timesteps=100).fill_gaps(tight) == [1, 2]
    for bad, match in (
        (lambda: space.fill(parent, 4, [0]), r"fill branch 4 is not a partial-step choice; "
                                             r"allowed: 1,2,3"),
        (lambda: TIMESTEPS.fill(Placement([75, 50, 25, 0]), 1, [0]),
         r"allowed: none \(not a hybrid space\)"),
        (lambda: space.fill(parent, 1, [0, 0]), r"fill gaps 0,0 are invalid; allowed: distinct"),
        (lambda: space.fill(parent, 1, [3]), r"fill gaps 3 are invalid; .* 0,1,2"),
        (lambda: space.fill(parent, 1, []), r"filling 0 gaps makes 4 steps"),
        (lambda: HYBRID.fill(parent, 1, [0]), r"filling 1 gaps makes 5 steps; .* up to 8"),
    ):
        with pytest.raises(FlexoptError, match=match):
            bad()


def test_fill_child_spends_the_parents_room_under_the_budget():
    space = TimestepSpace(tuple(range(4, 21)), branches=(1, 2, 3), t_ref=20, train_timesteps=100)
    parent = Placement([87, 75, 62, 50, 37, 25, 12, 0])  # 8 full steps: cost 8, 7 gaps
    rng = random.Random(0)
    limit = CostLimit(cost, 10.0)  # room under 2 (`cost` above): 6 P1, 3 P2 or 2 P3
    most = {1: 6, 2: 3, 3: 2}
    seen_branches, seen_sizes, ends = set(), set(), set()
    for _ in range(60):
        child, record = fill_child(space, parent, rng, limit)
        assert_valid(space, child)
        assert limit(child) and set(parent.steps) <= set(child.steps)
        added = [s for s in child.steps if s not in parent.steps]
        branch = added[0].branch
        assert {s.branch for s in added} == {branch} and len(record) == len(added)
        # between half and all of the most that fit, in consecutive gaps
        assert (most[branch] + 1) // 2 <= len(added) <= most[branch]
        gaps = [i for i, s in enumerate(child.steps) if s in added]
        assert gaps == list(range(gaps[0], gaps[0] + 2 * len(added), 2))
        seen_branches.add(branch)
        seen_sizes.add(len(added))
        ts = [s.timestep for s in added]  # the first gap is 87..75, the last 12..0
        ends.update({"noisy"} if max(ts) > 75 else set(), {"clean"} if min(ts) < 12 else set())
    assert seen_branches == {1, 2, 3} and len(seen_sizes) >= 4
    assert ends == {"noisy", "clean"}  # runs anchored at either end (and elsewhere)
    # no room: the parent is at the budget
    assert fill_child(space, parent, rng, CostLimit(cost, 8.25)) is None


def test_fill_children_come_from_the_best_parent_with_room():
    space = TimestepSpace(tuple(range(4, 21)), branches=(1, 2, 3), t_ref=20, train_timesteps=100)
    limit = CostLimit(cost, 10.0)
    full = Placement([87, 75, 62, 50, 37, 25, 12, 0])  # cost 8: room for partial steps
    no_room = Placement([95, 87, 80, 75, 62, 50, (43, 3), 37, 25, 12])  # 9.7: one P1 is 10
    parents = []
    for number, cand in enumerate((no_room, full, Placement([90, 60, 30, 0]))):
        trial = optuna.trial.create_trial(value=float(number))
        trial.number = number
        parents.append((trial, cand))
    assert limit(no_room) and fill_child(space, no_room, random.Random(0), limit) is None
    children = autodiffusion_children(
        space, parents, random.Random(0), limit, set(), n_c=6, n_m=1, max_tries=50,
        crossover_prob=0.5, mutation_prob=0.1, fill_prob=1.0)
    assert len(children) == 6
    for child, attrs in children:
        assert attrs["origin"] == "fill" and attrs["parent"] == 1
        assert set(full.steps) < set(child.steps) and limit(child)


def test_baselines_equal_spaced_timesteps():
    from flexopt.space import schedule as scheduler

    space = TimestepSpace((5, 10, 20), t_ref=50, train_timesteps=1000, offset=1)
    base = space.baselines()
    assert list(base) == [f"{f} T={k}" for f in ("teacher", "ddim-quad") for k in (5, 10, 20)]
    for k in (5, 10, 20):
        assert base[f"teacher T={k}"].timesteps == tuple(
            scheduler.spaced_timesteps(k, 1000, "uniform", 1))
        assert base[f"ddim-quad T={k}"].timesteps == tuple(
            scheduler.spaced_timesteps(k, 1000, "quadratic", 1))
    assert all(b == 0 for c in base.values() for b in c.branches)


def test_default_seeds_are_the_heaviest_feasible_of_each_family():
    limit = CostLimit(cost, 6.5)  # K = 4 and 6 fit, K = 8 does not
    sampler = FlexEvolutionSampler(HYBRID, limit, seed=0)
    assert list(sampler.seeds) == ["teacher T=6", "ddim-quad T=6"]


def test_describe_and_schedule_round_trip():
    d = HYBRID.describe()
    assert d["kind"] == "hybrid" and d["size"] == HYBRID.size and d["branches"] == [1, 2, 3]
    c = HYBRID.sample(random.Random(5))
    sched = HYBRID.schedule(c, sampler="ddim", note="x")
    assert sched.steps == c.steps and sched.t_ref == HYBRID.t_ref
    assert HYBRID.represent(sched) == c
    assert TIMESTEPS.represent(sched) == (c if all(b == 0 for b in c.branches) else None)
    seg = SearchSpace((4,), (1,), (1,), t_ref=20)
    assert seg.represent(sched) is None
    assert HYBRID.represent(Schedule.full(20)) is None


# ------------------------------------------------------------------------ evolutionary search
def _run(problem, n_trials, seed, storage=None, study_name=None, **kw):
    sampler = FlexEvolutionSampler(
        problem.space, CostLimit(problem.cost, problem.budget + 1e-9), seed=seed,
        **({"population_size": 12, "n_c": 4, "top_k": 5, "mutation_prob": 0.2} | kw),
    )
    study = optuna.create_study(
        sampler=sampler, storage=storage, study_name=study_name, load_if_exists=True
    )
    study.optimize(problem.objective, n_trials=n_trials)
    return study


@SPACES
def test_evolution_improves_never_repeats_and_resumes(space):
    problem = SyntheticPlacementProblem.make(space, seed=7, slack=1.2)
    # The sampler's state lives in the storage (test_sampler.py checks the same over sqlite).
    storage = optuna.storages.InMemoryStorage()
    _run(problem, 60, seed=1, storage=storage, study_name="s")
    study = _run(problem, 60, seed=2, storage=storage, study_name="s")  # a restarted search
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) >= 120
    origins = [t.user_attrs["origin"] for t in done]
    # the initial population is not redrawn on resume
    assert origins.count("random") + origins.count("seed") == 12
    assert origins.count("crossover") > 10 and origins.count("mutation") > 10
    cands = [space.from_params(t.params) for t in done]
    keys = [candidate_key(space, c) for c in cands]
    assert len(set(keys)) == len(keys), "a candidate was evaluated twice"
    assert all(problem.feasible(c) for c in cands), "an over-budget candidate was proposed"
    start = min(t.value for t in done if t.user_attrs["origin"] in ("random", "seed"))
    assert study.best_value < 0.75 * start
    for t in done:
        if t.user_attrs["origin"] == "crossover":
            assert len(t.user_attrs["parents"]) == 2
        if t.user_attrs["origin"] in ("mutation", "fill"):
            assert isinstance(t.user_attrs["parent"], int) and t.user_attrs["mutation"]


@pytest.mark.parametrize("fill_prob", [0.0, 0.5])
def test_fill_children_over_a_hybrid_space(fill_prob):
    space = TimestepSpace(tuple(range(4, 13)), branches=(1, 2, 3), t_ref=20, train_timesteps=100)
    # the target is the 7-step teacher plus partial steps in its last three gaps (the shape of
    # the embedded model's rFID winner at 2.5x); the budget leaves room for more
    target = Placement([90, 75, 60, 45, (37, 2), 30, (22, 2), 15, (7, 2), 0])
    probe = SyntheticPlacementProblem(space, target, 0.0)
    problem = SyntheticPlacementProblem(space, target, 1.2 * probe.cost(target))
    study = _run(problem, 60, seed=0, fill_prob=fill_prob)
    fills = [t for t in study.trials if t.user_attrs.get("origin") == "fill"]
    assert (len(fills) > 5) == (fill_prob > 0)
    for t in fills:  # a run of partial steps of one branch added to its parent, under the budget
        parent = space.from_params(study.trials[t.user_attrs["parent"]].params)
        child = space.from_params(t.params)
        added = set(child.steps) - set(parent.steps)
        assert set(parent.steps) < set(child.steps) and problem.feasible(child)
        assert len({s.branch for s in added}) == 1 and 0 not in {s.branch for s in added}
        assert len(t.user_attrs["mutation"]) == len(added)


def test_random_population_spreads_up_to_the_budget():
    problem = SyntheticPlacementProblem.make(HYBRID, seed=3)
    limit = CostLimit(problem.cost, problem.budget)
    sampler = FlexEvolutionSampler(HYBRID, limit, seed=0)
    costs = [problem.cost(sampler.random_feasible(set(), sampler._spread(i))) for i in range(20)]
    assert all(c < problem.budget for c in costs)
    assert max(costs) > 0.85 * problem.budget and min(costs) < 0.75 * problem.budget
