"""Scoring schedules on a real model: generate → Inception features → rFID against the teacher.

`ModelEvaluator` is what a search calls for every candidate (it implements
`flexopt.study.ScheduleEvaluator`): it knows the model's MACs profile, holds the teacher's cached
statistics, and scores a schedule by generating images from the same noises as the teacher.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from flexopt.conditioning import DEFAULT_GUIDANCE, files_digest
from flexopt.cost import MacsProfile, count_macs, schedule_cost
from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, check_metric, load_inception, score
from flexopt.metrics.teacher import TeacherCache, TeacherEntry, TeacherKey, fingerprint_modules
from flexopt.pipeline import GeneratedImages, apply_schedule, generate_images, pipeline_kind
from flexopt.prefix import DEFAULT_PREFIX_CACHE_MB, REUSABLE_KINDS, PrefixCache, PrefixReuse
from flexopt.schedule import Schedule


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are scored: which images (count, seeds, prompts) and which metric."""

    num_images: int
    seed: int = 0
    batch_size: int = 64
    metric: str = "rfid"
    prompts: tuple[str, ...] = ()
    guidance_scale: float = DEFAULT_GUIDANCE
    class_labels: tuple[int, ...] = ()
    images: tuple[str, ...] = ()  # input / control image files (img2img, inpaint, ControlNet)
    masks: tuple[str, ...] = ()  # inpainting masks

    def conditioning(self) -> str | None:
        """What the images are conditioned on, in a few words plus a digest (None: nothing).

        A study records it, so resuming with other prompts or labels (another teacher) is refused.
        """
        parts = []
        if self.prompts:
            digest = hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()[:16]
            parts.append(f"{len(self.prompts)} prompts sha256:{digest}, guidance "
                         f"{self.guidance_scale:g}")
        if self.class_labels:
            digest = hashlib.sha256(
                ",".join(map(str, self.class_labels)).encode()).hexdigest()[:16]
            parts.append(f"{len(self.class_labels)} class labels sha256:{digest}")
        for what, files in (("input images", self.images), ("masks", self.masks)):
            if files:
                parts.append(f"{len(files)} {what} sha256:{files_digest(files)}")
        return "; ".join(parts) or None


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
    prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB  # shared-prefix reuse budget; 0: off
    profile: MacsProfile = field(init=False)
    last_timings: dict[str, float] = field(init=False, default_factory=dict)
    last_counts: dict[str, int] = field(init=False, default_factory=dict)  # U-Net calls
    last_images: np.ndarray | None = field(init=False, default=None)
    _teacher: TeacherEntry | None = field(init=False, default=None)
    _prefix_cache: PrefixCache | None = field(init=False, default=None)
    _prefix_context: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_metric(self.settings.metric)
        check_conditioning(self.pipe, self.settings)
        self.profile = count_macs(self.pipe.unet)
        device = self.pipe._execution_device
        self.extractor = load_inception(
            self.inception_weights, cache_dir=self.cache_dir, device=device
        )
        cache = PrefixCache(self.prefix_cache_mb)  # checks the budget
        if cache.budget_bytes > 0 and pipeline_kind(self.pipe) in REUSABLE_KINDS:
            self._prefix_cache = cache

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The shared-prefix state cache; None when off (budget 0, or a pipeline kind whose
        resume would not be exact: img2img, inpainting, ControlNet)."""
        return self._prefix_cache

    # ------------------------------------------------------------------ cost (ScheduleEvaluator)
    @property
    def full_macs(self) -> float:
        return float(self.profile.full)

    def avg_macs(self, schedule: Schedule) -> float:
        return schedule_cost(schedule, self.profile).avg_macs

    # ---------------------------------------------------------------------------- images
    def images(self, schedule: Schedule, progress: bool | Callable[[], None] = False,
               reuse: bool = False) -> GeneratedImages:
        """The schedule's images for this evaluator's noises (image i: seed + i).

        `reuse`: start each batch from the longest prefix state stored by earlier calls, and
        store this schedule's (when the prefix cache is on); the images are the same."""
        s = self.settings
        prefix = None
        if reuse and self._prefix_cache is not None:
            prefix = PrefixReuse(self._prefix_cache, self.prefix_context(), schedule)
        return generate_images(
            apply_schedule(self.pipe, schedule), s.num_images, s.seed, s.batch_size,
            prompts=s.prompts or None, guidance_scale=s.guidance_scale,
            class_labels=s.class_labels or None, images=load_images(s.images, "RGB"),
            masks=load_images(s.masks, "L"), progress=progress, prefix=prefix,
        )

    def prefix_context(self) -> str:
        """What a prefix state depends on besides the schedule and the batch: a digest of the
        teacher key (model weights, pipeline, scheduler config, seed, conditioning, dtype) and
        the device."""
        if self._prefix_context is None:  # the model fingerprint hashes weights: once
            text = json.dumps([asdict(self.teacher_key()), str(self.pipe._execution_device)],
                              sort_keys=True, default=str)
            self._prefix_context = hashlib.sha256(text.encode()).hexdigest()
        return self._prefix_context

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
            prompts=tuple(s.prompts) + tuple(f"class:{c}" for c in s.class_labels)
            + ((f"inputs:{s.conditioning()}",) if s.images else ()),
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
        gen = self.images(schedule, reuse=True)
        t1 = time.perf_counter()
        feats = self.features(gen.images)
        t2 = time.perf_counter()
        value = score(self.settings.metric, teacher, feats)
        t3 = time.perf_counter()
        self.last_timings = {"generate": t1 - t0, "features": t2 - t1, "metric": t3 - t2}
        self.last_counts = {"unet_calls": gen.calls, "unet_calls_skipped": gen.skipped}
        self.last_images = gen.images
        return float(value)


def check_conditioning(pipe: Any, settings: EvalSettings) -> None:
    """Refuse prompts or class labels the model cannot take, and a missing required label."""
    config = pipe.unet.config
    num_classes = config.get("num_class_embeds")
    conditional = num_classes is not None or config.get("class_embed_type") is not None
    kind = pipeline_kind(pipe)
    name = type(pipe).__name__
    if settings.prompts and kind == "unconditional":
        raise FlexoptError(f"prompts were given, but {name} is not a text-to-image "
                           "pipeline; allowed: no prompts")
    takes = {"image": ("images",), "inpaint": ("images", "masks")}.get(kind, ())
    for what, flag in (("images", "--init-images"), ("masks", "--mask-images")):
        given = bool(getattr(settings, what))
        if given and what not in takes:
            raise FlexoptError(f"{flag} was given, but {name} takes no input {what}; allowed: "
                               f"no {flag}")
        if what in takes and not given:
            raise FlexoptError(f"{name} needs input {what}: give {flag} DIR")
    if settings.class_labels:
        if not conditional:
            raise FlexoptError("class labels were given, but this model's U-Net is not "
                               "class-conditional; allowed: no class labels")
        bad = [c for c in settings.class_labels if num_classes is not None and c >= num_classes]
        if bad:
            raise FlexoptError(f"class label {bad[0]} is beyond this model; allowed: "
                               f"0..{num_classes - 1}")
    elif conditional:
        hint = f" (e.g. 0-{num_classes - 1})" if num_classes else ""
        raise FlexoptError("this model is class-conditional: give class labels"
                           f"{hint} with --class-labels or `class_labels` in [rfid]")


def load_images(paths: tuple[str, ...], mode: str) -> list[Any] | None:
    """The image files as PIL images in `mode` ('RGB' inputs, 'L' masks); None for none."""
    if not paths:
        return None
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in paths:
        try:
            with Image.open(path) as img:
                out.append(img.convert(mode))
        except (OSError, UnidentifiedImageError) as err:
            raise FlexoptError(f"image {path!r} cannot be read: {err}; allowed: PNG, JPEG, "
                               "WebP or BMP files") from None
    return out
