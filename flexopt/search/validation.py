"""Held-out validation (SPEC §3): is the search's answer better on images it never saw?

A search scores every candidate on its own seeds and keeps the best of many noisy numbers, which
flatters the winner. `validate` takes the best searched schedule and the strongest feasible
baseline of each family (fewer-step teacher, DDIM-quadratic, DeepCache-uniform; plus any trials
named) and scores each on fresh seeds: rFID against the teacher's images from the same noises,
when a data set is given the standard FID against real images, and with a CLIP model (text
pipelines) the CLIP score of each, the teacher's included. The best baseline is the one best on
these images; with a paired bootstrap each difference gets an interval, and the verdict is
"beats", "loses" or "not distinguishable on these images".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats
from flexopt.metrics.bootstrap import Interval, paired_bootstrap
from flexopt.run.budget import format_macs
from flexopt.run.latency import predict_seconds
from flexopt.search.study import (
    LATENCY_ATTR,
    VALIDATION_ATTR,
    feasible_trials,
    settings_of,
    trial_schedule,
)
from flexopt.space.schedule import Schedule
from flexopt.space.segment import GRID_TAG

# A baseline's family is the first word of its name (`flexopt.search.baselines`): the held-out
# check scores the strongest feasible one of each, not only the one that won on the search's seeds.
# A segment space's own fewer-step teacher ("teacher T=16 (grid 48)": its steps on the space's
# grid) is a family of its own: it must not stand in for the plain fewer-step teacher (SPEC §3).
BASELINE_FAMILIES = {"teacher": "fewer-step teacher", "ddim-quad": "DDIM-quadratic",
                     "deepcache": "DeepCache-uniform",
                     "teacher-grid": "fewer-step teacher on the space's grid"}
METRIC_NAMES = {"rfid": "rFID", "fid": "FID"}
_VERDICT_PHRASE = {"beats": "beats it", "loses": "loses to it", "does not beat": "does not beat it",
                   "not distinguishable on these images":
                       "is not distinguishable from it on these images"}


@dataclass(frozen=True)
class ValidationRow:
    """One schedule scored on the held-out seeds."""

    label: str  # "teacher", "best searched", a baseline family ("DeepCache-uniform"), "trial N"
    name: str  # what it is: "trial 49", "trial 3 (teacher T=19)"
    kind: str  # "teacher" | "searched" | "baseline"
    schedule: Schedule
    avg_macs: float
    speedup: float
    nfe: int
    rfid: float
    fid: float | None = None
    search_value: float | None = None  # its score on the search's own images
    clip: float | None = None  # CLIP score (text pipelines; higher is better)
    predicted_seconds: float | None = None  # with a latency profile: one batch, predicted
    measured_seconds: float | None = None  # ... and measured (its held-out generation)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "kind": self.kind,
                "steps": self.schedule.step_string(), "avg_macs": self.avg_macs,
                "speedup": self.speedup, "nfe": self.nfe, "rfid": self.rfid, "fid": self.fid,
                "clip": self.clip, "search_value": self.search_value,
                "predicted_seconds": self.predicted_seconds,
                "measured_seconds": self.measured_seconds}


@dataclass(frozen=True)
class Difference:
    """The best searched schedule minus one baseline, by one metric, on the held-out images;
    with a paired bootstrap, its standard error and 95 % interval (negative: searched better)."""

    metric: str  # "rfid" | "fid"
    baseline: str  # the baseline row's name
    value: float
    interval: Interval | None = None

    @property
    def word(self) -> str:
        """"beats", "loses", or "not distinguishable on these images" (needs the interval)."""
        if self.interval is None:
            return "beats" if self.value < 0 else "does not beat"
        if self.interval.high < 0:
            return "beats"
        if self.interval.low > 0:
            return "loses"
        return "not distinguishable on these images"

    def text(self) -> str:
        i = self.interval
        spread = "" if i is None else (f" ± {i.se:.3g} (SE), {i.level * 100:g}% interval "
                                       f"[{i.low:.3g}, {i.high:.3g}]")
        return f"{METRIC_NAMES[self.metric]} difference {self.value:+.4g}{spread}"

    def to_dict(self) -> dict[str, Any]:
        i = self.interval
        return {"metric": self.metric, "baseline": self.baseline, "value": self.value,
                "se": None if i is None else i.se, "low": None if i is None else i.low,
                "high": None if i is None else i.high, "level": None if i is None else i.level,
                "verdict": self.word}


@dataclass(frozen=True)
class Validation:
    """The rows, the differences (best searched − each baseline) and who wins."""

    rows: list[ValidationRow]
    num_images: int
    seed: int
    overlap: int  # held-out images whose seeds the search also used (0 for a fair check)
    reference: str | None = None
    reference_images: int | None = None
    clip_model: str | None = None
    differences: list[Difference] = field(default_factory=list)
    resamples: int = 0  # of the paired bootstrap (0: point estimates only)

    def winner(self, by: str = "rfid") -> ValidationRow | None:
        rows = [r for r in self.rows if r.kind != "teacher" and getattr(r, by) is not None]
        return min(rows, key=lambda r: getattr(r, by)) if rows else None

    def searched(self) -> ValidationRow | None:
        return next((r for r in self.rows if r.label == "best searched"), None)

    def best_baseline(self, by: str = "rfid") -> ValidationRow | None:
        """The baseline with the best held-out value: the one the searched schedule must beat
        (a family's pick; a baseline named with --trial is shown, not a contender)."""
        rows = [r for r in _contenders(self.rows) if getattr(r, by) is not None]
        return min(rows, key=lambda r: getattr(r, by)) if rows else None

    def difference(self, metric: str, baseline: str) -> Difference | None:
        return next((d for d in self.differences
                     if d.metric == metric and d.baseline == baseline), None)

    def verdict(self) -> str:
        """Does the best searched schedule beat the best baseline on these images, by each
        metric: "beats", "loses", or "not distinguishable on these images" by the interval."""
        searched = self.searched()
        if searched is None or self.best_baseline() is None:
            return "nothing to compare: the study needs a searched and a baseline trial " \
                   "under its budget"
        parts = []
        for metric, name in METRIC_NAMES.items():
            base = self.best_baseline(metric)
            diff = None if base is None else self.difference(metric, base.name)
            if diff is None:
                continue
            a, b = getattr(searched, metric), getattr(base, metric)
            parts.append(f"{name} {a:.4g} vs {b:.4g} (best baseline: {base.label}, {base.name});"
                         f" {diff.text()}: the searched schedule {_VERDICT_PHRASE[diff.word]}")
        if searched.clip is not None and (base := self.best_baseline()) is not None \
                and base.clip is not None:
            word = "higher" if searched.clip > base.clip else "not higher"
            parts.append(f"CLIP {searched.clip:.4g} vs {base.clip:.4g}: the searched "
                         f"schedule's is {word}")
        if not self.resamples:
            parts.append("point estimates: --bootstrap 1000 gives each difference its interval")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "seed": self.seed, "overlap": self.overlap,
                "reference": self.reference, "reference_images": self.reference_images,
                "clip_model": self.clip_model, "resamples": self.resamples,
                "rows": [r.to_dict() for r in self.rows],
                "differences": [d.to_dict() for d in self.differences],
                "verdict": self.verdict()}

    def wall_speedup(self, row: ValidationRow) -> float | None:
        """Measured wall-clock speedup of a row over the teacher (a latency validation)."""
        teacher = next((r for r in self.rows if r.kind == "teacher"), None)
        if teacher is None or teacher.measured_seconds is None or not row.measured_seconds:
            return None
        return teacher.measured_seconds / row.measured_seconds

    def _time_cells(self, r: ValidationRow) -> str:
        wall = self.wall_speedup(r)
        nan = float("nan")
        return (f" {r.predicted_seconds or nan:>7.3f} {r.measured_seconds or nan:>7.3f}"
                f" {wall or nan:>6.2f}x")

    def table(self) -> list[str]:
        """The rows as the command prints them, with a legend."""
        fid, clip = self.reference is not None, self.clip_model is not None
        timed = any(r.measured_seconds is not None for r in self.rows)
        lw = max([19, *(len(r.label) for r in self.rows)])  # no label or name cut short
        nw = max([34, *(len(r.name) for r in self.rows)])
        lines = [f"{'':{lw}} {'schedule':{nw}} {'avg MACs':>9} {'speedup':>8} {'NFE':>4} "
                 f"{'rFID':>8}" + (f" {'FID':>8}" if fid else "")
                 + (f" {'CLIP':>7}" if clip else "") + f" {'search':>8}"
                 + (f" {'pred s':>7} {'meas s':>7} {'wall':>7}" if timed else "")]
        win, win_fid = self.winner("rfid"), self.winner("fid") if fid else None
        for r in self.rows:
            marks = ("*" if r is win else "") + ("+" if r is win_fid else "")
            sv = "-" if r.search_value is None else f"{r.search_value:.4g}"
            lines.append(f"{r.label:{lw}} {r.name:{nw}} {format_macs(r.avg_macs):>9} "
                         f"{r.speedup:>7.2f}x {r.nfe:>4} {r.rfid:>8.3f}"
                         + (f" {r.fid:>8.3f}" if fid else "")
                         + (f" {r.clip:>7.3f}" if clip else "") + f" {sv:>8}"
                         + (self._time_cells(r) if timed else "") + f" {marks}")
        lines.append("* lowest rFID" + ("; + lowest FID" if fid else "") + " (teacher excluded)"
                     "; search: the score on the search's own images"
                     + (f"; CLIP: {self.clip_model}, higher is better" if clip else "")
                     + ("; pred s / meas s: seconds per batch predicted by the latency profile "
                        "and measured here; wall: measured speedup over the teacher"
                        if timed else ""))
        for d in self.differences:
            lines.append(f"best searched - {d.baseline}: {d.text()}: {d.word}")
        return lines


def baseline_family(name: str) -> str:
    """A baseline's family (a key of `BASELINE_FAMILIES`) from its name."""
    first = name.split()[0]
    return "teacher-grid" if first == "teacher" and GRID_TAG in name else first


def validation_trials(study: optuna.Study, numbers: Sequence[int] = ()
                      ) -> list[tuple[str, FrozenTrial]]:
    """The trials to validate: the best searched under the budget, the best feasible baseline of
    each family (by the search's own score; which one is best on unseen images is what the
    check finds out), then the named ones."""
    feasible = feasible_trials(study)
    out: list[tuple[str, FrozenTrial]] = []
    searched = [t for t in feasible if "baseline" not in t.user_attrs]
    if searched:
        out.append(("best searched", searched[0]))
    families: dict[str, FrozenTrial] = {}
    for t in feasible:  # best first
        if "baseline" in t.user_attrs:
            families.setdefault(baseline_family(str(t.user_attrs["baseline"])), t)
    out += [(BASELINE_FAMILIES.get(f, f), t) for f, t in families.items()]
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for n in numbers:
        t = trials.get(n)
        if t is None:
            raise FlexoptError(f"trial {n} is not in study {study.study_name!r}; allowed: "
                               f"0..{max(trials) if trials else -1}")
        if t.state != TrialState.COMPLETE:
            raise FlexoptError(f"trial {n} is {t.state.name}, not COMPLETE; allowed: a "
                               "complete trial")
        if all(t.number != u.number for _, u in out):
            out.append((f"trial {n}", t))
    if not out:
        raise FlexoptError(f"study {study.study_name!r} has no complete trial under its budget "
                           "yet; run the search first")
    return out


def check_conditioning(study: optuna.Study, evaluator: Any) -> None:
    """The held-out images must be conditioned as the search's were (prompts, labels, guidance):
    else the teacher and the schedules answer another question."""
    stored = settings_of(study).get("conditioning")
    if evaluator.settings.conditioning() != stored:
        raise FlexoptError(f"study {study.study_name!r} was searched with conditioning {stored!r}"
                           f", these images would use {evaluator.settings.conditioning()!r}; "
                           "allowed: the same --prompt-file/--prompt/--class-labels/"
                           "--guidance-scale")


def validation_latency(study: optuna.Study, evaluator: Any, cost: str | None = None) -> Any:
    """The latency profile `validate` predicts with, or None: with `cost` "latency" (default:
    the study's cost), the study's own profile when it was measured at this batch size, else
    this machine's (cached, or measured now)."""
    from flexopt.run.latency import LatencyProfile
    from flexopt.search.config import check_cost

    settings = settings_of(study)
    if check_cost(cost or settings.get("cost", "macs")) != "latency":
        return None
    stored = study.user_attrs.get(LATENCY_ATTR)
    try:
        profile = None if stored is None else LatencyProfile.from_json(stored)
    except (ValueError, KeyError, TypeError):
        profile = None  # unreadable: time this machine's
    if profile is not None and profile.batch_size != evaluator.settings.batch_size:
        profile = None  # per batch of another size: time this one
    branches = () if settings.get("space") == "timesteps" else settings.get("branches") or ()
    return evaluator.use_latency(tuple(branches), profile=profile)


def search_seeds(study: optuna.Study) -> range:
    """The seeds the search's images used (image i: seed + i)."""
    s = settings_of(study)
    return range(int(s.get("seed", 0)), int(s.get("seed", 0)) + int(s.get("num_images", 0)))


def validate(
    study: optuna.Study,
    evaluator: Any,
    trials: Sequence[int] = (),
    reference: FeatureStats | None = None,
    reference_name: str | None = None,
    progress: bool = False,
    bootstrap: int = 0,
    record: bool = True,
    latency: Any = None,
) -> Validation:
    """Score the study's best searched schedule, the best feasible baseline of each family and
    `trials` on the evaluator's seeds (its `settings.seed`, `num_images`), against the teacher
    there; `record`: keep the result on the study (`VALIDATION_ATTR`), where `report` reads it.

    `evaluator` is a `flexopt.search.evaluator.ModelEvaluator` for the study's model, sampler and
    `t_ref`, with the study's conditioning (prompts, labels: checked); `reference` (real images'
    statistics) adds the FID against them. `bootstrap` N ≥ 2
    resamples the held-out images N times, the same images for every schedule and for the
    teacher (paired by noise), for each difference's standard error and 95 % interval.
    `latency` (a `LatencyProfile`): each row also gets its predicted seconds per batch and the
    measured ones (its held-out generation; the teacher's from one batch made for it).
    """
    s = settings_of(study)
    if evaluator.t_ref != s["t_ref"] or evaluator.sampler != s["sampler"]:
        raise FlexoptError(f"the evaluator runs {evaluator.sampler} {evaluator.t_ref}, the study "
                           f"{s['sampler']} {s['t_ref']}; allowed: the study's")
    check_conditioning(study, evaluator)
    if bootstrap == 1 or bootstrap < 0:
        raise FlexoptError(f"bootstrap {bootstrap} is invalid; allowed: 0 (off) or at least 2 "
                           "resamples")
    chosen = validation_trials(study, trials)
    held = range(evaluator.settings.seed, evaluator.settings.seed + evaluator.settings.num_images)
    used = search_seeds(study)
    overlap = max(0, min(held.stop, used.stop) - max(held.start, used.start))
    teacher = evaluator.teacher().stats
    clip = getattr(evaluator, "clip", None)
    rows, features = _rows(study, evaluator, chosen, teacher, reference, clip, progress,
                           latency)
    differences = _differences(rows, features, teacher, reference, bootstrap, progress)
    result = Validation(rows, evaluator.settings.num_images, evaluator.settings.seed, overlap,
                        reference_name, None if reference is None else reference.n,
                        None if clip is None else clip.name, differences, bootstrap)
    if record:
        try:
            study.set_user_attr(VALIDATION_ATTR, result.to_dict())
        except Exception as err:  # a read-only database: the scores are still worth showing
            warnings.warn(f"the validation could not be kept on study {study.study_name!r} "
                          f"({type(err).__name__}: {err}); the report will not show it",
                          stacklevel=2)
    return result


def _rows(study: optuna.Study, evaluator: Any, chosen: list[tuple[str, FrozenTrial]],
          teacher: FeatureStats, reference: FeatureStats | None, clip: Any, progress: bool,
          latency: Any = None) -> tuple[list[ValidationRow], dict[str, np.ndarray]]:
    """Each chosen trial's images on the held-out seeds, scored (the teacher's row first);
    returns the rows and each row's features by name, for the bootstrap."""
    batch = evaluator.settings.batch_size

    def row(label: str, name: str, kind: str, schedule: Schedule, feats: Any,
            search_value: float | None, clip_score: float | None,
            measured: float | None = None) -> ValidationRow:
        avg = evaluator.avg_macs(schedule)
        return ValidationRow(
            label, name, kind, schedule, avg, evaluator.full_macs / avg, schedule.nfe,
            float(teacher.frechet_to(feats)) if kind != "teacher" else 0.0,
            None if reference is None else float(reference.frechet_to(feats)), search_value,
            clip_score, None if latency is None else predict_seconds(latency, schedule),
            measured)

    def timed_images(schedule: Schedule, stop: int | None = None) -> tuple[Any, float]:
        """The schedule's images, and their sampling seconds scaled to one batch."""
        gen = evaluator.images(schedule, progress=progress, stop=stop)
        return gen.images, gen.seconds * batch / len(gen.images)

    rows: list[ValidationRow] = []
    features = {}
    for label, t in chosen:
        schedule = trial_schedule(study, t)
        images, seconds = None, None
        if clip is None and latency is None:  # features alone: from the cache when scored before
            feats = evaluator.schedule_features(schedule, progress=progress)
        else:  # the images are scored by CLIP, or their generation is timed
            images, seconds = timed_images(schedule)
            feats = evaluator.features(images)
        base = t.user_attrs.get("baseline")
        name = f"trial {t.number}" + (f" ({base})" if base else "")
        features[name] = feats
        rows.append(row(label, name, "baseline" if base else "searched", schedule, feats,
                        float(t.values[0]),
                        None if clip is None else float(evaluator.clip_scores(images).mean()),
                        None if latency is None else seconds))
    if teacher.features is not None:
        teacher_seconds = None
        if latency is not None:  # its images are cached: time one batch (last: the run is warm)
            n = min(batch, evaluator.settings.num_images)
            teacher_seconds = timed_images(evaluator.teacher_schedule, n)[1]
        rows.insert(0, row("teacher", f"{evaluator.sampler} {evaluator.t_ref} steps", "teacher",
                           evaluator.teacher_schedule, teacher.features, None,
                           None if clip is None else float(evaluator.teacher_clip().mean()),
                           teacher_seconds))
    return rows, features


def is_contender(kind: str, label: str) -> bool:
    """Whether a row is a baseline the searched schedule is judged against: each family's
    strongest feasible one (a trial named with --trial may be over the budget: shown, not judged
    against). Also applied to `validate --json` rows (`benchmarks/validation_table.py`)."""
    return kind == "baseline" and not label.startswith("trial ")


def _contenders(rows: Sequence[ValidationRow]) -> list[ValidationRow]:
    return [r for r in rows if is_contender(r.kind, r.label)]


def _differences(rows: list[ValidationRow], features: dict[str, np.ndarray],
                 teacher: FeatureStats, reference: FeatureStats | None, resamples: int,
                 progress: bool = False) -> list[Difference]:
    """Best searched − each baseline, by rFID (and FID), paired-bootstrapped when asked."""
    searched = next((r for r in rows if r.label == "best searched"), None)
    baselines = _contenders(rows)
    if searched is None or not baselines:
        return []
    names = [searched.name] + [b.name for b in baselines]
    sets = [features[n] for n in names]
    out = []
    for metric, ref in (("rfid", teacher), ("fid", reference)):
        if ref is None:
            continue
        boot = None
        if resamples:
            paired = teacher.features if metric == "rfid" else None
            if metric == "rfid" and paired is None:
                raise FlexoptError("the teacher's cached entry has no raw features to resample; "
                                   "rebuild it (flexopt teacher) or run without --bootstrap")
            from tqdm.auto import tqdm

            with tqdm(total=resamples, desc=f"bootstrap {METRIC_NAMES[metric]}",
                      unit="resample", disable=not progress, leave=False) as bar:
                boot = paired_bootstrap(ref, sets, resamples, reference_features=paired,
                                        progress=bar.update)
        for j, b in enumerate(baselines, start=1):
            value = getattr(searched, metric) - getattr(b, metric)
            out.append(Difference(metric, b.name, value,
                                  None if boot is None else boot.difference(0, j)))
    return out
