"""Samplers and pruners compared on the real objective, at equal wall-clock.

Runs the demo's search (embedded model, its space, budget, images per candidate and evolution
settings) once per (variant, search seed), each for the same wall-clock minutes, where a variant
is a search sampler plus a pruner: `evo` (Flexiffusion's evolution, every candidate on all its
images), `evo+population` (the same, a child stopped at 8 images when its parent scores better
there: the default pruner), `evo+halving` (successive halving over rungs 8 → 16 → 32),
`evo+median`, `evo+hyperband`, and Optuna's `random`, `tpe`, `nsga2`. Runs are interleaved
(all variants for seed 0, then seed 1, …) so a drift of the machine touches every variant
alike. The teacher's statistics are built before the first run and not timed.

Then each search's winner (its best searched candidate under the budget, by its own score) and
every baseline under the budget are re-scored by rFID on `--held-out` images from seeds the
searches never used (from 100,000), against the teacher's images from the same noises. Prints a
table (searched candidates evaluated, of them pruned at a rung, images generated, the winner's
held-out rFID: mean ± SD over the seeds) and writes JSON with every run (batched U-Net calls
too).

    OMP_NUM_THREADS=2 python benchmarks/sampler_quality.py --minutes 2 --seeds 0,1,2 \\
        --held-out 500 --out sampler_quality.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = {  # name -> (search sampler, pruner)
    "evo": ("evo", "none"),
    "evo+population": ("evo", "population"),
    "evo+halving": ("evo", "halving"),
    "evo+median": ("evo", "median"),
    "evo+hyperband": ("evo", "hyperband"),
    "random": ("random", "none"),
    "tpe": ("tpe", "none"),
    "nsga2": ("nsga2", "none"),
}
HELD_OUT_SEED = 100_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--minutes", type=float, default=2.0, help="Wall-clock of each search.")
    ap.add_argument("--seeds", default="0,1,2", help="Search seeds, comma-separated.")
    ap.add_argument("--variants", default="evo,evo+population,evo+halving,random,tpe,nsga2",
                    help=f"Comma-separated, of: {', '.join(VARIANTS)}.")
    ap.add_argument("--held-out", type=int, default=500, help="Unseen images per winner.")
    ap.add_argument("--images", type=int, default=None,
                    help="Images per candidate (default: the demo's, 32).")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", default="sampler_quality.json")
    ap.add_argument("--held-out-from", action="append", default=[], metavar="JSON",
                    help="An earlier run's output: a schedule it scored on the same held-out "
                         "images (same model, same --held-out) is not scored again. Repeatable.")
    args = ap.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"--variants {','.join(unknown)}: allowed: {', '.join(VARIANTS)}")
    return args


def run_one(args: argparse.Namespace, variant: str, seed: int, folder: Path) -> dict[str, Any]:
    """One search of `args.minutes`; its counts and its winner's schedule."""
    import optuna

    from flexopt.cli.demo import DEMO_CONFIG
    from flexopt.search.job import SearchJob, run_search
    from flexopt.search.study import (
        PRUNED_AT_ATTR,
        TrialCounts,
        feasible_trials,
        is_baseline,
        trial_schedule,
    )

    search_sampler, pruner = VARIANTS[variant]
    name = f"{variant}-{seed}"
    job = SearchJob.from_config(
        DEMO_CONFIG, model=args.model, storage=f"sqlite:///{folder / (name + '.db')}",
        study_name=name, search_sampler=search_sampler, pruner=pruner, n_trials=100_000,
        timeout=args.minutes * 60, search_seed=seed, baselines="best", upload_artifacts=False,
        num_images=args.images,
        progress=False, device=args.device, batch_size=args.batch_size, cache_dir=args.cache_dir,
        inception_weights=args.inception_weights)
    t0 = time.perf_counter()
    result = run_search(job, log=lambda line: None)
    seconds = time.perf_counter() - t0
    study = result.study
    trials = study.get_trials(deepcopy=False)
    counts = TrialCounts.of(trials)
    winners = [t for t in feasible_trials(study) if not is_baseline(t)]
    winner = winners[0] if winners else None
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
            or PRUNED_AT_ATTR in t.user_attrs]
    calls = sum(int(t.user_attrs.get("unet_calls", 0)) for t in done)
    images = sum(int(t.user_attrs.get(PRUNED_AT_ATTR, job.num_images)) for t in done
                 if "duplicate_of" not in t.user_attrs)
    return {
        "variant": variant, "seed": seed, "seconds": seconds,
        "searched": counts.searched, "pruned": counts.pruned, "baselines": counts.baselines,
        "rejected": counts.rejected, "unet_calls": calls, "images": images,
        "winner": None if winner is None else {
            "trial": winner.number, "search_rfid": winner.values[0],
            "avg_macs": winner.user_attrs["avg_macs"], "speedup": winner.user_attrs["speedup"],
            "schedule": trial_schedule(study, winner).to_dict()},
        "baselines_under_budget": {
            t.user_attrs["baseline"]: trial_schedule(study, t).to_dict()
            for t in feasible_trials(study) if is_baseline(t)},
    }


def earlier_scores(args: argparse.Namespace) -> dict[str, float]:
    """Held-out rFID by schedule JSON from earlier runs' outputs with the same model and held-out
    images (scoring is deterministic, so a schedule scored there scores the same here)."""
    out: dict[str, float] = {}
    for path in args.held_out_from:
        data = json.loads(Path(path).read_text())
        if (data["args"]["model"], data["args"]["held_out"]) != (args.model, args.held_out):
            sys.exit(f"--held-out-from {path}: scored {data['args']['model']} on "
                     f"{data['args']['held_out']} images; this run: {args.model} on "
                     f"{args.held_out}")
        keyed = {f"{r['variant']}-{r['seed']}": r["winner"]["schedule"]
                 for r in data["runs"] if r["winner"]}
        for r in data["runs"]:
            keyed.update({f"baseline {k}": v for k, v in r["baselines_under_budget"].items()})
        for key, schedule in keyed.items():
            if key in data["held_out_rfid"]:
                out[json.dumps(schedule, sort_keys=True)] = float(data["held_out_rfid"][key])
    return out


def held_out(args: argparse.Namespace, schedules: dict[str, dict]) -> dict[str, float]:
    """rFID of each schedule (by key) on the held-out seeds."""
    if not schedules:
        return {}
    from flexopt.cli.demo import DEMO_CONFIG
    from flexopt.models.loading import load_pipeline, parse_device
    from flexopt.search.config import StudyConfig
    from flexopt.search.evaluator import EvalSettings, ModelEvaluator
    from flexopt.space.schedule import Schedule

    cfg = StudyConfig.load(DEMO_CONFIG)
    pipe = load_pipeline(args.model, device=parse_device(args.device))
    ev = ModelEvaluator(pipe, cfg.sampler, cfg.choices.t_ref,
                        EvalSettings(args.held_out, HELD_OUT_SEED, args.batch_size),
                        args.cache_dir, args.inception_weights, progress=False,
                        prefix_cache_mb=0)
    teacher = ev.teacher().stats
    out = {}
    for i, (key, data) in enumerate(sorted(schedules.items()), 1):
        t0 = time.perf_counter()
        feats = ev.features(ev.images(Schedule.from_dict(data)).images)
        out[key] = float(teacher.frechet_to(feats))
        print(f"  held-out {i}/{len(schedules)}: {out[key]:.3f}  "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    import optuna

    from flexopt.cli.demo import DEMO_CONFIG
    from flexopt.search.job import SearchJob
    from flexopt.search.objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = args.variants.split(",")
    # the search seeds' teacher statistics, built once and not timed
    job = SearchJob.from_config(DEMO_CONFIG, model=args.model, device=args.device,
                                num_images=args.images)
    Objective.from_model(job.model, job.space, job.budget, device=args.device,
                         num_images=job.num_images, seed=job.seed, sampler=job.sampler,
                         cache_dir=args.cache_dir,
                         inception_weights=args.inception_weights).teacher()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for variant in variants:
                run = run_one(args, variant, seed, Path(tmp))
                runs.append(run)
                w = run["winner"]
                print(f"{variant:14} seed {seed}: {run['searched']} searched "
                      f"({run['pruned']} pruned), {run['baselines']} baselines, "
                      f"{run['images']} images, {run['unet_calls']} batched U-Net calls, winner "
                      + ("-" if w is None else f"{w['search_rfid']:.2f} at {w['speedup']:.2f}x"),
                      file=sys.stderr, flush=True)
    schedules = {f"{r['variant']}-{r['seed']}": r["winner"]["schedule"] for r in runs
                 if r["winner"]}
    for r in runs:
        schedules.update({f"baseline {k}": v for k, v in r["baselines_under_budget"].items()})
    unique: dict[str, str] = {}  # the same schedule is scored once
    for key, data in schedules.items():
        unique.setdefault(json.dumps(data, sort_keys=True), key)
    earlier = earlier_scores(args)
    scored = held_out(args, {k: schedules[k] for j, k in unique.items() if j not in earlier})
    by_json = {j: earlier[j] if j in earlier else scored[k] for j, k in unique.items()}
    reused = sorted(k for j, k in unique.items() if j in earlier)
    if reused:
        print(f"held-out scores reused from {', '.join(args.held_out_from)}: {', '.join(reused)}",
              file=sys.stderr)
    rfid = {key: by_json[json.dumps(data, sort_keys=True)] for key, data in schedules.items()}
    baselines = {k.removeprefix("baseline "): v for k, v in rfid.items()
                 if k.startswith("baseline ")}
    best_baseline = min(baselines.items(), key=lambda kv: kv[1]) if baselines else None

    def mean_sd(values: list[float]) -> str:
        if not values:
            return "-"
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} ± {sd:.2f}"

    rows = []
    print(f"\n{args.minutes:g} min per search, seeds {args.seeds}; held-out rFID on "
          f"{args.held_out} images from seed {HELD_OUT_SEED}")
    print(f"{'variant':14} {'candidates':>14} {'pruned':>14} {'images made':>16} "
          f"{'winner held-out rFID':>22}  per seed")
    for variant in variants:
        mine = [r for r in runs if r["variant"] == variant]
        held = [rfid[f"{variant}-{r['seed']}"] for r in mine if r["winner"]]
        row = {"variant": variant,
               "searched": [r["searched"] for r in mine], "pruned": [r["pruned"] for r in mine],
               "unet_calls": [r["unet_calls"] for r in mine],
               "images": [r["images"] for r in mine], "held_out_rfid": held}
        rows.append(row)
        print(f"{variant:14} {mean_sd(row['searched']):>14} {mean_sd(row['pruned']):>14} "
              f"{mean_sd(row['images']):>16} {mean_sd(held):>22}  "
              + " / ".join(f"{v:.2f}" for v in held))
    if best_baseline:
        print(f"best baseline under the budget, held out: {best_baseline[0]} "
              f"{best_baseline[1]:.2f}")
    Path(args.out).write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(), "processor": platform.processor(),
        "args": vars(args), "rows": rows, "runs": runs, "held_out_rfid": rfid,
        "held_out_reused": reused,
        "best_baseline": best_baseline}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
