"""What a report shows, read from a study: one row per trial, the Pareto front, the progress.

Kept apart from the drawing so the HTML report, the static PNG and `flexopt trials --csv` read the
study the same way. Only finished trials are rows: evaluated ones (COMPLETE), over-budget
candidates rejected before evaluation (PRUNED, which have a cost but no rFID) and candidates the
pruner stopped at a rung (PRUNED with `pruned_at`: no final rFID either).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.search.study import (
    CONSTRAINT_NAME,
    LATENCY_ATTR,
    PRUNED_AT_ATTR,
    SCHEDULE_ATTR,
    VALIDATION_ATTR,
    settings_of,
    trial_schedule,
)
from flexopt.space.schedule import Schedule

KINDS = ("searched", "deepcache", "teacher", "ddim-quad", "baseline")


@dataclass(frozen=True)
class TrialRow:
    """One finished trial as the report sees it."""

    number: int
    kind: str  # one of KINDS
    label: str  # "#12" or the baseline's name
    state: str  # "COMPLETE" | "PRUNED"
    rfid: float | None  # None when never evaluated (over budget)
    avg_macs: float | None
    nfe: int | None
    speedup: float | None
    feasible: bool
    schedule: Schedule | None = field(compare=False, repr=False)
    origin: str | None = None
    duplicate_of: int | None = None
    seconds: float | None = None
    started: datetime | None = None
    completed: datetime | None = None
    clip_score: float | None = None  # when the study scores CLIP (text pipelines)
    guard_failed: bool = False  # evaluated under the budget, but under a guard (the CLIP score)
    pruned_at: int | None = None  # stopped by the pruner after this many images (a rung)
    predicted_seconds: float | None = None  # a latency study: one batch, from the profile
    measured_seconds: float | None = None  # a latency study: its generation, scaled to a batch

    @property
    def steps(self) -> str:
        return self.schedule.step_string() if self.schedule else ""

    @property
    def segments(self) -> str:
        """`b/k` per segment, runs compressed (`3/5×20` for DeepCache n=5 b=3 over 100 steps)."""
        if self.schedule is None or self.schedule.is_placed:
            return ""  # a placed-step schedule has no segments: `steps` shows it
        out: list[str] = []
        names = (f"{s.branch}/{s.interval}" for s in self.schedule.segments)
        for key, run in itertools.groupby(names):
            n = len(list(run))
            out.extend([key] * n if n < 3 else [f"{key}×{n}"])
        return " ".join(out)


def _feasible(t: FrozenTrial) -> bool:
    """Under the budget: every constraint ≤ 0 (Optuna's value, else the old system attr list)."""
    values = list(t.constraints.values()) if t.constraints else t.system_attrs.get("constraints")
    return all(c <= 0 for c in values or [])


def _guard_failed(t: FrozenTrial) -> bool:
    """A guard's constraint is violated: a named one but the budget's (Optuna also lists the
    old-format list's values under "0", "1", …)."""
    return any(v > 0 for k, v in (t.constraints or {}).items()
               if k != CONSTRAINT_NAME and not k.isdigit())


def _kind(t: FrozenTrial) -> tuple[str, str]:
    name = t.user_attrs.get("baseline")
    if name is None:
        return "searched", f"#{t.number}"
    first = str(name).split()[0]
    return (first if first in KINDS else "baseline"), str(name)


def trial_row(study: optuna.Study, t: FrozenTrial) -> TrialRow:
    kind, label = _kind(t)
    ua = t.user_attrs
    schedule = None
    # a trial outside the space (added by hand), or a study whose settings this version does not
    # decode (a newer space kind): the row is drawn without its schedule
    with contextlib.suppress(FlexoptError, KeyError, TypeError, ValueError):
        stored = t.user_attrs.get(SCHEDULE_ATTR)
        schedule = (Schedule.from_dict(stored, source=f"trial {t.number}") if stored is not None
                    else trial_schedule(study, t))
    evaluated = t.state == TrialState.COMPLETE and t.values is not None
    nfe = ua.get("nfe", schedule.nfe if schedule else None)
    return TrialRow(
        number=t.number, kind=kind, label=label, state=t.state.name,
        rfid=float(t.values[0]) if evaluated else None,
        avg_macs=_float(ua.get("avg_macs")), nfe=nfe, speedup=_float(ua.get("speedup")),
        feasible=evaluated and _feasible(t), schedule=schedule, origin=ua.get("origin"),
        duplicate_of=ua.get("duplicate_of"), seconds=_float(ua.get("seconds")),
        started=t.datetime_start, completed=t.datetime_complete,
        clip_score=_float(ua.get("clip_score")), guard_failed=evaluated and _guard_failed(t),
        pruned_at=ua.get(PRUNED_AT_ATTR) if t.state == TrialState.PRUNED else None,
        predicted_seconds=_float(ua.get("predicted_seconds")),
        measured_seconds=_float(ua.get("measured_seconds")),
    )


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def pareto_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points (both coordinates minimised), sorted by x.

    x values equal to 12 significant digits are equal (0.28 and 0.27999999999999997 are one cost).
    """
    order = sorted(range(len(points)), key=lambda i: (float(f"{points[i][0]:.12g}"), points[i][1]))
    front: list[int] = []
    best_y = float("inf")
    for i in order:
        if points[i][1] < best_y:
            front.append(i)
            best_y = points[i][1]
    return front


def hypervolume(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by `points` (minimised) inside the box up to `ref` (2-D sweep)."""
    inside = [p for p in points if p[0] < ref[0] and p[1] < ref[1]]
    area, prev_y = 0.0, ref[1]
    for i in pareto_indices(inside):
        x, y = inside[i]
        area += (ref[0] - x) * (prev_y - y)
        prev_y = y
    return area


@dataclass(frozen=True)
class ProgressPoint:
    """The search's best so far after a trial: best rFID, or hypervolume (multi-objective)."""

    number: int
    elapsed_s: float
    value: float


@dataclass(frozen=True)
class StudyReport:
    """Everything the report draws, read once from the study."""

    study_name: str
    settings: dict[str, Any]
    metric: str
    multi_objective: bool
    rows: list[TrialRow]
    pareto: list[int]  # trial numbers on the front (feasible, baselines included), by avg MACs
    best: int | None  # lowest rFID under the budget, baselines included: what export --best picks
    best_searched: int | None  # lowest rFID among feasible searched trials
    chosen: list[int]  # trials the user asked to highlight
    full_macs: float | None
    max_avg_macs: float | None
    validation: dict[str, Any] | None = None  # the last `flexopt validate` (Validation.to_dict)
    latency: dict[str, Any] | None = None  # a latency study's profile (LatencyProfile.to_json)
    max_batch_seconds: float | None = None  # a latency study's budget: predicted s per batch

    @property
    def timed(self) -> list[TrialRow]:
        """Evaluated trials with a measured wall-clock (a latency study's)."""
        return [r for r in self.evaluated if r.measured_seconds is not None]

    def row(self, number: int) -> TrialRow:
        return next(r for r in self.rows if r.number == number)

    @property
    def evaluated(self) -> list[TrialRow]:
        return [r for r in self.rows if r.rfid is not None and r.avg_macs is not None]

    def selected(self, limit: int = 12) -> list[int]:
        """Trials worth a close look: the front (thinned to `limit`), the best and the chosen."""
        front = self.pareto
        if len(front) > limit:
            step = (len(front) - 1) / (limit - 1)
            front = [front[round(i * step)] for i in range(limit)]
        extra = [n for n in [self.best, self.best_searched, *self.chosen]
                 if n is not None and n not in front]
        return sorted(front + extra, key=lambda n: (self.row(n).avg_macs or 0.0, n))

    def progress(self) -> list[ProgressPoint]:
        """Best-so-far after each evaluated feasible searched trial, in trial order."""
        searched = [r for r in self.evaluated if r.kind == "searched" and r.feasible]
        if not searched:
            return []
        t0 = min(r.started for r in self.rows if r.started is not None)
        ref = (max(r.avg_macs for r in searched) * 1.1, max(r.rfid for r in searched) * 1.1)
        if self.max_avg_macs is not None:
            ref = (self.max_avg_macs, ref[1])
        out, best, seen = [], float("inf"), []
        for r in sorted(searched, key=lambda r: r.number):
            seen.append((r.avg_macs, r.rfid))
            if self.multi_objective:  # fraction of the reference box dominated
                value = hypervolume(seen, ref) / (ref[0] * ref[1]) if ref[1] > 0 else 0.0
            else:
                best = value = min(best, r.rfid)
            done = r.completed or r.started or t0
            out.append(ProgressPoint(r.number, (done - t0).total_seconds(), value))
        return out


def collect(study: optuna.Study, highlight: Sequence[int] = ()) -> StudyReport:
    """Read a flexopt study into a `StudyReport`; `highlight` adds user-chosen trials."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not trials:
        raise FlexoptError(f"study {study.study_name!r} has no finished trials yet")
    rows = [trial_row(study, t) for t in trials]
    numbers = {r.number for r in rows}
    unknown = [n for n in highlight if n not in numbers]
    if unknown:
        raise FlexoptError(
            f"--highlight {','.join(map(str, unknown))}: no such finished trial; "
            f"allowed: 0..{max(numbers)}"
        )
    settings = settings_of(study)
    metric = str(settings.get("metric", "rfid"))
    # Baselines count like any candidate: the front, the table and the best agree with what
    # `export --best` picks (the lowest value under the budget, ties to the earlier trial).
    cands = [r for r in rows if r.feasible and r.duplicate_of is None]
    front = [cands[i].number for i in pareto_indices([(r.avg_macs, r.rfid) for r in cands])]
    best = min(cands, key=lambda r: (r.rfid, r.number)).number if cands else None
    searched = [r for r in cands if r.kind == "searched"]
    best_searched = min(searched, key=lambda r: (r.rfid, r.number)).number if searched else None
    chosen = sorted(set(highlight) | {t.number for t in trials if t.user_attrs.get("chosen")})
    full = next((r.avg_macs * r.speedup for r in rows if r.avg_macs and r.speedup), None)
    budget = settings.get("budget") or {}
    latency = study.user_attrs.get(LATENCY_ATTR)
    if settings.get("cost", "macs") != "macs":
        limit = None  # the budget is wall-clock: no line on the MACs axis
    elif budget.get("macs") is not None:
        limit = float(budget["macs"])
    elif budget.get("speedup") and full is not None:
        limit = full / float(budget["speedup"])
    else:
        limit = None
    return StudyReport(
        study_name=study.study_name, settings=settings, metric=metric,
        multi_objective=len(study.directions) > 1, rows=rows, pareto=front, best=best,
        best_searched=best_searched, chosen=chosen, full_macs=full, max_avg_macs=limit,
        validation=study.user_attrs.get(VALIDATION_ATTR), latency=latency,
        max_batch_seconds=_batch_budget(latency, budget, int(settings.get("t_ref", 0))),
    )


def _batch_budget(latency: dict[str, Any] | None, budget: dict[str, Any],
                  t_ref: int) -> float | None:
    """A latency study's budget in seconds per batch (the teacher's predicted time / speedup)."""
    if latency is None or not budget or budget.get("macs") is not None:
        return None
    from flexopt.run.budget import Budget
    from flexopt.run.latency import LatencyProfile

    with contextlib.suppress(FlexoptError, ValueError, KeyError, TypeError):
        profile = LatencyProfile.from_json(latency)
        return profile.seconds(profile.ceiling(Budget(**budget), t_ref) * t_ref)
    return None


TABLE_COLUMNS = ("trial", "kind", "label", "state", "n_segments", "segments", "steps",
                 "avg_macs", "nfe", "speedup", "rfid", "feasible", "origin", "duplicate_of",
                 "seconds", "pruned_at", "clip_score", "predicted_seconds", "measured_seconds")
OPTIONAL_COLUMNS = ("pruned_at", "clip_score", "predicted_seconds",
                    "measured_seconds")  # shown only where some row has a value


def trials_frame(report: StudyReport, numbers: Sequence[int] | None = None):
    """A pandas DataFrame of the rows (all, or the given trial numbers in that order)."""
    import pandas as pd

    rows = report.rows if numbers is None else [report.row(n) for n in numbers]
    data = [
        {
            "trial": r.number, "kind": r.kind, "label": r.label, "state": r.state,
            "n_segments": r.schedule.n_segments if r.schedule and not r.schedule.is_placed
            else None,
            "segments": r.segments, "steps": r.steps, "avg_macs": r.avg_macs, "nfe": r.nfe,
            "speedup": r.speedup, "rfid": r.rfid, "feasible": r.feasible, "origin": r.origin,
            "duplicate_of": r.duplicate_of, "seconds": r.seconds, "pruned_at": r.pruned_at,
            "clip_score": r.clip_score, "predicted_seconds": r.predicted_seconds,
            "measured_seconds": r.measured_seconds,
        }
        for r in rows
    ]
    columns = [c for c in TABLE_COLUMNS  # a CLIP column only where the study scores CLIP, …
               if c not in OPTIONAL_COLUMNS or any(getattr(r, c) is not None for r in rows)]
    frame = pd.DataFrame(data, columns=columns)
    for col in ("n_segments", "nfe", "duplicate_of", "pruned_at"):  # integers with gaps
        if col in frame:
            frame[col] = frame[col].astype("Int64")
    return frame.rename(columns={"rfid": report.metric})
