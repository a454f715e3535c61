"""Scoring schedules on a real model: generate → Inception features → rFID against the teacher
(or, with the `fid` objective, FID against a data set).

`ModelEvaluator` is what a search calls for every candidate (it implements
`flexopt.search.objective.ScheduleEvaluator`): it knows the model's MACs profile (and, for a
latency budget, its latency profile), holds the teacher's cached statistics, and scores a schedule
by generating images from the same noises as the teacher.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.metrics import FeatureStats, check_metric, load_inception, needs_reference, score
from flexopt.metrics.clip import ClipComparison, ClipScorer
from flexopt.metrics.features import FEATURE_DIM
from flexopt.metrics.teacher import (
    ClipKey,
    ScheduleKey,
    TeacherCache,
    TeacherEntry,
    TeacherKey,
    fingerprint_modules,
)
from flexopt.models.conditioning import DEFAULT_GUIDANCE, files_digest, image_prompts
from flexopt.run.cost import MacsProfile, count_macs, schedule_cost
from flexopt.run.latency import LatencyProfile
from flexopt.run.pipeline import GeneratedImages, apply_schedule, generate_images, pipeline_kind
from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB, REUSABLE_KINDS, PrefixCache, PrefixReuse
from flexopt.search.pruning import check_rungs
from flexopt.space.schedule import Schedule


@dataclass(frozen=True)
class EvalSettings:
    """How candidates are scored: which images (count, seeds, prompts) and which metric (a data
    metric, `fid`, against the first `reference_images` of the `reference` data set's split)."""

    num_images: int
    seed: int = 0
    batch_size: int = 64
    metric: str = "rfid"
    prompts: tuple[str, ...] = ()
    guidance_scale: float = DEFAULT_GUIDANCE
    class_labels: tuple[int, ...] = ()
    images: tuple[str, ...] = ()  # input / control image files (img2img, inpaint, ControlNet)
    masks: tuple[str, ...] = ()  # inpainting masks
    reference: str | None = None  # fashion-mnist, digits, or a folder of images
    reference_split: str = "test"
    reference_images: int | None = None  # the first N (default: all)

    def check_reference(self) -> None:
        """A data metric needs a reference data set; a teacher metric takes none."""
        if needs_reference(self.metric) and not self.reference:
            raise FlexoptError(f"metric {self.metric!r} scores candidates against a data set: "
                               "give --reference (fashion-mnist, digits, or a folder of images)")
        if not self.reference and (self.reference_split != "test"
                                   or self.reference_images is not None):
            given = (f"--reference-split {self.reference_split}"
                     if self.reference_split != "test"
                     else f"--reference-images {self.reference_images}")
            raise FlexoptError(f"{given} was given without a reference data set; allowed: "
                               "--metric fid --reference DATA with it, or neither")
        if self.reference and not needs_reference(self.metric):
            raise FlexoptError(f"--reference {self.reference} was given, but metric "
                               f"{self.metric!r} scores candidates against the teacher; allowed: "
                               "--metric fid with --reference, or no --reference")
        if self.reference:
            from flexopt.models.data import check_data

            check_data(self.reference, self.reference_split)

    def reference_text(self) -> str | None:
        """The reference data set in a few words (None: a teacher metric), recorded on a
        study so that resuming against other data is refused."""
        if not needs_reference(self.metric):
            return None
        from flexopt.models.data import NAMES

        data = str(self.reference)  # a folder by its full path, as the statistics' cache keys it
        data = data if data in NAMES else str(Path(data).resolve())
        count = "all" if self.reference_images is None else f"first {self.reference_images}"
        return f"{data} {self.reference_split}, {count}"

    def conditioning(self) -> str | None:
        """What the images are conditioned on, in a few words plus a digest (None: nothing).

        A study records it, so resuming with other prompts or labels (another teacher) is refused.
        """
        parts = []
        if self.prompts:
            digest = hashlib.sha256("\n".join(self.prompts).encode()).hexdigest()[:16]
            parts.append(f"{len(self.prompts)} prompts sha256:{digest} in seeded order, "
                         f"guidance {self.guidance_scale:g}")
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
    clip: ClipScorer | None = None  # also score the CLIP score (text pipelines)
    profile: MacsProfile = field(init=False)
    # What the budget prices: `profile` (MACs), or a LatencyProfile (`use_latency`).
    cost_profile: MacsProfile | LatencyProfile = field(init=False)
    last_timings: dict[str, float] = field(init=False, default_factory=dict)
    last_counts: dict[str, int] = field(init=False, default_factory=dict)  # U-Net calls
    last_images: np.ndarray | None = field(init=False, default=None)
    last_scores: dict[str, float] = field(init=False, default_factory=dict)  # clip_score
    last_batch_seconds: float | None = field(init=False, default=None)
    _teacher: TeacherEntry | None = field(init=False, default=None)
    _teacher_key: TeacherKey | None = field(init=False, default=None)
    _teacher_clip: np.ndarray | None = field(init=False, default=None)
    _prefix_cache: PrefixCache | None = field(init=False, default=None)
    _prefix_context: str | None = field(init=False, default=None)
    _rung_stats: dict[int, FeatureStats] = field(init=False, default_factory=dict)
    _reference: TeacherEntry | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        check_metric(self.settings.metric)
        self.settings.check_reference()
        check_conditioning(self.pipe, self.settings)
        if self.clip is not None:
            check_clip(self.pipe, self.settings)
        self.profile = count_macs(self.pipe.unet)
        self.cost_profile = self.profile
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

    # ------------------------------------------------------------------- latency (issue 27)
    @property
    def latency(self) -> LatencyProfile | None:
        """The latency profile when the budget is wall-clock (`use_latency`), else None."""
        return self.cost_profile if isinstance(self.cost_profile, LatencyProfile) else None

    def use_latency(self, branches: Sequence[int], rounds: int = 5,
                    progress: Callable[[int, int], None] | None = None,
                    profile: LatencyProfile | None = None) -> LatencyProfile:
        """Price schedules in seconds: `profile` (a study's, so every worker prices alike), else
        the cached latency profile of this pipeline at the evaluator's batch size (measured now
        if not cached; `flexopt.metrics.latency`). Prefix reuse is turned off, so every trial's
        measured seconds are its own schedule's."""
        from flexopt.metrics.latency import latency_profile

        if profile is None:
            profile = latency_profile(
                self.pipe, sampler=self.sampler, batch_size=self.settings.batch_size,
                cache=self.cache_dir, rounds=rounds, branches=branches,
                generate_kwargs=self.generate_kwargs(), progress=progress).profile
        self.cost_profile = profile
        self._prefix_cache = None
        return profile

    def generate_kwargs(self) -> dict[str, Any]:
        """What `generate_images` takes besides the noise: prompts, labels, input images."""
        s = self.settings
        return {"prompts": s.prompts or None, "guidance_scale": s.guidance_scale,
                "class_labels": s.class_labels or None, "images": load_images(s.images, "RGB"),
                "masks": load_images(s.masks, "L")}

    # ---------------------------------------------------------------------------- images
    def images(self, schedule: Schedule, progress: bool | Callable[[], None] = False,
               reuse: bool = False, start: int = 0, stop: int | None = None
               ) -> GeneratedImages:
        """The schedule's images for this evaluator's noises (image i: seed + i), images
        `start .. stop - 1` (default: all).

        `reuse`: start each batch from the longest prefix state stored by earlier calls, and
        store this schedule's (when the prefix cache is on); the images are the same."""
        s = self.settings
        stop = s.num_images if stop is None else stop
        prefix = None
        if reuse and self._prefix_cache is not None:
            prefix = PrefixReuse(self._prefix_cache, self.prefix_context(), schedule)
        return generate_images(
            apply_schedule(self.pipe, schedule), stop - start, s.seed, s.batch_size,
            progress=progress, prefix=prefix, start=start, **self.generate_kwargs())

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

    def schedule_features(self, schedule: Schedule, progress: bool = False) -> np.ndarray:
        """The schedule's Inception features on this evaluator's noises, cached on disk (kind
        "features") beside the teacher's statistics: a held-out check scores the same baselines
        for every study of a budget, and a re-run scores nothing again. Built once however many
        workers ask (the cache's file lock); a corrupt entry is rebuilt."""
        steps = {k: v for k, v in schedule.to_dict().items() if k != "meta"}  # what it runs
        key = ScheduleKey(self.teacher_key().digest(), json.dumps(steps, sort_keys=True))

        def build() -> dict[str, np.ndarray]:
            gen = self.images(schedule, progress=progress)
            return {"features": self.features(gen.images, progress=progress)}

        arrays, *_ = TeacherCache(self.cache_dir, "features").get_or_build_arrays(key, build)
        feats = np.asarray(arrays.get("features"))
        if feats.shape != (self.settings.num_images, FEATURE_DIM):
            raise FlexoptError(f"the features cache holds {feats.shape} features for "
                               f"{self.settings.num_images} images; delete it to rebuild")
        return feats

    # --------------------------------------------------------------------------- teacher
    def teacher_key(self) -> TeacherKey:
        if self._teacher_key is None:  # the model fingerprint hashes every weight: once
            self._teacher_key = self._make_teacher_key()
        return self._teacher_key

    def _make_teacher_key(self) -> TeacherKey:
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
            prompts=tuple(s.prompts) + (("order:seeded-shuffle",) if s.prompts else ())
            + tuple(f"class:{c}" for c in s.class_labels)
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
                if self.clip is not None:  # the same images: no second teacher pass for CLIP
                    self._store_teacher_clip(gen.images)
                return FeatureStats.from_features(feats), preview

            self._teacher = TeacherCache(self.cache_dir).get_or_build(self.teacher_key(), build)
        return self._teacher

    # ------------------------------------------------------------------------------ CLIP
    def image_prompts(self) -> list[str]:
        """The prompt of each image (image i: seed + i), as the pipeline received them."""
        s = self.settings
        return image_prompts(s.prompts, s.seed, 0, s.num_images)

    def clip_scores(self, images: np.ndarray) -> np.ndarray:
        """Per-image CLIP scores of this evaluator's images against their prompts."""
        if self.clip is None:
            raise FlexoptError("no CLIP model: give --clip-model (or clip=ClipScorer.load(...))")
        return self.clip.scores(images, self.image_prompts())

    def _clip_key(self) -> ClipKey:
        assert self.clip is not None
        return ClipKey(self.teacher_key().digest(), self.clip.fingerprint)

    def _store_teacher_clip(self, images: np.ndarray) -> None:
        scores = self.clip_scores(images)
        TeacherCache(self.cache_dir, "clip").store_arrays(self._clip_key(), {"scores": scores})
        self._teacher_clip = scores

    def teacher_clip(self) -> np.ndarray:
        """The teacher's per-image CLIP scores: cached beside its statistics (built with them,
        or from a new teacher pass when the statistics were cached before)."""
        if self._teacher_clip is None:
            self.teacher()  # a teacher built now scores CLIP from the same images
        if self._teacher_clip is None:
            def build() -> dict[str, np.ndarray]:
                gen = self.images(self.teacher_schedule, progress=self.progress)
                return {"scores": self.clip_scores(gen.images)}

            arrays, *_ = TeacherCache(self.cache_dir, "clip").get_or_build_arrays(
                self._clip_key(), build)
            scores = np.asarray(arrays.get("scores"))
            if scores.shape != (self.settings.num_images,):
                raise FlexoptError(f"the teacher's CLIP cache holds {scores.shape} scores for "
                                   f"{self.settings.num_images} images; delete it to rebuild")
            self._teacher_clip = scores
        return self._teacher_clip

    def teacher_scores(self) -> dict[str, float]:
        """The teacher's value of every extra score (`last_scores`' names): what a guard keeps
        a candidate near."""
        return {} if self.clip is None else {"clip_score": float(self.teacher_clip().mean())}

    def clip_comparison(self, schedule: Schedule, progress: bool = False) -> ClipComparison:
        """The schedule's CLIP score next to the teacher's, image by image."""
        teacher = self.teacher_clip()
        gen = self.images(schedule, progress=progress, reuse=True)
        return ClipComparison(self.clip_scores(gen.images), teacher)

    # ----------------------------------------------------------------- score (ScheduleEvaluator)
    def score(self, schedule: Schedule, rungs: Sequence[int] = (),
              on_rung: Callable[[int, float], object] | None = None) -> float:
        """The metric (rFID by default) of the schedule's images against the teacher's.

        `rungs` (increasing image counts below `num_images`): the images are made in pieces,
        `0 .. rungs[0] - 1`, then up to the next rung, …, then up to `num_images`, and after each
        rung `on_rung(n, value)` gets the metric of the first n images against the teacher's
        first n (the same noises). It may raise (`optuna.TrialPruned`) to stop there: the later
        images are never made. Pieces split the batches at the rungs, so every candidate's
        batches, and so the prefix states they share, are the same."""
        metric, total = self.settings.metric, self.settings.num_images
        bounds = (*check_rungs(rungs, total), total)
        timings = dict.fromkeys(("generate", "features", "metric"), 0.0)
        images: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        counts = {"unet_calls": 0, "unet_calls_skipped": 0}
        self.last_images, self.last_scores = None, {}
        self.last_batch_seconds, sampling = None, 0.0
        start, value = 0, math.nan
        for stop in bounds:
            t0 = time.perf_counter()
            gen = self.images(schedule, reuse=True, start=start, stop=stop)
            t1 = time.perf_counter()
            images.append(gen.images)
            feats.append(self.features(gen.images))
            t2 = time.perf_counter()
            sampling += gen.seconds  # the pipeline calls' wall-clock (not loading the inputs)
            counts["unet_calls"] += gen.calls
            counts["unet_calls_skipped"] += gen.skipped
            part = np.concatenate(feats)
            value = score(metric, self.target(stop), part)
            timings["generate"] += t1 - t0
            timings["features"] += t2 - t1
            timings["metric"] += time.perf_counter() - t2
            self.last_timings, self.last_counts = dict(timings), dict(counts)
            # sampling seconds scaled to one batch: what a latency profile predicts (rung pieces
            # are smaller batches: on a GPU a trial stopped at a rung reads slower per image)
            self.last_batch_seconds = sampling * self.settings.batch_size / stop
            if stop < total and on_rung is not None:
                on_rung(stop, float(value))
            start = stop
        all_images = np.concatenate(images)
        if self.clip is not None:
            t3 = time.perf_counter()
            self.last_scores["clip_score"] = float(self.clip_scores(all_images).mean())
            self.last_timings["clip"] = time.perf_counter() - t3
        self.last_images = all_images
        return float(value)

    def target(self, n: int) -> FeatureStats:
        """What the first `n` images are scored against: the teacher's first `n` (same noises),
        or for a data metric the reference data set's statistics, whatever `n`."""
        if needs_reference(self.settings.metric):
            return self.reference().stats
        return self.teacher().stats if n == self.settings.num_images else self.teacher_rung(n)

    def reference(self, data: str | None = None, split: str | None = None,
                  num_images: int | None = None) -> TeacherEntry:
        """A data set's cached Inception statistics in this evaluator's feature space: `data`
        (default: the settings' reference), its `split`, its first `num_images` (default: all).
        Built once however many workers ask (the cache's file lock)."""
        from flexopt.metrics.reference import reference_stats

        s = self.settings
        mine = data is None
        if mine and self._reference is not None:
            return self._reference
        if mine:
            if not s.reference:
                raise FlexoptError("no reference data set: give --reference (fashion-mnist, "
                                   "digits, or a folder of images)")
            data, split, num_images = s.reference, s.reference_split, s.reference_images
        size = self.pipe.unet.config.sample_size
        size = size if isinstance(size, int) else size[0]
        entry = reference_stats(data, split or "test", size, self.extractor,
                                self.extractor.weights.sha256, num_images, self.cache_dir,
                                progress=self.progress)
        if mine:
            self._reference = entry
        return entry

    def teacher_rung(self, n: int) -> FeatureStats:
        """The teacher's statistics over its first `n` images (what a rung compares with)."""
        if n not in self._rung_stats:
            feats = self.teacher().stats.features
            if feats is None:
                raise FlexoptError("the teacher cache holds no raw features, which rungs need; "
                                   "delete it to rebuild")
            self._rung_stats[n] = FeatureStats.from_features(feats[:n])
        return self._rung_stats[n]


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


def check_clip(pipe: Any, settings: EvalSettings) -> None:
    """The CLIP score compares images with their prompts: a text pipeline and prompts."""
    if pipeline_kind(pipe) == "unconditional":
        raise FlexoptError(f"the CLIP score needs a text-to-image pipeline; {type(pipe).__name__} "
                           "takes no prompts; allowed: no --clip-model / --clip-guard")
    if not settings.prompts:
        raise FlexoptError("the CLIP score compares images with their prompts: give "
                           "--prompt-file (or --prompt, or `prompt_file` in the config's [rfid])")


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
