"""The study layer on a synthetic evaluator: budget constraint, baselines, duplicates, resume."""

from __future__ import annotations

import warnings

import optuna
import pytest

from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget
from flexopt.search.baselines import baseline_schedules, enqueue_baselines
from flexopt.search.config import EvolutionConfig
from flexopt.search.loop import (
    NO_HEARTBEAT_ATTR,
    WORKER_ATTR,
    Orphans,
    _mark_no_heartbeat,
    optimize,
)
from flexopt.search.objective import Objective, feasibility
from flexopt.search.storage import (
    LOCK_SUFFIX,
    StudyLock,
    make_storage,
    trials_without_heartbeat,
)
from flexopt.search.study import (
    SearchSettings,
    TrialCounts,
    feasible_trials,
    make_sampler,
    open_study,
    trial_schedule,
)
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.testing import SyntheticProblem

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)


class SyntheticEvaluator:
    """MACs: a full step costs 1, a partial step 0.1·branch; score: distance to a target."""

    full_macs = 1.0

    def __init__(self, problem: SyntheticProblem):
        self.problem = problem
        self.scored: list[Schedule] = []

    def avg_macs(self, s: Schedule) -> float:
        total = sum(1 + (seg.interval - 1) * 0.1 * seg.branch for seg in s.segments)
        return total / s.t_ref

    def score(self, s: Schedule) -> float:
        self.scored.append(s)
        if s.segment_length == SPACE.segment_length and SPACE.contains(s.candidate):
            return self.problem.score(s.candidate)
        return 50.0 - s.nfe / 10  # baselines: a plausible, different score


def _setup(tmp_path, budget="0.3", sampler="evo", multi=False, seed=0, name="s", heartbeat=None):
    problem = SyntheticProblem.make(SPACE, seed=11)
    ev = SyntheticEvaluator(problem)
    b = Budget.parse(budget)
    limit = b.max_avg_macs(ev.full_macs)
    settings = SearchSettings(SPACE, "ddim", b, multi, "rfid", "synthetic", 8, 0)
    evo = EvolutionConfig(population=8, n_p=4, n_c=3, n_u=30)
    smp = make_sampler(sampler, SPACE, feasibility(SPACE, "ddim", ev, limit), evo, seed)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = open_study(storage if heartbeat is None else make_storage(storage, heartbeat), name,
                       settings, smp)
    objective = Objective(SPACE, ev, "ddim", limit, multi)
    return study, objective, ev, limit, storage, settings


def test_evo_search_respects_budget_and_records_attrs(tmp_path):
    study, objective, ev, limit, *_ = _setup(tmp_path)
    baselines = baseline_schedules(SPACE, "ddim", ev.full_macs, ev.avg_macs, limit, mode="all")
    assert enqueue_baselines(study, baselines) == len(baselines)
    ran = optimize(study, objective, n_trials=40, progress=False)
    counts = TrialCounts.of_study(study)  # --n-trials counts searched candidates only
    assert counts.searched == 40 and counts.rejected == 0
    assert counts.baselines >= len(baselines) and ran == 40 + counts.baselines
    names = {t.user_attrs.get("baseline") for t in study.trials} - {None}
    assert {"deepcache n=2 b=1", "deepcache n=5 b=3", "deepcache n=10 b=2"} <= names
    assert any(n.startswith("teacher T=") for n in names)
    for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE]):
        for key in ("avg_macs", "nfe", "speedup", "step_types"):
            assert key in t.user_attrs
        assert t.user_attrs["avg_macs"] == pytest.approx(ev.avg_macs(trial_schedule(study, t)))
        assert "constraints" in t.system_attrs  # optuna-dashboard 0.21 reads this list
        if "baseline" not in t.user_attrs:
            assert t.user_attrs["avg_macs"] < limit  # searched trials are all under budget
    # Every searched (non-baseline) candidate was scored once at most.
    searched = [s for s in ev.scored if s.segment_length == 3]
    assert len({s.segments for s in searched}) == len(searched)
    best = feasible_trials(study)[0]
    assert best.user_attrs["avg_macs"] < limit
    assert study.metric_names == ["rfid"]


def test_random_sampler_over_budget_candidates_are_pruned_with_constraint(tmp_path):
    study, objective, ev, limit, *_ = _setup(tmp_path, budget="0.25", sampler="random")
    optimize(study, objective, n_trials=30, progress=False)
    pruned = study.get_trials(states=[optuna.trial.TrialState.PRUNED])
    assert pruned, "the random sampler should propose some over-budget candidates"
    for t in pruned:
        assert t.constraints[("avg_macs")] > 0 and t.user_attrs["avg_macs"] >= limit
    assert len(ev.scored) == len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE]))


def test_resume_continues_to_the_same_total(tmp_path):
    study, objective, *_ , storage, _settings = _setup(tmp_path)
    optimize(study, objective, n_trials=10, progress=False)
    # A new process: same settings, same storage, same name → same study, up to the total.
    study2, objective2, *_ = _setup(tmp_path, seed=1)
    assert optimize(study2, objective2, n_trials=25, progress=False) == 15
    assert optimize(study2, objective2, n_trials=25, progress=False) == 0
    assert len(optuna.get_all_study_names(storage)) == 1


def test_resume_with_other_settings_is_refused(tmp_path):
    study, objective, *_ = _setup(tmp_path)
    # no trial yet (a run that stopped at once): the study takes the settings given now
    assert _setup(tmp_path, budget="0.4")[0].user_attrs["flexopt:settings"]["budget"]["macs"] == 0.4
    optimize(study, objective, n_trials=1, progress=False)
    with pytest.raises(FlexoptError, match=r"created with other settings \(budget"):
        _setup(tmp_path, budget="0.3")


def test_multi_objective_values(tmp_path):
    study, objective, _ev, *_ = _setup(tmp_path, multi=True, name="mo")
    optimize(study, objective, n_trials=20, progress=False)
    assert study.metric_names == ["rfid", "avg_macs"]
    for t in study.best_trials:
        assert t.values[1] == pytest.approx(t.user_attrs["avg_macs"])


def test_baselines_not_duplicated_on_rerun(tmp_path):
    study, _objective, ev, limit, *_ = _setup(tmp_path)
    bl = baseline_schedules(SPACE, "ddim", ev.full_macs, ev.avg_macs, limit)
    enqueue_baselines(study, bl)
    assert enqueue_baselines(study, bl) == 0


def test_unknown_sampler():
    with pytest.raises(FlexoptError, match="sampler 'cmaes' is not supported; allowed: evo"):
        make_sampler("cmaes", SPACE, lambda c: True, EvolutionConfig(), 0)


def test_constraints_show_in_optunas_pareto_plot(tmp_path):
    """Over-budget baselines are evaluated, so Optuna's own Pareto plot greys them out."""
    pytest.importorskip("plotly")
    study, objective, ev, limit, *_ = _setup(tmp_path, multi=True, name="plot")
    enqueue_baselines(study, baseline_schedules(SPACE, "ddim", ev.full_macs, ev.avg_macs, limit,
                                                mode="all"))
    optimize(study, objective, n_trials=25, progress=False)
    infeasible = [t for t in study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
                  if t.constraints["avg_macs"] > 0]
    assert infeasible, "some baselines should be over the budget"
    fig = optuna.visualization.plot_pareto_front(study)
    # Optuna draws infeasible trials as their own (grey) trace, told apart by its hover label.
    shown = [tr for tr in fig.data if "Infeasible Trial" in (tr.hovertemplate or "")]
    assert len(shown) == 1 and len(shown[0].x) == len(infeasible)


def test_representable_baselines_over_budget_are_evaluated_but_never_parents(tmp_path):
    """DeepCache n=3 (L=3, t_ref 21 → 7 segments is not a choice) is not in SPACE; a space with
    7 segments runs it exactly: it is enqueued as params, evaluated though over the budget (for
    the report), and kept out of the population."""
    space = SearchSpace((5, 6, 7), (1, 2, 3), (1, 2, 3), t_ref=21)
    problem = SyntheticProblem.make(space, seed=3)
    ev = SyntheticEvaluator(problem)
    limit = 0.3
    settings = SearchSettings(space, "ddim", Budget.parse("0.3"), False, "rfid", "synthetic", 8, 0)
    smp = make_sampler("evo", space, feasibility(space, "ddim", ev, limit),
                       EvolutionConfig(population=4, n_p=4, n_c=2, n_u=30), 0)
    study = open_study(f"sqlite:///{tmp_path / 'r.db'}", "r", settings, smp)
    bl = baseline_schedules(space, "ddim", ev.full_macs, ev.avg_macs, limit, mode="all")
    enqueue_baselines(study, bl, space)
    optimize(study, Objective(space, ev, "ddim", limit), n_trials=6)
    dc = [t for t in study.trials if t.user_attrs.get("baseline") == "deepcache n=3 b=3"]
    assert dc and dc[0].params["n_segments"] == 7  # a candidate of the space, not a schedule
    assert dc[0].state == optuna.trial.TrialState.COMPLETE and dc[0].constraints["avg_macs"] > 0
    population = smp.population(study, study.get_trials(deepcopy=False))
    assert population and dc[0].number not in {t.number for t in population}
    assert all(t.constraints["avg_macs"] <= 0 for t in population)


def test_a_crashed_workers_retry_runs_before_queued_children(tmp_path):
    # A worker takes a trial, then dies; the heartbeat fails it and queues its retry behind the
    # children the sampler had queued. The one place left in the total goes to the retry.
    study, objective, *_ = _setup(tmp_path)
    optimize(study, objective, n_trials=14, progress=False)
    waiting = optuna.trial.TrialState.WAITING
    crashed = study.ask()
    study._storage.set_trial_system_attr(crashed._trial_id, WORKER_ATTR, "gone:1")
    study._storage.set_trial_state_values(crashed._trial_id, optuna.trial.TrialState.FAIL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_once = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    retry_once(study, study._storage.get_trial(crashed._trial_id))
    (retry,) = [t for t in study.get_trials(deepcopy=False, states=(waiting,))
                if t.system_attrs.get("failed_trial") == crashed.number]
    children = [t for t in study.get_trials(deepcopy=False, states=(waiting,))
                if t.number != retry.number]
    assert children, "the evolutionary sampler queues children ahead"
    assert retry.number > max(t.number for t in children)
    assert optimize(study, objective, n_trials=15, progress=False) == 1
    assert study.trials[retry.number].state != waiting
    assert all(study.trials[t.number].state == waiting for t in children)


def _asked(study):
    with warnings.catch_warnings():  # Optuna: heartbeats belong to `study.optimize`
        warnings.simplefilter("ignore", UserWarning)
        return study.ask()


def test_a_worker_killed_while_claiming_a_trial_does_not_stall_the_study(tmp_path):
    # Killed inside the study lock, after claiming a trial (RUNNING) and before its first
    # heartbeat: the lock stays behind, and the heartbeat alone would never fail that trial, so
    # the study waited for it forever (a 600 s CI hang). A running trial with no heartbeat, no
    # mark and older than the lock's staleness now gets one; the grace period fails it and its
    # retry (with no worker attr) takes its place ahead of the queued children.
    study, objective, *_ = _setup(tmp_path, heartbeat=1)
    optimize(study, objective, n_trials=5, progress=False)
    orphan = _asked(study)
    study._storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s" + LOCK_SUFFIX)
    lock = StudyLock(study._storage, "s", stale_after=0.5)
    with pytest.warns(UserWarning, match="its holder may have been killed"):
        optimize(study, objective, n_trials=8, progress=False, lock=lock, timeout=30)
    assert study.trials[orphan.number].state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == orphan.number]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert TrialCounts.of_study(study).searched == 8
    assert not study.get_trials(states=[optuna.trial.TrialState.RUNNING])


def test_a_claimed_trial_has_its_heartbeat_before_the_lock_is_let_go(tmp_path, monkeypatch):
    # the worker dies at its last write under the lock: its trial already has a heartbeat
    study, objective, *_ = _setup(tmp_path, heartbeat=60)
    real = study._storage.set_trial_system_attr

    def die_at_the_worker_attr(trial_id, key, value):
        if key == WORKER_ATTR:
            raise SystemExit("killed")
        real(trial_id, key, value)

    monkeypatch.setattr(study._storage, "set_trial_system_attr", die_at_the_worker_attr)
    with pytest.raises(SystemExit):
        optimize(study, objective, n_trials=3, progress=False)
    (claimed,) = study.get_trials(states=[optuna.trial.TrialState.RUNNING])
    assert trials_without_heartbeat(study._storage, [claimed._trial_id]) == set()


def test_only_unmarked_running_trials_without_heartbeat_are_adopted(tmp_path):
    study, *_ = _setup(tmp_path, heartbeat=60)
    orphan, grpc_run, stale_mark, beating, young = (_asked(study) for _ in range(5))
    _mark_no_heartbeat(study, grpc_run)  # a worker without heartbeats (gRPC proxy)
    # a mark from an earlier claim of the trial (requeued, or a retry copying its attrs)
    study._storage.set_trial_system_attr(stale_mark._trial_id, NO_HEARTBEAT_ATTR, "2000-01-01")
    study._storage.record_heartbeat(beating._trial_id)
    ids = [t._trial_id for t in (orphan, grpc_run, stale_mark, beating, young)]
    assert trials_without_heartbeat(study._storage, ids) == set(ids) - {beating._trial_id}
    watch = Orphans(after=60)  # this worker's own clock: no other machine's clock is read
    running = study.get_trials(deepcopy=False)
    assert watch.adopt(study, [t for t in running if t.number != young.number], now=0) == []
    assert watch.adopt(study, running, now=59) == []  # seen for under a minute
    adopted = watch.adopt(study, running, now=61)
    # the orphan and the one whose mark is not this claim's; not the gRPC run, not the trial
    # seen only since 59 s, not the one with a heartbeat
    assert adopted == sorted([orphan._trial_id, stale_mark._trial_id])
    assert trials_without_heartbeat(study._storage, ids) == {grpc_run._trial_id, young._trial_id}


def test_a_worker_without_heartbeats_marks_each_claim(tmp_path):
    study, objective, *_ = _setup(tmp_path)
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=None)
    plain = optuna.load_study(study_name="s", storage=storage, sampler=study.sampler)
    optimize(plain, objective, n_trials=4, progress=False)
    ran = [t for t in plain.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert ran and all(t.system_attrs[NO_HEARTBEAT_ATTR] == t.datetime_start.isoformat()
                       for t in ran)
