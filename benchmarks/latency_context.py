"""Does a step's wall-clock depend on the step before it?

The latency profile (`flexopt profile`) prices a schedule as a sum of per-kind step costs (full,
partial at branch b), measured in schedules where every partial step follows a full one (F P F P).
A searched schedule also has partial steps after partial steps (F P P P P), full steps after
partial steps of other branches, and mixed branches. If the cost of a step depended on the step
before it (CPU caches warm with the shallow branch's weights, say), the additive model would be
biased for those schedules. This times every step of several calibration-like schedules inside
the real pipeline, as the profile does (a stamp after each U-Net call), and prints the mean and
median gap per (previous kind -> kind), overall and per schedule. Round 0 is a warm-up.

    OMP_NUM_THREADS=2 python benchmarks/latency_context.py --batch-size 32 --rounds 4 \\
        --out latency_context.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--steps", type=int, default=20, help="Steps of each schedule.")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4, help="Rounds, the first a warm-up.")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="latency_context.json")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error(f"--rounds {args.rounds}: allowed: 2 or more (the first is a warm-up)")
    return args


def schedules(steps: int) -> dict[str, Any]:
    """All full; F P at branches 1, 2, 3; F P P P P at branches 1 and 3; a mixed-branch one."""
    from flexopt.space.schedule import Schedule

    grid = [s.timestep for s in Schedule.spaced(steps, steps).steps]
    mixed = [(t, 0 if i % 4 == 0 else (1, 3, 2)[i % 4 - 1]) for i, t in enumerate(grid)]
    return {
        "F": Schedule.full(steps), "FP b1": Schedule.uniform(steps, 2, 1),
        "FP b2": Schedule.uniform(steps, 2, 2), "FP b3": Schedule.uniform(steps, 2, 3),
        "FPPPP b1": Schedule.uniform(steps, 5, 1), "FPPPP b3": Schedule.uniform(steps, 5, 3),
        "F P1 P3 P2": Schedule.placed("ddim", steps, mixed),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from flexopt.models.loading import load_pipeline, parse_device
    from flexopt.run.latency import _kinds, time_call
    from flexopt.run.pipeline import apply_schedule, generate_images

    args = parse_args(argv)
    pipe = load_pipeline(args.model, device=parse_device(args.device))
    device = pipe._execution_device
    plans = schedules(args.steps)
    rng = random.Random(0)
    gaps: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = list(plans.items())
        rng.shuffle(order)  # a drift of a shared machine touches every schedule alike
        for name, schedule in order:
            run = apply_schedule(pipe, schedule)
            _, ends = time_call(lambda cb, run=run: generate_images(
                run, args.batch_size, 0, args.batch_size, progress=cb), device)
            kinds = _kinds(pipe, schedule, len(ends), args.batch_size)
            if r == 0:
                continue
            for prev, kind, a, b in zip(kinds, kinds[1:], ends, ends[1:], strict=False):
                gaps.setdefault(f"{kind} <- {prev}", []).append(b - a)
                gaps.setdefault(f"{kind} <- {prev} in {name}", []).append(b - a)
    rows = [{"transition": k, "n": len(v), "mean_ms": statistics.fmean(v) * 1e3,
             "median_ms": statistics.median(v) * 1e3} for k, v in sorted(gaps.items())]
    print(f"{'transition':44} {'n':>5} {'mean ms':>9} {'median ms':>10}")
    for row in rows:
        print(f"{row['transition']:44} {row['n']:>5} {row['mean_ms']:>9.2f} "
              f"{row['median_ms']:>10.2f}")
    data = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "machine": platform.platform(), "args": vars(args), "rows": rows}
    Path(args.out).write_text(json.dumps(data, indent=2))
    print(f"wrote {args.out}")
    return data


if __name__ == "__main__":
    main()
