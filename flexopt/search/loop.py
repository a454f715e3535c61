"""The worker loop of a search: `optimize(study, objective, n_trials)`, usable on any study.

Many workers (processes, machines) may run it at once on one study: a study lock
(`flexopt.search.storage.StudyLock`) keeps the total of searched candidates exact, a heartbeat
re-runs a crashed worker's trial, and Ctrl-C (or SIGTERM) puts the running trial back in the
queue so a later run evaluates it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from flexopt.search.storage import StudyLock, trials_without_heartbeat
from flexopt.search.study import TrialCounts, feasible_trials, is_baseline

# A sampler that proposes nothing but over-budget candidates (random, TPE on a tight budget)
# stops after this many rejections per trial asked for, plus the slack.
REJECTED_PER_TRIAL, REJECTED_SLACK = 50, 1000

WORKER_ATTR = "flexopt:worker"  # trial system attr: host:pid of the worker that ran it
NO_HEARTBEAT_ATTR = "flexopt:no-heartbeat"  # trial system attr: its worker records none (gRPC)
RETRY_ATTR = "failed_trial"  # Optuna's, on a heartbeat retry: the number of the trial it re-runs


def optimize(study: optuna.Study, objective: Callable[[optuna.Trial], Any], n_trials: int, *,
             timeout: float | None = None, progress: bool = False,
             lock: StudyLock | None = None, poll: float = 0.5) -> int:
    """Run trials until the study holds `n_trials` searched candidates (all workers together),
    and every queued baseline.

    `n_trials` counts searched candidates evaluated, to the end or to a rung where the pruner
    stopped them (`TrialCounts.searched`); baselines and candidates the budget rejects before
    any image is made run in addition. Unlike `study.optimize(n_trials=…)`, which counts this
    process's trials, the total is the study's: a candidate starts only while evaluated plus
    running ones stay under it (decided under the study lock), so N workers end with exactly
    `n_trials`. A worker with nothing left to start waits while other workers' trials run, and
    takes over a crashed worker's trial when the heartbeat fails it. Ctrl-C or SIGTERM puts the
    running trial back in the queue and re-raises KeyboardInterrupt. Returns the number of
    trials this call ran.
    """
    from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
    from tqdm.auto import tqdm

    lock = lock or StudyLock(study._storage, study.study_name)
    heartbeat = is_heartbeat_enabled(study._storage)
    deadline = None if timeout is None else time.monotonic() + timeout
    worker = f"{socket.gethostname()}:{os.getpid()}"
    max_rejected = REJECTED_PER_TRIAL * n_trials + REJECTED_SLACK
    ran = 0
    counts = TrialCounts.of_study(study)
    orphans = Orphans(after=lock.stale_after)
    bar = tqdm(total=n_trials, initial=min(counts.searched, n_trials), desc="search",
               unit="candidate", disable=not progress, dynamic_ncols=True)
    with _Interrupts().installed() as interrupts, contextlib.closing(bar):
        while deadline is None or time.monotonic() < deadline:
            interrupts.hold()  # released where the trial is run, or when there is none
            with lock():
                if heartbeat:  # under the lock: failing a stale trial and queueing its retry
                    # are two writes, and a worker asking between them would start a new
                    # candidate instead, leaving the retry waiting forever
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                        optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if heartbeat:
                    orphans.adopt(study, trials)
                counts = TrialCounts.of(trials)
                if counts.rejected > max_rejected:  # a sampler that keeps proposing over budget
                    warnings.warn(f"stopping: {counts.rejected} candidates were over the budget "
                                  f"for {counts.searched} evaluated; the sampler does not find "
                                  "the feasible region (use --sampler evo, or a larger budget)",
                                  RuntimeWarning, stacklevel=2)
                    break
                trial = None
                if counts.searched + counts.running_searched < n_trials:
                    trial = _ask(study, trials)
                elif counts.waiting_baselines:  # baselines run in addition to the candidates
                    trial = _claim(study, [t for t in trials if t.state == TrialState.WAITING
                                           and is_baseline(t)])
                if trial is not None:
                    # before the lock is let go, a heartbeat, or the mark that none will come:
                    # a running trial with neither belongs to a worker killed here
                    if heartbeat:
                        study._storage.record_heartbeat(trial._trial_id)
                    else:
                        _mark_no_heartbeat(study, trial)
                    study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker)
            if trial is None:
                interrupts.raise_pending()
                # without a heartbeat, nobody takes a crashed trial over: nothing to wait for
                if counts.searched >= n_trials or not heartbeat:
                    break
                time.sleep(poll)  # others' trials are running; one may yet fail and be retried
                continue
            with get_heartbeat_thread(trial._trial_id, study._storage):
                _run_one(study, trial, objective, interrupts.raise_pending)
            ran += 1
            bar.n = min(TrialCounts.of_study(study).searched, n_trials)
            best = feasible_trials(study)
            if best:
                bar.set_postfix_str(f"best {best[0].values[0]:.4g} (trial {best[0].number})")
            bar.refresh()
    return ran


@dataclass
class Orphans:
    """Running trials no heartbeat will ever fail, found and given one (one per worker loop).

    Optuna's heartbeat fails a running trial only if it has a heartbeat. A worker records its
    trial's first one under the study lock, right after the claim (a worker whose storage has no
    heartbeat, behind a gRPC proxy, marks that claim instead), so a running trial with neither,
    seen for `after` seconds (the lock's staleness, a minute), is one whose worker was killed
    inside the lock: it would stay RUNNING forever and the study would wait for it. With a
    heartbeat now, the grace period fails it and it is retried like any crashed trial. Time is
    this process's own clock (machines' clocks differ); each trial's heartbeat row is looked up
    once (rows are never deleted).
    """

    after: float
    first_seen: dict[int, float] = field(default_factory=dict)
    beating: set[int] = field(default_factory=set)

    def adopt(self, study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial],
              now: float | None = None) -> list[int]:
        """Give each orphan among `trials` a heartbeat; returns their trial ids."""
        now = time.monotonic() if now is None else now
        watch = [t._trial_id for t in trials if t.state == TrialState.RUNNING
                 and t._trial_id not in self.beating and not _marked_no_heartbeat(t)]
        self.first_seen = {i: self.first_seen.get(i, now) for i in watch}
        due = [i for i in watch if now - self.first_seen[i] > self.after]
        orphans = sorted(trials_without_heartbeat(study._storage, due)) if due else []
        for trial_id in orphans:
            study._storage.record_heartbeat(trial_id)
        self.beating.update(due)
        return orphans


def _mark_no_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark this claim of the trial (by its start time) as one no heartbeat will follow: a mark
    left from an earlier claim (a requeued trial, a retry copying its attrs) does not count."""
    study._storage.set_trial_system_attr(trial._trial_id, NO_HEARTBEAT_ATTR,
                                         _claim_stamp(trial.datetime_start))


def _marked_no_heartbeat(t: optuna.trial.FrozenTrial) -> bool:
    mark = t.system_attrs.get(NO_HEARTBEAT_ATTR)
    return mark is not None and mark == _claim_stamp(t.datetime_start)


def _claim_stamp(start: datetime.datetime | None) -> str:
    return "" if start is None else start.isoformat()


def _ask(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial]) -> optuna.Trial:
    """The next trial: one a worker had started (a crashed worker's retry, an interrupted trial)
    before any other queued candidate, else what `study.ask()` gives.

    `study.ask()` pops the oldest queued trial, and the sampler queues children ahead; a retry
    queued behind them would still be waiting when the total is reached, losing the candidate
    the crashed worker had taken a place in that total for.
    """
    resumed = _claim(study, [t for t in trials if t.state == TrialState.WAITING
                             and (WORKER_ATTR in t.system_attrs
                                  or RETRY_ATTR in t.system_attrs)])
    if resumed is not None:
        return resumed
    with warnings.catch_warnings():  # Optuna warns that heartbeats belong to `study.optimize`;
        warnings.simplefilter("ignore", UserWarning)  # this loop runs them itself
        return study.ask()


def _claim(study: optuna.Study, waiting: Sequence[optuna.trial.FrozenTrial]
           ) -> optuna.Trial | None:
    """The first of these queued trials this worker can take (WAITING → RUNNING, the claim
    `study.ask()` makes; another worker may have won it), or None."""
    for t in waiting:
        try:
            if study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                return optuna.Trial(study, t._trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def _run_one(study: optuna.Study, trial: optuna.Trial,
             objective: Callable[[optuna.Trial], Any], before: Callable[[], None]) -> None:
    """Run and tell one trial; an interrupt puts it back in the queue (same number, same
    candidate) instead of failing it."""
    try:
        before()
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
        raise
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)


class _Interrupts:
    """Ctrl-C and SIGTERM (a scheduler stopping the job, `kill`) as KeyboardInterrupt, held back
    while the study lock is held, so a trial is never left half-asked with no one to requeue it."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals only reach the main thread; nothing to hold back elsewhere
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT,
                                                                      signal.SIGTERM)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def hold(self) -> None:
        """Hold signals back from here until `raise_pending` (lock, ask, trial set up)."""
        self.holding = True

    def raise_pending(self) -> None:
        self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt
