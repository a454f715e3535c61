"""Benchmark (2): seconds per candidate during a real evolutionary search, split into generate /
features / distance, with and without shared-prefix reuse, on the same candidates.

Runs a search (Flexiffusion's evolution, the demo's space, budget and evolution settings unless
--config says otherwise) on --model with prefix reuse on, then scores the very same candidates, in
the same order, with reuse off; the teacher is built first and not measured. Prints a table
(means per candidate) and writes JSON (machine, date, arguments, every candidate's numbers). Also
checks that both ways give the same rFID for every candidate.

    OMP_NUM_THREADS=2 python benchmarks/bench_search.py --model flexopt:fashion-mnist \\
        --images 32 --candidates 40 --out bench_search.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STAGES = ("generate", "features", "metric")


@dataclasses.dataclass(frozen=True)
class Measure:
    """One candidate scored one way: its seconds by stage and its U-Net calls."""

    rfid: float
    seconds: dict[str, float]
    unet_calls: int
    unet_calls_skipped: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from flexopt.cli.demo import DEMO_CONFIG
    from flexopt.run.prefix import DEFAULT_PREFIX_CACHE_MB

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist",
                    help="Pipeline directory, hub id or flexopt:NAME (default: the embedded one).")
    ap.add_argument("--config", default=str(DEMO_CONFIG),
                    help="Study TOML giving the space, budget, sampler and evolution settings "
                         "(default: the demo's).")
    ap.add_argument("--t-ref", type=int, default=None, help="Teacher steps (default: CONFIG's).")
    ap.add_argument("--budget", default=None, help="Budget, e.g. 2.5x (default: CONFIG's).")
    ap.add_argument("--images", type=int, default=None,
                    help="Images per candidate (default: CONFIG's).")
    ap.add_argument("--candidates", type=int, default=40,
                    help="Searched candidates to evaluate (duplicates and infeasible ones are "
                         "not counted).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--prefix-cache-mb", type=float, default=DEFAULT_PREFIX_CACHE_MB,
                    help="Prefix cache budget of the run with reuse (MiB, > 0).")
    ap.add_argument("--search-seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="Torch device (default: cuda if available).")
    ap.add_argument("--cache-dir", default=None,
                    help="Teacher / Inception cache (default: a temporary folder).")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", default="bench_search.json")
    args = ap.parse_args(argv)
    for name in ("candidates", "images", "batch_size", "t_ref"):
        value = getattr(args, name)
        if value is not None and value < 1:
            ap.error(f"--{name.replace('_', '-')} {value} is invalid; allowed: >= 1")
    if not args.prefix_cache_mb > 0:
        ap.error(f"--prefix-cache-mb {args.prefix_cache_mb} is invalid; allowed: > 0 (the run "
                 "without reuse is part of the benchmark)")
    return args


def build_objective(args: argparse.Namespace, cache_dir: str) -> Any:
    """The search's objective, as `flexopt search` builds it from the config and the flags."""
    from flexopt.models.loading import load_pipeline, parse_device
    from flexopt.search.config import StudyConfig
    from flexopt.search.objective import Objective

    cfg = StudyConfig.load(args.config)
    choices = cfg.choices if args.t_ref is None else dataclasses.replace(cfg.choices,
                                                                         t_ref=args.t_ref)
    pipe = load_pipeline(args.model, device=parse_device(args.device))
    return cfg, Objective.from_pipeline(
        pipe, choices, args.budget or cfg.budget, num_images=args.images or cfg.num_images,
        seed=cfg.seed, sampler=cfg.sampler, batch_size=args.batch_size, cache_dir=cache_dir,
        inception_weights=args.inception_weights, model=args.model,
        prefix_cache_mb=args.prefix_cache_mb)


def from_trial(trial: Any) -> Measure:
    """The numbers a search trial recorded (user attrs)."""
    a = trial.user_attrs
    return Measure(trial.values[0], {s: a[f"seconds_{s}"] for s in STAGES}, a["unet_calls"],
                   a["unet_calls_skipped"])


def from_evaluator(ev: Any, rfid: float) -> Measure:
    """The numbers of the evaluator's last score."""
    return Measure(rfid, {s: ev.last_timings[s] for s in STAGES}, ev.last_counts["unet_calls"],
                   ev.last_counts["unet_calls_skipped"])


def search(objective: Any, cfg: Any, args: argparse.Namespace) -> list[Any]:
    """Run the evolution until `args.candidates` searched candidates were scored; their trials."""
    import optuna
    from optuna.trial import TrialState

    from flexopt.search.study import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    smp = make_sampler("evo", objective.space, objective.feasible, cfg.evolution,
                       args.search_seed)
    study = optuna.create_study(sampler=smp, direction="minimize")
    scored: list[Any] = []
    for _ in range(50 * args.candidates):  # infeasible children and duplicates are not counted
        study.optimize(objective, n_trials=1)
        trial = study.trials[-1]
        if trial.state == TrialState.COMPLETE and "unet_calls" in trial.user_attrs:
            scored.append(trial)
            if len(scored) == args.candidates:
                break
    return scored


def mean_row(label: str, rows: list[Measure]) -> dict[str, Any]:
    calls = sum(r.unet_calls for r in rows)
    skipped = sum(r.unet_calls_skipped for r in rows)
    seconds = {s: statistics.mean(r.seconds[s] for r in rows) for s in STAGES}
    return {"mode": label, "candidates": len(rows), "seconds_per_candidate": seconds,
            "total_per_candidate": sum(seconds.values()), "unet_calls": calls,
            "unet_calls_skipped": skipped,
            "unet_calls_saved": skipped / (calls + skipped) if calls + skipped else 0.0}


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'mode':15} {'cands':>5} {'generate':>9} {'features':>9} {'distance':>9} "
          f"{'total':>8} {'U-Net calls':>11} {'skipped':>8} {'saved':>6}")
    for r in rows:
        s = r["seconds_per_candidate"]
        print(f"{r['mode']:15} {r['candidates']:>5} {s['generate']:>9.3f} {s['features']:>9.3f} "
              f"{s['metric']:>9.4f} {r['total_per_candidate']:>8.3f} {r['unet_calls']:>11} "
              f"{r['unet_calls_skipped']:>8} {r['unet_calls_saved']:>6.0%}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to --out."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, objective = build_objective(args, args.cache_dir or tmp)
        t0 = time.perf_counter()
        objective.teacher()
        teacher_s = time.perf_counter() - t0
        trials = search(objective, cfg, args)
        with_reuse = [from_trial(t) for t in trials]
        off = dataclasses.replace(objective.evaluator, prefix_cache_mb=0.0)  # same teacher
        without = [from_evaluator(off, off.score(objective.schedule(t))) for t in trials]
    if not trials:
        sys.exit("no feasible candidate was scored: check --budget and the space")
    identical = all(a.rfid == b.rfid for a, b in zip(with_reuse, without, strict=True))
    rows = [mean_row("prefix reuse", with_reuse), mean_row("no reuse", without)]
    space = objective.space
    print(f"{args.model}: {cfg.sampler} t_ref {space.t_ref}, N-segment "
          f"{','.join(map(str, space.segments))}, {objective.evaluator.settings.num_images} "
          f"images per candidate, batch {args.batch_size}; teacher {teacher_s:.1f} s (once)")
    print_table(rows)
    gen = [r["seconds_per_candidate"]["generate"] for r in rows]
    print(f"generate seconds, no reuse / reuse: {gen[1] / gen[0]:.2f}x; identical rFID on every "
          f"candidate: {'yes' if identical else 'NO'}")
    result = {
        "benchmark": "bench_search", "machine": machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "args": vars(args), "sampler": cfg.sampler, "t_ref": space.t_ref,
        "segments": list(space.segments), "teacher_seconds": teacher_s, "rows": rows,
        "identical_rfid": identical,
        "candidates": [{"trial": t.number, "steps": t.user_attrs["step_types"],
                        "with_reuse": dataclasses.asdict(a), "without": dataclasses.asdict(b)}
                       for t, a, b in zip(trials, with_reuse, without, strict=True)],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
