"""Scoring schedules outside a search: what `teacher`, `rfid`, `fid`, `validate` and `clip-score`
call. Each is one function over a `ModelEvaluator`, so a Python user gets the same numbers.

`log` arguments take the lines a command prints (notes and warnings go to the caller, not to a
terminal the library assumes).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flexopt.run.budget import format_macs
from flexopt.search.evaluator import ModelEvaluator
from flexopt.space.schedule import Schedule

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def build_evaluator(model: str, sampler: str, t_ref: int, num_images: int, seed: int,
                    batch_size: int, device: str | None, dtype: str, cond: dict[str, Any],
                    metric: str, cache_dir: str | None, inception_weights: str | None,
                    progress: bool = True, clip_model: str | None = None,
                    note: Log = _stderr) -> ModelEvaluator:
    """A `ModelEvaluator` for MODEL's pipeline on `device` in `dtype` (shared by rfid, teacher,
    fid, validate and clip-score).

    `cond` is `flexopt.search.overrides.conditioning(...)`'s prompts / guidance_scale /
    class_labels; `clip_model`: also load that CLIP model (a text pipeline with prompts is
    checked first); "auto": the default CLIP model for a text pipeline given prompts, none
    otherwise; "none": none. A text pipeline without prompts gets a `note`."""
    from flexopt.metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer
    from flexopt.models.loading import open_pipeline
    from flexopt.run.pipeline import pipeline_kind
    from flexopt.search.evaluator import EvalSettings, check_clip

    pipe = open_pipeline(model, device, dtype)
    settings = EvalSettings(num_images, seed, batch_size, metric, **cond)
    clip = None
    text = pipeline_kind(pipe) != "unconditional"
    if clip_model == "auto":
        clip_model = DEFAULT_CLIP_MODEL if text and settings.prompts else None
    if clip_model is not None and clip_model.lower() != "none":
        check_clip(pipe, settings)
        clip = ClipScorer.load(clip_model, pipe._execution_device, batch_size)
    elif text and not settings.prompts:
        note("note: no prompts given, so every image uses the empty prompt; give "
             "--prompt-file (or `prompt_file` in the config's [rfid])")
    return ModelEvaluator(pipe, sampler, t_ref, settings, cache_dir, inception_weights, progress,
                          clip=clip)


def teacher_entry(evaluator: ModelEvaluator, log: Log = _stderr) -> Any:
    """Build or reuse the teacher cache; a rebuilt entry's reason goes to `log`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entry = evaluator.teacher()
    for w in caught:
        if "teacher cache" in str(w.message):
            log(f"warning: {w.message}")
    return entry


@dataclass(frozen=True)
class ScheduleScore:
    """One schedule scored against its teacher (`flexopt rfid`)."""

    metric: str
    value: float
    avg_macs: float
    full_macs: float
    nfe: int
    seconds: dict[str, float]

    def lines(self) -> list[str]:
        t = self.seconds
        return [f"{self.metric}: {self.value:.6g}",
                f"avg MACs {format_macs(self.avg_macs)} "
                f"({self.full_macs / self.avg_macs:.2f}x fewer), NFE {self.nfe}",
                f"seconds: generate {t['generate']:.2f}, features {t['features']:.2f}, "
                f"{self.metric} {t['metric']:.3f}"]


def score_schedule(ev: ModelEvaluator, schedule: Schedule) -> ScheduleScore:
    """The schedule's score by the evaluator's metric, its cost, and where the time went."""
    value = ev.score(schedule)
    return ScheduleScore(ev.settings.metric, value, ev.avg_macs(schedule), ev.full_macs,
                         schedule.nfe, dict(ev.last_timings))


def scored_features(ev: ModelEvaluator, reference: Any, schedules: Sequence[Schedule],
                    labels: Sequence[str], metric: str = "fid",
                    log: Log = print) -> list[np.ndarray]:
    """Each schedule's features on the evaluator's seeds (from the features cache when scored
    before: `validate` fills it too), their Fréchet distance to `reference` logged as they come
    (`metric` names it: "fid" for real images' statistics, "rfid" for the teacher's); returns
    the features, for a paired bootstrap."""
    features = []
    n, seed = ev.settings.num_images, ev.settings.seed
    for label, schedule in zip(labels, schedules, strict=True):
        features.append(ev.schedule_features(schedule, progress=True))
        value = reference.frechet_to(features[-1])
        prefix = f"{label}: " if len(schedules) > 1 else ""
        log(f"{prefix}{metric}: {value:.4f}")
        log(f"{prefix}{n} images from seed {seed}; NFE {schedule.nfe}, avg MACs "
            f"{format_macs(ev.avg_macs(schedule))}")
    return features


def bootstrap_lines(reference: Any, features: Sequence[np.ndarray], labels: Sequence[str],
                    resamples: int, reference_features: np.ndarray | None = None,
                    metric: str = "fid") -> list[str]:
    """Each value's paired-bootstrap SE and each set's difference from the first, as lines:
    FID against real images' statistics, or rFID with the teacher's `reference_features`
    resampled with the same rows."""
    from tqdm.auto import tqdm

    from flexopt.metrics import paired_bootstrap

    with tqdm(total=resamples, desc="bootstrap", unit="resample") as bar:
        boot = paired_bootstrap(reference, features, resamples, progress=bar.update,
                                reference_features=reference_features)
    lines = [f"paired bootstrap, {resamples} resamples of the {features[0].shape[0]} images:"]
    lines += [f"  {metric} {label}: {boot.values[i]:.4f} ± {boot.se(i):.4f} (SE)"
              for i, label in enumerate(labels)]
    for i, label in enumerate(labels[1:], start=1):
        diff = boot.difference(i, 0)
        verdict = ("lower" if diff.high < 0 else "higher") if diff.excludes_zero() else \
            "no clear difference"
        lines.append(f"  {metric} {label} - {metric} {labels[0]}: {diff}: {verdict}")
    return lines
