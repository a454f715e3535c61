"""Held-out validation (SPEC §3): is the search's answer better on images it never saw?

A search scores every candidate on its own seeds and keeps the best of many noisy numbers, which
flatters the winner. `validate` takes the best searched schedule and the best baseline under the
budget (plus any trials named) and scores each on fresh seeds: rFID against the teacher's images
from the same noises, when a data set is given the standard FID against real images, and with
a CLIP model (text pipelines) the CLIP score of each, the teacher's included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats
from flexopt.search.study import feasible_trials, settings_of, trial_schedule
from flexopt.space.schedule import Schedule


@dataclass(frozen=True)
class ValidationRow:
    """One schedule scored on the held-out seeds."""

    label: str  # "teacher", "best searched", "best baseline", "trial N"
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

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "kind": self.kind,
                "steps": self.schedule.step_string(), "avg_macs": self.avg_macs,
                "speedup": self.speedup, "nfe": self.nfe, "rfid": self.rfid, "fid": self.fid,
                "clip": self.clip, "search_value": self.search_value}


@dataclass(frozen=True)
class Validation:
    """The rows and who wins: lowest rFID (and FID) among the non-teacher rows."""

    rows: list[ValidationRow]
    num_images: int
    seed: int
    overlap: int  # held-out images whose seeds the search also used (0 for a fair check)
    reference: str | None = None
    reference_images: int | None = None
    clip_model: str | None = None

    def winner(self, by: str = "rfid") -> ValidationRow | None:
        rows = [r for r in self.rows if r.kind != "teacher" and getattr(r, by) is not None]
        return min(rows, key=lambda r: getattr(r, by)) if rows else None

    def verdict(self) -> str:
        """One sentence: does the best searched schedule beat the best baseline here?"""
        searched = next((r for r in self.rows if r.label == "best searched"), None)
        baseline = next((r for r in self.rows if r.label == "best baseline"), None)
        if searched is None or baseline is None:
            return "nothing to compare: the study needs a searched and a baseline trial " \
                   "under its budget"
        parts = []
        for metric in ("rfid", "fid"):
            a, b = getattr(searched, metric), getattr(baseline, metric)
            if a is None or b is None:
                continue
            name = "rFID" if metric == "rfid" else "FID"
            word = "beats" if a < b else "does not beat"
            parts.append(f"{name} {a:.4g} vs {b:.4g}: the searched schedule {word} the baseline")
        if searched.clip is not None and baseline.clip is not None:
            word = "higher" if searched.clip > baseline.clip else "not higher"
            parts.append(f"CLIP {searched.clip:.4g} vs {baseline.clip:.4g}: the searched "
                         f"schedule's is {word}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"num_images": self.num_images, "seed": self.seed, "overlap": self.overlap,
                "reference": self.reference, "reference_images": self.reference_images,
                "clip_model": self.clip_model, "rows": [r.to_dict() for r in self.rows],
                "verdict": self.verdict()}


def validation_trials(study: optuna.Study, numbers: Sequence[int] = ()
                      ) -> list[tuple[str, FrozenTrial]]:
    """The trials to validate: the best searched and the best baseline under the budget (by the
    search's own score), then the named ones."""
    feasible = feasible_trials(study)
    out: list[tuple[str, FrozenTrial]] = []
    searched = [t for t in feasible if "baseline" not in t.user_attrs]
    baseline = [t for t in feasible if "baseline" in t.user_attrs]
    if searched:
        out.append(("best searched", searched[0]))
    if baseline:
        out.append(("best baseline", baseline[0]))
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
) -> Validation:
    """Score the study's best searched schedule, its best baseline and `trials` on the
    evaluator's seeds (its `settings.seed`, `num_images`), against the teacher there.

    `evaluator` is a `flexopt.search.evaluator.ModelEvaluator` for the study's model, sampler and
    `t_ref`; `reference` (real images' statistics) adds the FID against them.
    """
    s = settings_of(study)
    if evaluator.t_ref != s["t_ref"] or evaluator.sampler != s["sampler"]:
        raise FlexoptError(f"the evaluator runs {evaluator.sampler} {evaluator.t_ref}, the study "
                           f"{s['sampler']} {s['t_ref']}; allowed: the study's")
    chosen = validation_trials(study, trials)
    held = range(evaluator.settings.seed, evaluator.settings.seed + evaluator.settings.num_images)
    used = search_seeds(study)
    overlap = max(0, min(held.stop, used.stop) - max(held.start, used.start))
    teacher = evaluator.teacher().stats
    ref_stats = reference
    clip = getattr(evaluator, "clip", None)

    def row(label: str, name: str, kind: str, schedule: Schedule, feats: Any,
            search_value: float | None, clip_score: float | None) -> ValidationRow:
        avg = evaluator.avg_macs(schedule)
        return ValidationRow(
            label, name, kind, schedule, avg, evaluator.full_macs / avg, schedule.nfe,
            float(teacher.frechet_to(feats)) if kind != "teacher" else 0.0,
            None if ref_stats is None else float(ref_stats.frechet_to(feats)), search_value,
            clip_score)

    rows = [] if teacher.features is None else [
        row("teacher", f"{evaluator.sampler} {evaluator.t_ref} steps", "teacher",
            evaluator.teacher_schedule, teacher.features, None,
            None if clip is None else float(evaluator.teacher_clip().mean()))]
    for label, t in chosen:
        schedule = trial_schedule(study, t)
        images = evaluator.images(schedule, progress=progress).images
        feats = evaluator.features(images)
        base = t.user_attrs.get("baseline")
        name = f"trial {t.number}" + (f" ({base})" if base else "")
        rows.append(row(label, name, "baseline" if base else "searched", schedule, feats,
                        float(t.values[0]),
                        None if clip is None else float(evaluator.clip_scores(images).mean())))
    return Validation(rows, evaluator.settings.num_images, evaluator.settings.seed, overlap,
                      reference_name, None if ref_stats is None else ref_stats.n,
                      None if clip is None else clip.name)
