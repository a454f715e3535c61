"""The search as an Optuna study: its settings and identity, opening and reading it back.

Settings are claimed on the study once (a second worker or a resume with other settings is
refused); a trial's schedule is read back from its params or its stored baseline. The objective is
in `flexopt.search.objective`, the baselines in `flexopt.search.baselines`, the worker loop in
`flexopt.search.loop` and the whole command in `flexopt.search.job`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget
from flexopt.search.config import EvolutionConfig
from flexopt.search.sampler import FlexEvolutionSampler
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate

if TYPE_CHECKING:
    from flexopt.search.config import Space
from flexopt.search.storage import make_storage, mask_url, storage_error, study_names

SAMPLER_NAMES = ("evo", "random", "tpe", "nsga2")
CONSTRAINT_NAME = "avg_macs"
CONSTRAINTS_ATTR = "constraints"  # trial system attr: the constraint values, as a list
PRUNED_AT_ATTR = "pruned_at"  # user attr: the rung (image count) a pruner stopped a trial at
SCHEDULE_ATTR = "schedule"  # user attr holding a baseline's whole schedule (not in the space)
_SETTINGS_ATTR = "flexopt:settings"
_COST_METRIC = {"macs": "avg_macs", "latency": "avg_seconds"}  # a 2-objective study's second
VALIDATION_ATTR = "flexopt:validation"  # study user attr: the last `validate` (its to_dict())
LATENCY_ATTR = "flexopt:latency"  # study user attr: the latency profile a latency search used


@dataclass(frozen=True)
class SearchSettings:
    """Everything that defines a study: resuming with different values is refused."""

    space: Space
    sampler: str = "ddim"  # the diffusion sampler of the schedules
    budget: Budget | None = None
    multi_objective: bool = False
    metric: str = "rfid"
    model: str | None = None
    num_images: int = 0
    seed: int = 0
    conditioning: str | None = None  # EvalSettings.conditioning(): prompts, class labels
    clip_model: str | None = None  # trials also record their CLIP score
    clip_guard: float | None = None  # CLIP score at least the teacher's minus this
    cost: str = "macs"  # what the budget prices: "macs" or "latency" (wall-clock, profiled)
    reference: str | None = None  # the data set a data metric (fid) scores against

    def identity(self) -> dict[str, Any]:
        """The values stored on the study and compared when it is resumed (a segment-wise
        study's as before timestep spaces existed, so old studies still resume)."""
        sp = self.space
        if sp.kind == "segments":
            shape: dict[str, Any] = {"segments": list(sp.segments), "branches": list(sp.branches),
                                     "intervals": list(sp.intervals)}
        else:
            shape = {"space": sp.kind, "steps": list(sp.steps), "branches": list(sp.branches),
                     "train_timesteps": sp.train_timesteps, "offset": sp.offset}
        return {
            **shape,
            "t_ref": sp.t_ref,
            "sampler": self.sampler,
            "budget": (
                {"macs": self.budget.macs, "speedup": self.budget.speedup,
                 **({"seconds": self.budget.seconds} if self.budget.seconds else {})}
                if self.budget else None
            ),
            "multi_objective": self.multi_objective,
            "metric": self.metric,
            "model": self.model,
            "num_images": self.num_images,
            "seed": self.seed,
            # only when set, so studies of unconditional models made before it still resume
            **({"conditioning": self.conditioning} if self.conditioning else {}),
            **({"clip_model": self.clip_model} if self.clip_model else {}),
            **({"clip_guard": self.clip_guard} if self.clip_guard is not None else {}),
            **({"cost": self.cost} if self.cost != "macs" else {}),
            **({"reference": self.reference} if self.reference else {}),
        }


def default_storage(study_name: str) -> str:
    """A SQLite file in the working directory, named after the study."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in study_name)
    return f"sqlite:///{safe}.db"


def load_study(storage: str, study_name: str | None) -> optuna.Study:
    """Load a study for reading; a user's mistake (typo, empty storage) is one clear error.

    `study_name` may be None when the storage holds exactly one study.
    """
    names = study_names(storage)
    if not names:
        raise FlexoptError(f"storage {mask_url(storage)!r} holds no study; run a search first")
    if study_name is None:
        if len(names) > 1:
            raise FlexoptError(
                f"storage {mask_url(storage)!r} holds several studies; pick one with --study-name: "
                f"{', '.join(sorted(names))}"
            )
        study_name = names[0]
    if study_name not in names:
        raise FlexoptError(
            f"study {study_name!r} is not in {mask_url(storage)!r}; studies there: "
            f"{', '.join(sorted(names))}"
        )
    study = optuna.load_study(study_name=study_name,
                              storage=make_storage(storage, heartbeat=None))
    settings_of(study)  # raises if the study was not made by flexopt
    return study


def make_sampler(
    name: str,
    space: Space,
    feasible: Callable[[Candidate], bool],
    evolution: EvolutionConfig,
    seed: int | None,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler called `name` (evo is Flexiffusion's; the others are for comparison)."""
    if name == "evo":
        return FlexEvolutionSampler(
            space, feasible, population_size=evolution.population, n_p=evolution.n_p,
            n_c=evolution.n_c, n_u=evolution.n_u, n_m=evolution.n_m,
            max_tries=evolution.max_tries, seed=seed, top_k=evolution.top_k,
            crossover_prob=evolution.crossover_prob, mutation_prob=evolution.mutation_prob,
            fill_prob=evolution.fill_prob,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise FlexoptError(f"sampler {name!r} is not supported; allowed: {', '.join(SAMPLER_NAMES)}")


def open_study(
    storage: str | optuna.storages.BaseStorage,
    study_name: str,
    settings: SearchSettings,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it if it exists — checking it was made with the same settings.
    `pruner`: Optuna's, for an objective with rungs (`flexopt.search.pruning.make_pruner`)."""
    directions = ["minimize", "minimize"] if settings.multi_objective else ["minimize"]
    where = mask_url(getattr(storage, "url", storage))  # an RDBStorage object, or a URL
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
            directions=directions, load_if_exists=True,
        )
    except ValueError as err:  # e.g. directions differ from the stored study
        raise FlexoptError(f"study {study_name!r} in {where}: {err}") from None
    except Exception as err:  # SQLAlchemy's errors for an unreachable or malformed URL
        raise (storage_error(str(where), err) or err) from None
    claim_settings(study, settings, where)
    return study


def claim_settings(study: optuna.Study, settings: SearchSettings, where: str) -> None:
    """Record `settings` on the study, or check they are the ones it was created with."""
    stored = study.user_attrs.get(_SETTINGS_ATTR)
    mine = settings.identity()
    # a study without trials was made by a run that stopped at once (e.g. a bad flag): nothing to
    # lose, so it takes the settings given now
    if stored is None or (stored != mine and not study.get_trials(deepcopy=False)):
        study.set_user_attr(_SETTINGS_ATTR, mine)
        with warnings.catch_warnings():  # experimental in Optuna, but what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(
                [settings.metric] + ([_COST_METRIC[settings.cost]]
                                     if settings.multi_objective else [])
            )
    elif stored != mine:
        diff = ", ".join(
            f"{k}: stored {stored.get(k)!r}, given {v!r}"
            for k, v in mine.items() if stored.get(k) != v
        )
        raise FlexoptError(
            f"study {study.study_name!r} in {where} was created with other settings ({diff}); "
            "use the same settings to resume it, or a new --study-name"
        )


def settings_of(study: optuna.Study) -> dict[str, Any]:
    """The settings a study was created with (for `export`, `report`)."""
    stored = study.user_attrs.get(_SETTINGS_ATTR)
    if stored is None:
        raise FlexoptError(f"study {study.study_name!r} was not created by flexopt search")
    return stored


def space_of(study: optuna.Study) -> Space:
    """The search space a study was made with (any kind)."""
    return space_from_identity(settings_of(study))


def space_from_identity(s: dict[str, Any]) -> Space:
    """Inverse of the space part of `SearchSettings.identity`."""
    kind = s.get("space", "segments")
    if kind == "segments":
        return SearchSpace(tuple(s["segments"]), tuple(s["branches"]), tuple(s["intervals"]),
                           s["t_ref"])
    from flexopt.space.timestep import TimestepSpace

    return TimestepSpace(tuple(s["steps"]), tuple(s["branches"]), s["t_ref"],
                         s["train_timesteps"], s["offset"])


def trial_schedule(study: optuna.Study, trial: FrozenTrial) -> Schedule:
    """The schedule a (finished) trial ran: its params decoded, or a baseline's stored schedule."""
    return schedule_of(trial, space_of(study), settings_of(study)["sampler"])


def schedule_of(trial: FrozenTrial, space: Space, sampler: str) -> Schedule:
    """The schedule of a trial of `space`: a baseline's stored one, else its params decoded."""
    if SCHEDULE_ATTR in trial.user_attrs:
        return Schedule.from_dict(trial.user_attrs[SCHEDULE_ATTR], source=f"trial {trial.number}")
    return space.schedule(space.from_params(trial.params), sampler)


# --------------------------------------------------------------------------------- baselines


# --------------------------------------------------------------------------------- objective


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials under the budget (baselines included), best first by the first value."""
    out = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(c <= 0 for c in t.constraints.values())
    ]
    return sorted(out, key=lambda t: (t.values[0], t.number))


# ------------------------------------------------------------------------------------ running


def is_baseline(t: FrozenTrial) -> bool:
    """A baseline (DeepCache-uniform, fewer-step teacher, DDIM-quadratic), enqueued or a seed of
    the sampler's first population: it runs in addition to the searched candidates."""
    return "baseline" in t.user_attrs


def pruned_at_rung(t: FrozenTrial) -> bool:
    """Evaluated on some images, then stopped by the pruner (PRUNED with `pruned_at`); a PRUNED
    trial without it was rejected by the budget before any image was made."""
    return t.state == TrialState.PRUNED and PRUNED_AT_ATTR in t.user_attrs


@dataclass(frozen=True)
class TrialCounts:
    """A study's trials as a search counts them. `--n-trials` is the number of searched
    candidates evaluated (to the end or to a rung); baselines and candidates rejected by the
    budget (never evaluated) come in addition."""

    searched: int  # searched candidates evaluated: complete + pruned at a rung
    pruned: int  # of which stopped at a rung
    baselines: int  # baselines evaluated
    rejected: int  # searched candidates over the budget: never evaluated
    running_searched: int = 0
    waiting_baselines: int = 0

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        searched = pruned = baselines = rejected = running = waiting = 0
        for t in trials:
            base = is_baseline(t)
            if t.state == TrialState.COMPLETE:
                baselines += base
                searched += not base
            elif t.state == TrialState.PRUNED:
                at_rung = pruned_at_rung(t)
                pruned += at_rung and not base
                searched += at_rung and not base
                rejected += not at_rung and not base
                baselines += base
            elif t.state == TrialState.RUNNING:
                running += not base
            elif t.state == TrialState.WAITING:
                waiting += base
        return cls(searched, pruned, baselines, rejected, running, waiting)

    @classmethod
    def of_study(cls, study: optuna.Study) -> TrialCounts:
        return cls.of(study.get_trials(deepcopy=False))

    def line(self) -> str:
        """"40 searched candidates (12 stopped at a rung), 5 baselines, 3 over the budget"."""
        parts = [f"{self.searched} searched candidates"
                 + (f" ({self.pruned} stopped at a rung)" if self.pruned else ""),
                 f"{self.baselines} baselines"]
        if self.rejected:
            parts.append(f"{self.rejected} over the budget (never evaluated)")
        return ", ".join(parts)

