"""`flexopt export`: the schedule of a study's trial (or of its best one under the budget),
written as a schedule file that `generate`, `rfid` and `apply_schedule` read."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.search.study import feasible_trials, load_study, trial_schedule
from flexopt.space.schedule import Schedule


@dataclass(frozen=True)
class Export:
    """What `export_schedule` wrote: the trial, its schedule (with provenance in `meta`), and a
    note when the best under the budget is a baseline, not a searched candidate."""

    trial: FrozenTrial
    schedule: Schedule
    path: str
    note: str | None = None

    def lines(self) -> list[str]:
        return [*([self.note] if self.note else []),
                f"wrote trial {self.trial.number} ({self.schedule.step_string()}) to {self.path}"]


def export_schedule(storage: str, study_name: str | None, out: str, trial_number: int | None = None,
                    best: bool = False) -> Export:
    """Write trial `trial_number`'s schedule, or with `best` the best complete trial under the
    budget (lowest first objective), to `out`; its `meta` records the study, trial and cost."""
    from flexopt.files import make_parent, write_error

    if (trial_number is None) == (not best):
        raise FlexoptError("give exactly one of --trial N and --best")
    study = load_study(storage, study_name)
    name = study.study_name
    candidates = feasible_trials(study) if best else []
    trial = _best(candidates, name) if best else _numbered(study.trials, trial_number, name)
    schedule = trial_schedule(study, trial)
    meta = {"study": name, "trial": trial.number, "objective": list(trial.values),
            **{k: trial.user_attrs[k] for k in ("avg_macs", "speedup", "nfe", "baseline")
               if k in trial.user_attrs}}
    schedule = dataclasses.replace(schedule, meta=meta)
    try:
        schedule.save(make_parent(out))
    except OSError as err:
        raise write_error(out, err) from None
    note = _baseline_note(trial, candidates) if best and "baseline" in trial.user_attrs else None
    return Export(trial, schedule, out, note)


def _best(candidates: list[FrozenTrial], study_name: str) -> FrozenTrial:
    if not candidates:
        raise FlexoptError(f"study {study_name!r} has no complete trial under its budget yet")
    return candidates[0]


def _numbered(trials: list[FrozenTrial], number: int, study_name: str) -> FrozenTrial:
    numbers = [t.number for t in trials]
    if number not in numbers:
        raise FlexoptError(f"trial {number} is not in study {study_name!r}; allowed: "
                           f"0..{max(numbers) if numbers else -1}")
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        raise FlexoptError(f"trial {number} is {trial.state.name}, not COMPLETE; "
                           "export a complete trial")
    return trial


def _baseline_note(trial: FrozenTrial, candidates: list[FrozenTrial]) -> str:
    """Say so when a baseline beat every searched candidate on the search's own seeds."""
    searched = [t for t in candidates if "baseline" not in t.user_attrs]
    versus = (f"the best searched candidate, trial {searched[0].number}, scored "
              f"{searched[0].values[0]:.4g}" if searched else
              "no searched candidate under the budget was evaluated")
    return (f"the best under the budget is a baseline, {trial.user_attrs['baseline']} "
            f"(trial {trial.number}, {trial.values[0]:.4g}): {versus}; `flexopt validate` "
            "compares the two on unseen seeds")
