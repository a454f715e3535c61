"""Study configs (TOML files under `studies/`, SPEC §4); budgets are `flexopt.run.budget`.

A config gathers everything a search needs; command-line flags override its values. Every key is
checked, so a typo is reported instead of silently ignored.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexopt.errors import FlexoptError
from flexopt.models.conditioning import parse_class_labels
from flexopt.run.budget import Budget
from flexopt.space.schedule import check_sampler
from flexopt.space.segment import SearchSpace, parse_choices

if TYPE_CHECKING:
    from flexopt.space.timestep import TimestepSpace

    Space = SearchSpace | TimestepSpace

@dataclass(frozen=True)
class EvolutionConfig:
    """Alg. 1 settings (paper: 100 iterations, n_p 25, n_c 5, n_u 300)."""

    population: int = 50  # initial random feasible candidates
    n_p: int = 25  # tournament size: parents drawn from the population
    n_c: int = 5  # children per parent
    n_u: int = 300  # population kept (best by score)
    n_m: int = 1  # segments mutated per child
    max_tries: int = 200  # mutation attempts per parent to find feasible children
    # timestep / hybrid spaces (AutoDiffusion's Alg. 1): parents are the population's top_k;
    # a child is a crossover with crossover_prob, else a mutation (each timestep moves with
    # mutation_prob)
    top_k: int = 10
    crossover_prob: float = 0.5
    mutation_prob: float = 0.1
    # hybrid space: the share of children that fill a parent's room under the budget with a run
    # of partial steps (docs/search-space.md)
    fill_prob: float = 0.25


AUTO = "auto"
# The search spaces: Flexiffusion's segments, AutoDiffusion's timestep placement, and both.
SPACE_KINDS = ("segments", "timesteps", "hybrid")


def check_space_kind(kind: Any) -> str:
    if kind not in SPACE_KINDS:
        raise FlexoptError(f"space {kind!r} is not supported; allowed: {', '.join(SPACE_KINDS)}")
    return kind


@dataclass(frozen=True)
class SpaceChoices:
    """A space's choices as a config or flags give them.

    `kind` "segments": N-segment / branch / interval choices; `segments=None` is `"auto"`: the
    N-segment choices are derived from the model's MACs and the budget
    (`flexopt.run.fitting.fit_space`), which are known only once the model is loaded. `kind`
    "timesteps" / "hybrid": `steps` are the step-count choices K (None: "auto", fitted to the
    budget), `branches` the hybrid's partial-step branches; `intervals` and `segments` are not used.
    """

    segments: tuple[int, ...] | None
    branches: tuple[int, ...]
    intervals: tuple[int, ...]
    t_ref: int = 100
    kind: str = "segments"
    steps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Validates every choice now (one clear error), with a stand-in for auto segments.
        check_space_kind(self.kind)
        SearchSpace(self.segments or (1,), self.branches, self.intervals, self.t_ref)
        if self.steps is not None:
            parse_choices("step-count", self.steps)

    @property
    def auto(self) -> bool:
        return self.segments is None if self.kind == "segments" else self.steps is None

    def space(self, train_timesteps: int = 1000, offset: int = 0) -> Space:
        """The space; auto choices need a budget and a model first (`fit_space`). A timestep
        space needs the model's training timesteps and `steps_offset` (for its baselines)."""
        if self.kind != "segments":
            from flexopt.space.timestep import TimestepSpace

            if self.steps is None:
                raise FlexoptError("steps = \"auto\" needs a budget and a model to fit the "
                                   "step-count choices to; give them, or explicit --steps")
            return TimestepSpace(self.steps, self.branches if self.kind == "hybrid" else (),
                                 self.t_ref, train_timesteps, offset)
        if self.segments is None:
            raise FlexoptError("segments = \"auto\" needs a budget and a model to fit the "
                               "N-segment choices to; give them, or explicit --segments")
        return SearchSpace(self.segments, self.branches, self.intervals, self.t_ref)


@dataclass(frozen=True)
class StudyConfig:
    """One study: model, sampler, space, budget, rFID settings, evolution settings, storage."""

    choices: SpaceChoices
    model: str | None = None
    sampler: str = "ddim"
    budget: Budget | None = None
    n_trials: int | None = None
    num_images: int = 1000
    seed: int = 0
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    prompt_file: str | None = None  # text pipelines: one prompt per line (path as written)
    guidance_scale: float | None = None  # text pipelines (None: the CLI default, 7.5)
    class_labels: tuple[int, ...] = ()  # class-conditional models, cycled over images
    prompt_column: str | None = None  # JSONL / CSV prompt files: the caption column
    clip_model: str | None = None  # text pipelines: record each trial's CLIP score
    clip_guard: float | None = None  # CLIP score at least the teacher's minus this
    pruner: str | None = None  # none, population, median, halving, hyperband (search.pruning)
    rungs: tuple[int, ...] | str | None = None  # image counts a candidate reports at, or "auto"
    cost: str | None = None  # what the budget prices: "macs" (default) or "latency"
    metric: str | None = None  # the objective (None: rfid); "fid" needs `reference`
    reference: str | None = None  # fid: fashion-mnist, digits, or a folder (relative: to the file)
    reference_split: str | None = None  # train or test (None: test)
    reference_images: int | None = None  # fid: the first N reference images (None: all)
    storage: str | None = None
    study_name: str | None = None
    source: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FlexoptError(f"study config {str(p)!r} does not exist") from None
        except OSError as err:
            raise FlexoptError(f"study config {str(p)!r} cannot be read: {err.strerror}") from None
        except UnicodeDecodeError:
            raise FlexoptError(f"study config {str(p)!r} is not a text file; allowed: a TOML "
                               "study config (see studies/)") from None
        except tomllib.TOMLDecodeError as err:
            raise FlexoptError(f"study config {str(p)!r} is not valid TOML: {err}") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "study config") -> StudyConfig:
        top = _take(
            data,
            source,
            {
                "model",
                "sampler",
                "t_ref",
                "budget",
                "n_trials",
                "space",
                "rfid",
                "evolution",
                "study",
                "description",
                "pruner",
                "cost",
            },
        )
        space = _take(top.get("space", {}), f"{source} [space]",
                      {"kind", "segments", "branches", "intervals", "steps"})
        kind = space.get("kind", "segments")
        try:
            check_space_kind(kind)
        except FlexoptError as err:
            raise FlexoptError(f"{source} [space]: {err}") from None
        required = {"segments": ("segments", "branches", "intervals"), "timesteps": (),
                    "hybrid": ("branches",)}[kind]
        for key in required:
            if key not in space:
                raise FlexoptError(f"{source} [space]: missing key {key!r}")
        steps = space.get("steps", AUTO)
        rfid = _take(top.get("rfid", {}), f"{source} [rfid]",
                     {"num_images", "seed", "prompt_file", "guidance_scale", "class_labels",
                      "prompt_column", "clip_model", "clip_guard", "rungs", "metric",
                      "reference", "reference_split", "reference_images"})
        evo = _take(
            top.get("evolution", {}),
            f"{source} [evolution]",
            {f.name for f in fields(EvolutionConfig)},
        )
        study = _take(top.get("study", {}), f"{source} [study]", {"storage", "name"})
        try:
            if "budget" in top and top.get("cost") == "latency":
                Budget.parse(top["budget"]).check_unit("latency")
            cfg = cls(
                choices=SpaceChoices(
                    None if space.get("segments", AUTO) == AUTO else tuple(
                        _list(space["segments"], "segments", auto=True)),
                    tuple(_list(space.get("branches", [1, 2, 3]), "branches")),
                    tuple(_list(space.get("intervals", [1, 2, 3]), "intervals")),
                    _int(top.get("t_ref", 100), "t_ref"),
                    kind,
                    None if steps == AUTO else tuple(_list(steps, "steps", auto=True)),
                ),
                model=top.get("model"),
                sampler=check_sampler(top.get("sampler", "ddim")),
                budget=Budget.parse(top["budget"]) if "budget" in top else None,
                n_trials=_int(top["n_trials"], "n_trials") if "n_trials" in top else None,
                num_images=_int(rfid.get("num_images", 1000), "rfid.num_images"),
                seed=_int(rfid.get("seed", 0), "rfid.seed", minimum=0),
                prompt_file=_path(rfid.get("prompt_file"), "rfid.prompt_file", source),
                guidance_scale=_float(rfid.get("guidance_scale"), "rfid.guidance_scale"),
                class_labels=parse_class_labels(rfid.get("class_labels")),
                prompt_column=_text(rfid.get("prompt_column"), "rfid.prompt_column"),
                clip_model=_text(rfid.get("clip_model"), "rfid.clip_model"),
                clip_guard=_float(rfid.get("clip_guard"), "rfid.clip_guard"),
                pruner=_pruner(top.get("pruner")),
                rungs=_rungs(rfid.get("rungs")),
                cost=_cost(top.get("cost")),
                metric=_metric(rfid.get("metric")),
                reference=_reference(rfid.get("reference"), source),
                reference_split=_split(rfid.get("reference_split")),
                reference_images=(None if rfid.get("reference_images") is None else _int(
                    rfid["reference_images"], "rfid.reference_images", minimum=2)),
                evolution=EvolutionConfig(**{
                    k: _probability(v, f"evolution.{k}") if k.endswith("_prob")
                    else _int(v, f"evolution.{k}") for k, v in evo.items()}),
                storage=study.get("storage"),
                study_name=study.get("name"),
                source=source,
            )
        except FlexoptError as err:
            raise FlexoptError(f"{source}: {err}") from None
        return cfg

    @property
    def space(self) -> Space:
        return self.choices.space()

    def with_overrides(self, **changes: Any) -> StudyConfig:
        """A copy with the given fields replaced; `None` means "keep the config's value"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _take(section: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(section, dict):
        raise FlexoptError(f"{where}: expected a table, got {section!r}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise FlexoptError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )
    return section


def _list(value: Any, name: str, auto: bool = False) -> list[Any]:
    if not isinstance(value, list):
        also = ', or "auto" (fitted to the budget)' if auto else ""
        raise FlexoptError(f"{name} {value!r} must be a list of integers, e.g. [1, 2, 3]{also}")
    return value


def _int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: an integer >= {minimum}")
    return value


def _probability(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: a number in 0..1")
    return float(value)


def _path(value: Any, name: str, source: str) -> str | None:
    """A path from a config file: relative ones are relative to the file, not the caller."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: a file path")
    base = Path(source).parent if source.endswith(".toml") else Path()
    return str(base / Path(value).expanduser())


def _metric(value: Any) -> str | None:
    from flexopt.metrics.objectives import OBJECTIVES

    if value is None:
        return None
    if value not in OBJECTIVES:
        raise FlexoptError(f"rfid.metric {value!r} is invalid; allowed: {', '.join(OBJECTIVES)}")
    return str(value)


def _reference(value: Any, source: str) -> str | None:
    """A data set name as written, or a folder path relative to the config file."""
    if value is None:
        return None
    from flexopt.models.data import NAMES  # torch: only for a config that names a reference

    if value in NAMES:
        return str(value)
    if not isinstance(value, str) or not value:
        raise FlexoptError(f"rfid.reference {value!r} is invalid; allowed: "
                           f"{', '.join(NAMES)}, or a folder of images")
    return _path(value, "rfid.reference", source)


def _split(value: Any) -> str | None:
    if value not in (None, "train", "test"):
        raise FlexoptError(f"rfid.reference_split {value!r} is invalid; allowed: train, test")
    return value


def _float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: a number >= 0")
    return float(value)


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise FlexoptError(f"{name} {value!r} is invalid; allowed: a non-empty string")
    return value


def _pruner(value: Any) -> str | None:
    from flexopt.search.pruning import check_pruner

    return None if value is None else check_pruner(value)


COSTS = ("macs", "latency")


def check_cost(cost: str) -> str:
    """`macs` (SPEC §1) or `latency` (seconds measured on this device, `flexopt profile`)."""
    if cost not in COSTS:
        raise FlexoptError(f"cost {cost!r} is invalid; allowed: {', '.join(COSTS)}")
    return cost


def _cost(value: Any) -> str | None:
    return None if value is None else check_cost(value)


def _rungs(value: Any) -> tuple[int, ...] | str | None:
    if value is None or value == AUTO:
        return value
    return tuple(_int(v, "rfid.rungs", minimum=2) for v in _list(value, "rfid.rungs"))
