"""The library call behind `flexopt search`: config → storage → study → baselines → optimize.

`run_search(SearchJob)` is the whole command as one call, over one worker or several processes;
the worker loop itself is `flexopt.search.loop.optimize`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from flexopt.errors import FlexoptError, user_warnings
from flexopt.run.budget import Budget, format_macs
from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB
from flexopt.search.baselines import baseline_schedules, enqueue_baselines_once
from flexopt.search.config import EvolutionConfig, SpaceChoices, StudyConfig, check_cost
from flexopt.search.loop import optimize
from flexopt.search.objective import (
    Objective,
    as_budget,
    avg_cost,
    full_cost,
    noise_schedule,
)
from flexopt.search.pruning import DEFAULT_PRUNER, check_pruner, make_pruner, parse_rungs
from flexopt.search.storage import StudyLock, check_storage, make_storage, mask_url
from flexopt.search.study import (
    TrialCounts,
    default_storage,
    feasible_trials,
    make_sampler,
    open_study,
)

if TYPE_CHECKING:
    from flexopt.search.config import Space

Log = Callable[[str], None]


@dataclass(frozen=True)
class SearchJob:
    """Everything `flexopt search` takes: the model, the space and budget, the study, rFID."""

    model: str
    space: Space | SpaceChoices  # SpaceChoices with auto choices: fitted to the budget
    budget: Budget | None
    cost: str = "macs"  # what the budget prices: macs, or latency (wall-clock, profiled)
    n_trials: int = 100
    storage: str | None = None  # default: sqlite:///STUDY_NAME.db in the working directory
    study_name: str = "flexopt"
    sampler: str = "ddim"  # the diffusion sampler of the schedules
    search_sampler: str = "evo"  # evo, random, tpe, nsga2
    multi_objective: bool = False
    baselines: str = "feasible"  # feasible, all, best, none (search.baselines.BASELINE_MODES)
    pruner: str | None = None  # a name in search.pruning.PRUNERS; None: its default
    rungs: tuple[int, ...] | str | None = None  # image counts; None / "auto": 8, 16, 32, …
    search_seed: int | None = None
    artifacts: str | None = None
    upload_artifacts: bool = True
    num_images: int = StudyConfig.num_images
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    dtype: str = "float32"
    prompts: tuple[str, ...] = ()
    guidance_scale: float | None = None
    class_labels: tuple[int, ...] = ()
    metric: str = "rfid"  # or "fid": against `reference`, a data set (flexopt.metrics.objectives)
    reference: str | None = None
    reference_split: str = "test"
    reference_images: int | None = None
    clip_model: str | None = None  # record each trial's CLIP score (text pipelines)
    clip_guard: float | None = None  # CLIP score at least the teacher's minus this
    cache_dir: str | None = None
    inception_weights: str | None = None
    prefix_cache_mb: float = DEFAULT_PREFIX_CACHE_MB  # shared-prefix reuse (run.prefix); 0: off
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)
    timeout: float | None = None  # seconds, per worker
    heartbeat: int = 60  # seconds; a worker silent for twice this is presumed dead
    workers: int = 1
    progress: bool = True

    @property
    def storage_url(self) -> str:
        return self.storage or default_storage(self.study_name)

    @classmethod
    def from_config(cls, config: StudyConfig | str | Path | None = None,
                    **overrides: Any) -> SearchJob:
        """A job from a study config (TOML path or `StudyConfig`), `overrides` winning.

        Overrides set to None are ignored, so command-line flags can be passed as they come.
        """
        cfg = StudyConfig.load(config) if isinstance(config, str | Path) else config
        given = {k: v for k, v in overrides.items() if v is not None}
        if "budget" in given:
            given["budget"] = as_budget(given["budget"])
        base: dict[str, Any] = {}
        if cfg is not None:
            base = {"model": cfg.model, "space": cfg.choices, "budget": cfg.budget,
                    "num_images": cfg.num_images, "seed": cfg.seed, "sampler": cfg.sampler,
                    "study_name": cfg.study_name, "storage": cfg.storage,
                    "n_trials": cfg.n_trials, "evolution": cfg.evolution,
                    "prompts": _config_prompts(cfg), "guidance_scale": cfg.guidance_scale,
                    "class_labels": cfg.class_labels, "clip_model": cfg.clip_model,
                    "clip_guard": cfg.clip_guard, "pruner": cfg.pruner, "rungs": cfg.rungs,
                    "cost": cfg.cost, "metric": cfg.metric, "reference": cfg.reference,
                    "reference_split": cfg.reference_split,
                    "reference_images": cfg.reference_images}
            base = {k: v for k, v in base.items() if v not in (None, ())}
        merged = {**base, **given}
        if not merged.get("model"):
            raise FlexoptError("no model: give --model (a pipeline directory or hub id) or a "
                               "CONFIG with `model = ...`")
        if merged.get("space") is None:
            raise FlexoptError("no search space: give a study config (see studies/) or "
                               "--segments, --branches, --intervals")
        if merged.get("budget") is None and not merged.get("multi_objective"):
            raise FlexoptError("no budget: give --budget (e.g. 3G or 2.5x), a CONFIG with "
                               "`budget = ...`, or --multi-objective")
        if merged.get("budget") is None and getattr(merged["space"], "auto", False):
            raise FlexoptError("segments = \"auto\" fits the space to a budget: give --budget, "
                               "or explicit --segments")
        if isinstance(merged.get("baselines"), bool):
            merged["baselines"] = "feasible" if merged["baselines"] else "none"
        merged.setdefault("budget", None)
        check_cost(merged.get("cost", "macs"))
        if merged["budget"] is not None:
            merged["budget"].check_unit(merged.get("cost", "macs"))  # before the model loads
        job = cls(**merged)
        job.check_metric()  # --metric fid without --reference: one line before the model loads
        job.check_pruning()  # a bad pruner or rungs: one line before the model loads
        return job

    def check_metric(self) -> None:
        """Refuse an unknown metric, a data metric without a reference data set, and a
        reference with a teacher metric."""
        from flexopt.metrics.objectives import check_metric
        from flexopt.search.evaluator import EvalSettings

        EvalSettings(self.num_images, metric=check_metric(self.metric), reference=self.reference,
                     reference_split=self.reference_split,
                     reference_images=self.reference_images).check_reference()

    def check_pruning(self) -> None:
        """Refuse a pruner with several objectives, an unknown pruner, rungs that do not fit."""
        if self.multi_objective and self.pruner not in (None, "none"):
            raise FlexoptError(f"--pruner {self.pruner} with --multi-objective: Optuna's pruners "
                               "compare one objective; allowed: --pruner none")
        if self.pruner_name != "none":
            parse_rungs(self.rungs, self.num_images, self.pruner_name)

    @property
    def pruner_name(self) -> str:
        """The pruner this job uses: the one given, else the default (none for a
        multi-objective search, which Optuna's pruners do not support)."""
        if self.pruner is not None:
            return check_pruner(self.pruner)
        return "none" if self.multi_objective else DEFAULT_PRUNER

    @property
    def rung_counts(self) -> tuple[int, ...]:
        """The rungs (image counts) candidates report at; () without a pruner."""
        if self.pruner_name == "none":
            return ()
        return parse_rungs(self.rungs, self.num_images, self.pruner_name)


def _config_prompts(cfg: StudyConfig) -> tuple[str, ...]:
    from flexopt.models.conditioning import parse_prompts

    return tuple(parse_prompts((), cfg.prompt_file, cfg.prompt_column)) if cfg.prompt_file \
        else ()


@dataclass
class SearchResult:
    """What one `run_search` call did: the study, and the trials this call's workers ran."""

    study: optuna.Study
    storage: str
    ran: int
    queued: int
    timed_out: bool = False  # stopped by the time limit before the trial total


def run_search(job: SearchJob, log: Log = print) -> SearchResult:
    """Run (or resume) the study `job` describes until it holds `n_trials` searched candidates
    (and its baselines).

    With `job.workers > 1`, that many local processes share the study (one per GPU when there
    are GPUs). `log` receives the progress lines the CLI prints.
    """
    if job.workers > 1:
        return _search_workers(job, log)
    url = job.storage_url
    # the storage first: a wrong URL or an unreachable database costs no model load
    storage = make_storage(url, job.heartbeat)
    check_storage(storage, url)
    grids = None
    if job.upload_artifacts:  # a missing --artifacts for a database is one line now, too
        from flexopt.search.artifacts import SampleGridUploader

        grids = SampleGridUploader.for_storage(url, job.artifacts)
    stored = study_latency(storage, job.study_name) if job.cost == "latency" else None
    if stored is not None and stored.batch_size != job.batch_size:
        log(f"warning: the study's latency profile is for batches of {stored.batch_size}, this "
            f"worker's are {job.batch_size}: it prices by its own profile (give --batch-size "
            f"{stored.batch_size} to price as the study's other workers do)")
        stored = None
    objective = _objective(job, stored)
    ev, limit, space = objective.evaluator, objective.max_avg_macs, objective.space
    if stored is not None:
        log("latency: this worker prices schedules by the study's profile (every worker the "
            "same budget), measured on " + str(stored.key.get("device_name")))
    for line in _setup_lines(job, objective):
        log(line)
    smp = make_sampler(job.search_sampler, space, objective.feasible, job.evolution,
                       job.search_seed)
    # open (and check) the study before the teacher: a refused resume should not cost its images
    pruner = make_pruner(job.pruner_name, objective.rungs, job.num_images,
                         job.evolution.population)
    study = open_study(storage, job.study_name, objective.settings, smp, pruner)
    if objective.rungs:
        log(f"pruner: {job.pruner_name}, candidates scored on "
            f"{' → '.join(map(str, (*objective.rungs, job.num_images)))} images")
    elif job.rungs not in (None, "auto"):
        log("note: rungs are ignored without a pruner (--pruner none): every candidate is "
            "scored on all its images")
    lock = StudyLock(storage, job.study_name)
    entry = objective.teacher()
    log(f"teacher cache {'reused' if entry.status == 'hit' else entry.status}: {entry.path}")
    if job.reference:
        ref = ev.reference()
        log(f"objective: {job.metric} against {ev.settings.reference_text()} "
            f"({ref.stats.n} images; reference statistics "
            f"{'reused' if ref.status == 'hit' else ref.status})")
    for guard in objective.guards:
        teacher = objective.teacher_scores()[guard.score]
        log(f"teacher {guard.score} {teacher:.4g}: trials under {teacher - guard.margin:.4g} "
            f"(the teacher's minus {guard.margin:g}) are infeasible")
    if job.baselines != "none":
        total, offset = noise_schedule(ev.pipe)
        bl = baseline_schedules(space, job.sampler, full_cost(ev),
                                lambda s: avg_cost(ev, s), limit, mode=job.baselines,
                                train_timesteps=total, offset=offset)
        added = enqueue_baselines_once(study, lock, bl, space)
        if added:
            log(f"enqueued {added} baselines (DeepCache uniform, fewer-step teacher, DDIM "
                "quadratic)")
    if grids is not None:
        grids.teacher(study, entry.preview)
        objective.sample_grids = grids
    ran = optimize(study, objective, job.n_trials, timeout=job.timeout, progress=job.progress,
                   lock=lock)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    timed_out = (job.timeout is not None
                 and TrialCounts.of_study(study).searched < job.n_trials)
    return SearchResult(study, url, ran, queued, timed_out)


def study_latency(storage: Any, study_name: str) -> Any:
    """The latency profile a study prices with (recorded by its first trial), or None."""
    from flexopt.run.latency import LatencyProfile
    from flexopt.search.study import LATENCY_ATTR

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return None
    data = study.user_attrs.get(LATENCY_ATTR)
    if data is None:
        return None
    try:
        return LatencyProfile.from_json(data)
    except (ValueError, KeyError, TypeError) as err:
        raise FlexoptError(f"study {study_name!r} holds a latency profile that cannot be read "
                           f"({err}); allowed: a profile written by flexopt (delete the study "
                           f"user attr {LATENCY_ATTR!r} to measure again)") from None


def _objective(job: SearchJob, latency: Any = None) -> Objective:
    """The job's objective: its model loaded, its space fitted to the budget (priced by
    `latency`, a study's profile, when given)."""
    return Objective.from_model(
        job.model, job.space, job.budget, device=job.device, dtype=job.dtype,
        num_images=job.num_images, seed=job.seed, sampler=job.sampler,
        batch_size=job.batch_size, metric=job.metric, prompts=job.prompts,
        guidance_scale=job.guidance_scale, class_labels=job.class_labels,
        multi_objective=job.multi_objective, cache_dir=job.cache_dir,
        inception_weights=job.inception_weights, progress=job.progress,
        prefix_cache_mb=job.prefix_cache_mb, clip_model=job.clip_model,
        clip_guard=job.clip_guard, rungs=job.rung_counts, cost=job.cost,
        reference=job.reference, reference_split=job.reference_split,
        reference_images=job.reference_images,
        latency_progress=_latency_bar() if job.progress else None, latency_profile=latency)


def _latency_bar() -> Callable[[int, int], None]:
    """A progress bar over a latency profile's timed runs (shown only if it is measured)."""
    from tqdm.auto import tqdm

    bar: list[Any] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc="latency profile", unit="run", leave=False))
        bar[0].update(1)
        if done == total:
            bar[0].close()
    return update


def _setup_lines(job: SearchJob, objective: Objective) -> list[str]:
    """What a search says before it starts: the model's cost, the budget, the space fitted."""
    ev, limit, space = objective.evaluator, objective.max_avg_macs, objective.space
    lines = [f"model {job.model}: full step {format_macs(ev.full_macs)} MACs, max branch "
             f"{ev.profile.max_branch}; teacher {job.sampler} {space.t_ref} steps"]
    latency = getattr(ev, "latency", None)
    if latency is not None:
        lines.append(_latency_line(latency, space.t_ref))
    if limit is not None and latency is not None:
        lines.append(f"budget: under {latency.describe(limit)} (a full step: "
                     f"{latency.format(latency.full)}; {latency.speedup(limit, space.t_ref):.2f}x "
                     "faster than the teacher, predicted)")
    elif limit is not None:
        lines.append(f"budget: avg MACs < {format_macs(limit)} "
                     f"({ev.full_macs / limit:.2f}x fewer than the teacher)")
    fit = objective.space_fit
    if fit is None:
        return lines
    fitted = " (fitted to the budget)" if getattr(job.space, "auto", False) else ""
    if space.kind == "segments":
        lines.append(f"space: N-segment {','.join(map(str, space.segments))}{fitted}, branches "
                     f"{','.join(map(str, space.branches))}, intervals "
                     f"{','.join(map(str, space.intervals))}; cost {fit.costs}")
    else:
        lines.append(
            f"space: {space.kind}, step counts {_choices(space.steps)}{fitted}"
            + (f", branches {','.join(map(str, space.branches))}" if space.branches else "")
            + f"; cost {fit.costs}")
    if fit.warning:
        lines.append(f"warning: {fit.warning}")
    return lines


def _latency_line(latency: Any, t_ref: int) -> str:
    """The latency profile a search prices with, in one line."""
    parts = ", ".join(f"b={b} {latency.format(s)}"
                      for b, s in zip(latency.branches, latency.partial, strict=True))
    return (f"latency profile (batch {latency.batch_size}, {latency.key.get('threads')} threads, "
            f"{latency.key.get('device_name')}): full step {latency.format(latency.full)}, "
            f"partial {parts or 'none'}, fixed {latency.format(latency.fixed)} per call; teacher "
            f"{latency.seconds(t_ref * latency.full):.3g} s per batch")


def _choices(values: Sequence[int]) -> str:
    """`24-50` for a run of consecutive choices, else `19,20,21`."""
    vals = list(values)
    if len(vals) > 3 and vals == list(range(vals[0], vals[-1] + 1)):
        return f"{vals[0]}-{vals[-1]}"
    return ",".join(map(str, vals))


# ------------------------------------------------------------------------------ worker loop


# ----------------------------------------------------------------------------- local workers
def _search_workers(job: SearchJob, log: Log) -> SearchResult:
    """`job.workers` processes on this machine, one per GPU when there are GPUs."""
    import torch

    url = job.storage_url
    check_storage(make_storage(url, job.heartbeat), url)  # one error here, not one per worker
    gpus = torch.cuda.device_count() if job.device is None else 0
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = []
    for i in range(job.workers):
        device = f"cuda:{i % gpus}" if gpus else job.device
        seed = None if job.search_seed is None else job.search_seed + i
        worker = replace(job, workers=1, device=device, search_seed=seed, progress=False)
        procs.append(ctx.Process(target=_worker_main, args=(worker, i, results), daemon=False))
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # they got the same Ctrl-C; wait for them to requeue their trials
            p.join()
        raise
    ran, errors = 0, {}
    while not results.empty():
        kind, i, value = results.get()
        if kind == "ran":
            ran += value
        else:
            errors.setdefault(value, []).append(i)
    if len(errors) == 1:  # the same mistake in every worker: say it once
        raise FlexoptError(next(iter(errors)))
    if errors:
        raise FlexoptError("; ".join(f"worker {ws[0]}: {e}" for e, ws in errors.items()))
    failed = [f"worker {i} exited with status {p.exitcode}" for i, p in enumerate(procs)
              if p.exitcode not in (0, None)]
    if failed:
        raise FlexoptError("; ".join(failed))
    storage = make_storage(url, None)
    study = optuna.load_study(study_name=job.study_name, storage=storage)
    queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    log(f"{job.workers} workers ran {ran} trials this time")
    return SearchResult(study, url, ran, queued)


def _worker_main(job: SearchJob, index: int, results: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a worker prints its own lines
    prefix = f"worker {index}: "
    try:
        with user_warnings():  # a spawned process: the CLI's warning format is not inherited
            result = run_search(job, log=lambda line: print(prefix + line, flush=True))
    except FlexoptError as err:
        results.put(("error", index, str(err)))
        return
    except KeyboardInterrupt:
        print(prefix + "interrupted; its running trial is back in the queue", flush=True)
        raise SystemExit(130) from None
    print(f"{prefix}ran {result.ran} trials", flush=True)
    results.put(("ran", index, result.ran))


def summary(result: SearchResult, metric: str, baselines: bool | str) -> list[str]:
    """The closing lines of `flexopt search`: this call's count, the bests, what to run next."""
    study, shown = result.study, mask_url(result.storage)
    name = study.study_name
    lines = [f"study {name!r} in {shown}: ran {result.ran} trials this time; in all "
             f"{TrialCounts.of_study(study).line()}"]
    if result.timed_out:
        lines.append("stopped by the time limit before the trial total; run the same command "
                     "again to continue the study")
    elif result.queued:
        lines.append(f"{result.queued} trials still queued: run again with a larger --n-trials")
    lines += prefix_reuse_line(study)
    feasible = feasible_trials(study)
    for label, group in (("searched", [t for t in feasible if "baseline" not in t.user_attrs]),
                         ("baseline", [t for t in feasible if "baseline" in t.user_attrs])):
        if not group:
            continue
        b = group[0]
        what = f" ({b.user_attrs['baseline']})" if "baseline" in b.user_attrs else ""
        lines.append(f"best {label} under budget: trial {b.number}{what}, {metric} "
                     f"{b.values[0]:.4g}, avg MACs {format_macs(b.user_attrs['avg_macs'])} "
                     f"({b.user_attrs['speedup']:.2f}x), NFE {b.user_attrs['nfe']}"
                     + _wall_clock(b.user_attrs))
        lines.append(f"  steps: {b.user_attrs['step_types']}")
    if feasible and "baseline" in feasible[0].user_attrs:
        lines.append(f"the best under the budget is a baseline "
                     f"({feasible[0].user_attrs['baseline']}): no searched candidate scored "
                     "better on the search's images")
    lines += [
        "next:",
        f"  flexopt export --storage {shown} --study-name {name} --best --out best.json   "
        "# the best under budget" + ("" if baselines in (False, "none") else
                                     ", baselines included"),
        f"  flexopt validate --storage {shown} --study-name {name} --num-images 1000 "
        "--bootstrap 1000   # best searched vs the baselines on unseen seeds",
        f"  flexopt report --storage {shown} --study-name {name} --out report.html",
        f"  flexopt dashboard --storage {shown}",
    ]
    return lines


def _wall_clock(attrs: dict[str, Any]) -> str:
    """A latency study's trial: its predicted wall-clock speedup and seconds per batch, and the
    seconds its generation took (scaled to a batch)."""
    if "predicted_speedup" not in attrs:
        return ""
    measured = attrs.get("measured_seconds")
    return (f"; wall-clock {attrs['predicted_speedup']:.2f}x predicted "
            f"({attrs['predicted_seconds']:.3g} s per batch"
            + (f", {measured:.3g} s measured)" if measured is not None else ")"))


def prefix_reuse_line(study: optuna.Study) -> list[str]:
    """One line on the U-Net calls shared-prefix reuse saved over the study (none: no line)."""
    attrs = [t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if "unet_calls_skipped" in t.user_attrs]
    skipped = sum(a["unet_calls_skipped"] for a in attrs)
    total = skipped + sum(a.get("unet_calls", 0) for a in attrs)
    if not total:
        return []
    if any("predicted_seconds" in a for a in attrs):
        return ["prefix reuse: off (a latency search measures each trial's own schedule)"]
    return [f"prefix reuse: {skipped} of {total} U-Net calls skipped ({skipped / total:.0%}) "
            f"over {len(attrs)} evaluated trials"]


__all__ = ["SearchJob", "SearchResult", "run_search", "summary"]
