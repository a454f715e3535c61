"""Scoring schedules on a real model: generate → Inception features → rFID against the teacher.

`ModelEvaluator` is what a search calls for every candidate (it implements
`flexopt.study.ScheduleEvaluator`): it knows the model's MACs profile, holds the teacher's cached
statistics, and scores a schedule by generating images from the same noises as the teacher.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexopt.cost import MacsProfile, count_macs, schedule_cost
from flexopt.metrics import FeatureStats, check_metric, load_inception, score
from flexopt.metrics.teacher import TeacherCache, TeacherEntry, TeacherKey, fingerprint_modules
from flexopt.pipeline import GeneratedImages, apply_schedule, generate_images
from flexopt.schedule import Schedule


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are scored: which images (count, seeds, prompts) and which metric."""

    num_images: int
    seed: int = 0
    batch_size: int = 64
    metric: str = "rfid"
    prompts: tuple[str, ...] = ()
    guidance_scale: float = 7.5
    class_labels: tuple[int, ...] = ()


@dataclass
class ModelEvaluator:
    """Costs and scores schedules of one pipeline against its teacher (`t_ref` full steps)."""

    pipe: Any
    sampler: str
    t_ref: int
    settings: EvalSettings
    cache_dir: str | None = None
    inception_weights: str | None = None
    progress: bool = True
    profile: MacsProfile = field(init=False)
    last_timings: dict[str, float] = field(init=False, default_factory=dict)
    last_images: np.ndarray | None = field(init=False, default=None)
    _teacher: TeacherEntry | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_metric(self.settings.metric)
        self.profile = count_macs(self.pipe.unet)
        device = self.pipe._execution_device
        self.extractor = load_inception(
            self.inception_weights, cache_dir=self.cache_dir, device=device
        )

    # ------------------------------------------------------------------ cost (ScheduleEvaluator)
    @property
    def full_macs(self) -> float:
        return float(self.profile.full)

    def avg_macs(self, schedule: Schedule) -> float:
        return schedule_cost(schedule, self.profile).avg_macs

    # ---------------------------------------------------------------------------- images
    def images(self, schedule: Schedule, progress: bool | Callable[[], None] = False
               ) -> GeneratedImages:
        """The schedule's images for this evaluator's noises (image i: seed + i)."""
        s = self.settings
        return generate_images(
            apply_schedule(self.pipe, schedule), s.num_images, s.seed, s.batch_size,
            prompts=s.prompts or None, guidance_scale=s.guidance_scale,
            class_labels=s.class_labels or None, progress=progress,
        )

    def features(self, images: np.ndarray, progress: bool = False) -> np.ndarray:
        """Inception features of float NHWC [0, 1] images."""
        return self.extractor(np.ascontiguousarray(images.transpose(0, 3, 1, 2)), progress)

    # --------------------------------------------------------------------------- teacher
    def teacher_key(self) -> TeacherKey:
        pipe, s = self.pipe, self.settings
        modules = {name: getattr(pipe, name, None) for name in ("unet", "vae", "vqvae",
                                                                   "text_encoder")}
        return TeacherKey(
            model=fingerprint_modules(modules),
            pipeline=type(pipe).__name__,
            scheduler=json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str),
            sampler=self.sampler,
            t_ref=self.t_ref,
            seed=s.seed,
            num_images=s.num_images,
            prompts=tuple(s.prompts) + tuple(f"class:{c}" for c in s.class_labels),
            guidance_scale=s.guidance_scale if s.prompts else None,
            dtype=str(pipe.unet.dtype).removeprefix("torch."),
            features=self.extractor.weights.sha256,
        )

    @property
    def teacher_schedule(self) -> Schedule:
        return Schedule.full(self.t_ref, sampler=self.sampler)

    def teacher(self) -> TeacherEntry:
        """The teacher's statistics: from the cache, or generated now and cached."""
        if self._teacher is None:
            def build() -> tuple[FeatureStats, np.ndarray]:
                gen = self.images(self.teacher_schedule, progress=self.progress)
                feats = self.features(gen.images, progress=self.progress)
                preview = np.round(gen.images * 255).astype(np.uint8).transpose(0, 3, 1, 2)
                return FeatureStats.from_features(feats), preview

            self._teacher = TeacherCache(self.cache_dir).get_or_build(self.teacher_key(), build)
        return self._teacher

    # ----------------------------------------------------------------- score (ScheduleEvaluator)
    def score(self, schedule: Schedule) -> float:
        """The metric (rFID by default) of the schedule's images against the teacher's."""
        teacher = self.teacher().stats
        t0 = time.perf_counter()
        gen = self.images(schedule)
        t1 = time.perf_counter()
        feats = self.features(gen.images)
        t2 = time.perf_counter()
        value = score(self.settings.metric, teacher, feats)
        t3 = time.perf_counter()
        self.last_timings = {"generate": t1 - t0, "features": t2 - t1, "metric": t3 - t2}
        self.last_images = gen.images
        return float(value)


def parse_prompts(prompts: Sequence[str], prompt_file: str | None) -> tuple[str, ...]:
    """Prompts given with --prompt (repeatable) and/or one per line in --prompt-file."""
    from flexopt.errors import FlexoptError

    out = [p for p in prompts if p.strip()]
    if prompt_file:
        try:
            with open(prompt_file, encoding="utf-8") as f:
                out += [line.strip() for line in f if line.strip()]
        except OSError as err:
            raise FlexoptError(
                f"prompt file {prompt_file!r} cannot be read: {err.strerror}"
            ) from None
    return tuple(out)

