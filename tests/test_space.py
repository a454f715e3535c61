"""Search space: exact size, uniform sampling, mutation, Optuna param encoding."""

from __future__ import annotations

import random
from collections import Counter

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexopt.errors import FlexoptError
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment, StepType

PAPER_CIFAR = SearchSpace((19, 20, 21), (1, 2, 3), (1, 2, 3), t_ref=100)


def spaces():
    """Random small spaces, sorted choice lists within sensible ranges."""
    choice = lambda lo, hi, max_size: st.lists(  # noqa: E731
        st.integers(lo, hi), min_size=1, max_size=max_size, unique=True
    ).map(sorted)
    return st.builds(
        SearchSpace, choice(1, 12, 4), choice(1, 12, 4), choice(1, 6, 4), st.integers(1, 200)
    )


def test_paper_cifar_space_size_is_exact():
    assert PAPER_CIFAR.size == 9**19 + 9**20 + 9**21
    assert PAPER_CIFAR.size == 122_927_506_308_242_280_099
    assert PAPER_CIFAR.segment_length == 3
    assert PAPER_CIFAR.grid_lengths == {19: 57, 20: 60, 21: 63}


def test_size_matches_enumeration_on_small_space():
    sp = SearchSpace((1, 2), (1, 3), (2, 3))
    seen = {sp.candidate_at(i) for i in range(sp.size)}
    assert len(seen) == sp.size == 4**1 + 4**2
    assert all(sp.contains(c) for c in seen)


def test_sampling_is_uniform_over_candidates():
    sp = SearchSpace((1, 2), (1, 2), (1, 2))  # 4 + 16 = 20 candidates
    rng = random.Random(0)
    counts = Counter(sp.sample(rng) for _ in range(20_000))
    assert len(counts) == 20
    expected = 20_000 / 20
    # Each bin within 15% of its expectation (binomial sd is ~31, so this is > 4 sd).
    assert all(abs(n - expected) < 0.15 * expected for n in counts.values())


def test_step_types_deepcache_uniform_and_teacher():
    deepcache = Candidate((Segment(3, 5),) * 20)
    types = deepcache.step_types(5)
    assert len(types) == 100
    assert "".join(types) == "FPPPP" * 20
    assert deepcache.nfe == 100
    assert deepcache.slot_branches(5)[:5] == [None, 3, 3, 3, 3]
    teacher = Candidate((Segment(1, 1),) * 100)
    assert teacher.step_types(1) == [StepType.FULL] * 100
    mixed = Candidate(((2, 3), (1, 1), (3, 2)))
    assert mixed.step_string(3) == "FPP|FNN|FPN"
    assert mixed.nfe == 6


@settings(max_examples=200, deadline=None)
@given(spaces(), st.integers(0, 2**32 - 1))
def test_params_round_trip(sp, seed):
    c = sp.sample(random.Random(seed))
    params = sp.to_params(c)
    assert sp.from_params(params) == c
    dists = sp.distributions()
    assert set(params) <= set(dists)
    for name, value in params.items():
        # Every value is a legal choice of a distribution that never depends on the candidate.
        assert dists[name]._contains(dists[name].to_internal_repr(value))


@settings(max_examples=300, deadline=None)
@given(spaces(), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_mutation_valid_and_changes(sp, seed, n_m):
    rng = random.Random(seed)
    parent = sp.sample(rng)
    try:
        child, record = sp.mutate(parent, rng, n_mutations=n_m)
    except FlexoptError:
        # Only a space with nothing to change may refuse.
        assert sp.size == 1
        return
    assert sp.contains(child)
    assert child != parent
    assert record, "a child must say how it differs from its parent"
    for m in record:
        assert m.mode in ("heavier", "lighter")
        assert m.dimension in ("branch", "interval", "n_segments")
        assert (m.new > m.old) == (m.mode == "heavier")


def test_single_mutation_matches_its_record():
    sp = PAPER_CIFAR
    rng = random.Random(7)
    for _ in range(500):
        parent = sp.sample(rng)
        child, (m,) = sp.mutate(parent, rng, n_mutations=1)
        if m.dimension == "n_segments":
            assert child.n_segments == m.new and parent.n_segments == m.old
            assert abs(m.new - m.old) == 1  # 19,20,21 are contiguous
        else:
            assert child.n_segments == parent.n_segments
            pairs = zip(parent.segments, child.segments, strict=True)
            diff = [i for i, (a, b) in enumerate(pairs) if a != b]
            assert diff == [m.segment]
            assert getattr(child.segments[m.segment], m.dimension) == m.new
            assert getattr(parent.segments[m.segment], m.dimension) == m.old


def test_mutation_of_n_segments_uses_next_choice():
    sp = SearchSpace((19, 21, 22), (1, 3, 6), (2, 3))  # non-contiguous N, as Table 8 (Bedroom 90G)
    rng = random.Random(1)
    moves = set()
    for _ in range(2000):
        parent = sp.sample(rng)
        child, record = sp.mutate(parent, rng)
        assert sp.contains(child)
        for m in record:
            if m.dimension == "n_segments":
                moves.add((m.old, m.new))
    assert moves == {(19, 21), (21, 19), (21, 22), (22, 21)}


def test_mutation_skips_branch_moves_without_effect():
    # Interval 1 only: a branch change would not change any step, so N must change.
    sp = SearchSpace((3, 4), (1, 2), (1,))
    child, (m,) = sp.mutate(Candidate(((1, 1),) * 3), random.Random(0))
    assert m.dimension == "n_segments" and child.n_segments == 4


def test_single_candidate_space_cannot_mutate():
    sp = SearchSpace((2,), (1,), (1,))
    with pytest.raises(FlexoptError, match="single candidate"):
        sp.mutate(Candidate(((1, 1), (1, 1))), random.Random(0))


def test_canonical_merges_equivalent_candidates():
    sp = SearchSpace((2,), (1, 2), (1, 2))
    a = Candidate(((1, 1), (2, 2)))
    b = Candidate(((2, 1), (2, 2)))
    assert a != b and sp.canonical(a) == sp.canonical(b)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"segments": ()}, "N-segment choices are empty"),
        ({"branches": (2, 1)}, "branch choices 2,1 must be sorted"),
        ({"intervals": (0, 1)}, "interval choice 0 is below 1"),
        ({"branches": (0,)}, "branch choice 0 is below 1"),
        ({"segments": (3, 3)}, "must be sorted ascending without repeats"),
        ({"t_ref": 0}, "t_ref 0 is invalid"),
    ],
)
def test_bad_choices(kwargs, match):
    args = {"segments": (2, 3), "branches": (1, 2), "intervals": (1, 2), "t_ref": 10} | kwargs
    with pytest.raises(FlexoptError, match=match):
        SearchSpace(**args)


def test_from_params_rejects_out_of_space_values():
    sp = SearchSpace((2,), (1, 2), (1, 2))
    with pytest.raises(FlexoptError, match="branch 5 is not a choice; allowed: 1,2"):
        sp.from_params(
            {
                "n_segments": 2,
                "seg_0_branch": 5,
                "seg_0_interval": 1,
                "seg_1_branch": 1,
                "seg_1_interval": 1,
            }
        )
    with pytest.raises(FlexoptError, match="lack 'seg_1_branch'"):
        sp.from_params({"n_segments": 2, "seg_0_branch": 1, "seg_0_interval": 1})


def test_params_work_in_a_real_optuna_study():
    """Encoded params go through Optuna's storage and come back as the same candidate."""
    sp = SearchSpace((2, 3), (1, 2, 3), (1, 2))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cands = [sp.sample(random.Random(s)) for s in range(5)]
    for c in cands:
        dists = sp.distributions()
        params = sp.to_params(c)
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=0.0
            )
        )
    assert [sp.from_params(t.params) for t in study.trials] == cands
