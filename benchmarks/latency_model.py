"""Predicted vs measured wall-clock: does the latency profile price schedules right?

Measures the model's latency profile (`flexopt.run.latency.measure_latency`, not the cache: the
same process, threads and load as the measurements) one round at a time, interleaved with the
measurements (a round: one profile round, then every schedule once), and takes the median of
the profile rounds (`median_profile`): a shared machine's speed drifts by 20 % over minutes, and
interleaving makes the profile and the measurements see the same drift. It runs 20+ schedules —
the teacher and
fewer-step teachers, DeepCache-uniform at every branch and several intervals, random candidates
of the segment and hybrid spaces, and any `--schedule FILE` (a search's winner) — each timed as a
search generates (one `generate_images` call of one batch), interleaved over `--repeats` rounds
in a shuffled order; the median counts. Prints each schedule's predicted and measured seconds,
their ratio (and `paired`: the median over rounds of that round's profile's prediction over that
round's measurement), the median and worst |ratio - 1|; and its wall-clock speedup over the teacher,
predicted, measured (medians) and paired (the median over rounds of the teacher's seconds over
the schedule's in the same round); writes JSON.

    OMP_NUM_THREADS=2 python benchmarks/latency_model.py --model flexopt:fashion-mnist \
        --t-ref 50 --batch-size 16 --repeats 5 --out latency_model.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from flexopt.models.loading import load_pipeline, parse_device
from flexopt.run.cost import count_macs, schedule_cost
from flexopt.run.latency import measure_latency, median_profile, predict_seconds
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.search.config import SpaceChoices
from flexopt.space.schedule import Schedule


def schedules(t_ref: int, branches: tuple[int, ...], seed: int, n_random: int,
              files: list[str]) -> dict[str, Schedule]:
    """The schedules to price: teachers, DeepCache-uniform, random candidates, given files."""
    out = {f"teacher T={t}": Schedule.full(t) for t in (t_ref, t_ref // 2, t_ref // 5)}
    for b in branches:
        for k in (2, 5, 10):
            if t_ref % k == 0:
                out[f"deepcache N={k} b={b}"] = Schedule.uniform(t_ref, k, b)
    rng = random.Random(seed)
    segments = SpaceChoices((t_ref // 5, t_ref // 4, t_ref // 3), branches, (1, 2, 3, 4, 5),
                            t_ref).space()
    hybrid = SpaceChoices(None, branches, (1,), t_ref, "hybrid",
                          (t_ref // 5, t_ref // 3, t_ref // 2)).space()
    for i in range(n_random):
        out[f"segments #{i}"] = segments.schedule(segments.sample(rng))
        out[f"hybrid #{i}"] = hybrid.schedule(hybrid.sample(rng))
    for path in files:
        s = Schedule.load(path)
        if s.t_ref != t_ref:
            sys.exit(f"{path}: t_ref {s.t_ref}, this run's is {t_ref}")
        out[Path(path).stem] = s
    return out


def _clock(run: Callable[[], object], device: torch.device) -> float:
    """Wall-clock of `run()` as a search sees it: no synchronisation between U-Net calls (the
    profile's stamps synchronise; the measurement must not share that)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--t-ref", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--branches", default="1,2,3")
    ap.add_argument("--random", type=int, default=4, help="random candidates per space")
    ap.add_argument("--schedule", action="append", default=[], help="also a schedule file")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median counts")
    ap.add_argument("--profile-rounds", type=int, default=2, help="profile rounds per round")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="latency_model.json")
    args = ap.parse_args()

    device = parse_device(args.device)
    pipe = load_pipeline(args.model, device=device)
    pipe.set_progress_bar_config(disable=True)
    branches = tuple(int(b) for b in args.branches.split(","))
    profile_rounds = []
    profile_seconds = 0.0
    macs = count_macs(pipe.unet)
    todo = schedules(args.t_ref, branches, args.seed, args.random, args.schedule)
    times: dict[str, list[float]] = {name: [] for name in todo}
    rng = random.Random(args.seed)
    for r in range(args.repeats + 1):  # round 0 warms up
        t0 = time.perf_counter()
        round_profile = measure_latency(pipe, batch_size=args.batch_size,
                                        rounds=args.profile_rounds, warmup=0, branches=branches)
        profile_seconds += time.perf_counter() - t0
        if r:
            profile_rounds.append(round_profile)
        names = list(todo)
        rng.shuffle(names)
        for name in names:
            run = apply_schedule(pipe, todo[name])
            seconds = _clock(lambda run=run: generate_images(
                run, args.batch_size, 0, args.batch_size, progress=False), device)
            if r:
                times[name].append(seconds)
        print(f"round {r}/{args.repeats} done", file=sys.stderr)
    profile = median_profile(profile_rounds)
    teacher_name = f"teacher T={args.t_ref}"
    teacher = statistics.median(times[teacher_name])
    rows = []
    for name, s in todo.items():
        measured = statistics.median(times[name])
        # the teacher's time over this schedule's within each round: drift between rounds cancels
        paired = statistics.median(t / m for t, m in zip(times[teacher_name], times[name],
                                                         strict=True))
        predicted = predict_seconds(profile, s)
        # each round's prediction (from the profile round taken just before that round's runs)
        # over that round's measurement: what a profile taken now predicts of a run now
        paired_ratio = statistics.median(predict_seconds(p, s) / m for p, m in zip(
            profile_rounds, times[name], strict=True))
        rows.append({"schedule": name, "steps": s.step_string(), "nfe": s.nfe,
                     "macs_speedup": macs.full * args.t_ref / schedule_cost(s, macs).total_macs,
                     "predicted_s": predicted, "measured_s": measured,
                     "ratio": predicted / measured, "measured_speedup": teacher / measured,
                     "paired_speedup": paired, "paired_ratio": paired_ratio,
                     "predicted_speedup": predict_seconds(profile, Schedule.full(args.t_ref))
                     / predicted})
    errors = [abs(r["ratio"] - 1) for r in rows]
    paired_errors = [abs(r["paired_ratio"] - 1) for r in rows]
    # speedups are ratios: a uniform drift of the machine's speed cancels out of them
    speed_errors = [abs(r["predicted_speedup"] / r["paired_speedup"] - 1) for r in rows]
    print(f"{'schedule':24} {'NFE':>4} {'MACs x':>7} {'pred s':>8} {'meas s':>8} {'pred/meas':>9}"
          f" {'paired':>6} {'pred x':>7} {'wall x':>7} {'paired x':>8}")
    for r in rows:
        print(f"{r['schedule'][:24]:24} {r['nfe']:4d} {r['macs_speedup']:7.2f} "
              f"{r['predicted_s']:8.3f} {r['measured_s']:8.3f} {r['ratio']:9.3f} "
              f"{r['paired_ratio']:6.3f} "
              f"{r['predicted_speedup']:7.2f} {r['measured_speedup']:7.2f} "
              f"{r['paired_speedup']:8.2f}")
    summary = {"schedules": len(rows), "median_abs_error": statistics.median(errors),
               "worst_abs_error": max(errors),
               "worst": rows[errors.index(max(errors))]["schedule"],
               "median_paired_error": statistics.median(paired_errors),
               "worst_paired_error": max(paired_errors),
               "worst_paired": rows[paired_errors.index(max(paired_errors))]["schedule"],
               "median_speedup_error": statistics.median(speed_errors),
               "worst_speedup_error": max(speed_errors)}
    print(f"{len(rows)} schedules: median |pred/meas - 1| = {summary['median_abs_error']:.1%}, "
          f"worst {summary['worst_abs_error']:.1%} ({summary['worst']}); speedup over the "
          f"teacher, predicted / measured (paired by round): median "
          f"{summary['median_speedup_error']:.1%}, worst {summary['worst_speedup_error']:.1%}")
    print(f"paired by round (each round's profile / that round's run): median "
          f"{summary['median_paired_error']:.1%}, worst {summary['worst_paired_error']:.1%} "
          f"({summary['worst_paired']})")
    Path(args.out).write_text(json.dumps({
        "command": " ".join(sys.argv), "model": args.model, "t_ref": args.t_ref,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "profile": profile.to_json(), "profile_seconds": profile_seconds,
        "rows": rows, "summary": summary}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
