"""Does a candidate's rFID on its first few images rank it as its full score does?

The pruner compares candidates at a rung by rFID of their first n images against the teacher's
first n (biased upwards at small n, by the same amount for every candidate at that n). This
scores `--candidates` candidates of the demo's space, as a search meets them (random feasible
ones spread from 0.6x the budget up to it, and one-mutation children of them), with rungs
8 → 16 → full, and prints for each rung:

- Kendall tau between the rung's ranking and the full score's (scipy.stats.kendalltau);
- what successive halving at that rung would do: of the candidates in the best half by the full
  score, the share it would have stopped (the rung puts them in the worse half), and of the best
  quarter, the share it would have stopped;
- what the `population` pruner's parent rule would do: of the children, the share worse than
  their parent at the rung (stopped), and of those, the share that end better than their parent
  on all the images (stopped wrongly).

Writes JSON with every candidate's values.

    OMP_NUM_THREADS=2 python benchmarks/rung_fidelity.py --candidates 40 --out rung_fidelity.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import sys
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--candidates", type=int, default=40)
    ap.add_argument("--images", type=int, default=None,
                    help="Images per candidate (default: the demo's, 32).")
    ap.add_argument("--rungs", default="auto", help="Rung image counts (default: 8, 16, …).")
    ap.add_argument("--seed", type=int, default=0, help="Seed of the candidates' draw.")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--out", default="rung_fidelity.json")
    return ap.parse_args(argv)


def draw(objective, n: int, seed: int) -> list[tuple[Any, int | None]]:
    """`n` distinct feasible candidates, each with its parent's index (None for a random one):
    half random (spread over costs), half one-mutation children of them."""
    from flexopt.search.sampler import FlexEvolutionSampler, candidate_key

    space = objective.space
    smp = FlexEvolutionSampler(space, objective.feasible, seed=seed, seeds={})
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[Any, int | None]] = []
    while len(out) < n:
        parent = None
        if len(out) < n // 2 or not out:
            cand = smp.random_feasible(seen, smp._spread(len(out)))
        else:
            parent = rng.randrange(n // 2 or 1)
            cand, _ = space.mutate(out[parent][0], rng, 1)
            if not objective.feasible(cand):
                continue
        key = candidate_key(space, cand)
        if key not in seen:
            seen.add(key)
            out.append((cand, parent))
    return out


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    from scipy.stats import kendalltau

    from flexopt.cli.demo import DEMO_CONFIG
    from flexopt.search.job import SearchJob
    from flexopt.search.objective import Objective
    from flexopt.search.pruning import parse_rungs

    args = parse_args(argv)
    job = SearchJob.from_config(DEMO_CONFIG, model=args.model, device=args.device,
                                num_images=args.images)
    rungs = parse_rungs(args.rungs, job.num_images)
    objective = Objective.from_model(
        job.model, job.space, job.budget, device=args.device, num_images=job.num_images,
        seed=job.seed, sampler=job.sampler, batch_size=args.batch_size,
        cache_dir=args.cache_dir, inception_weights=args.inception_weights, rungs=rungs)
    ev = objective.evaluator
    ev.teacher()
    rows = []
    for i, (cand, parent) in enumerate(draw(objective, args.candidates, args.seed), 1):
        schedule = objective.space.schedule(cand, job.sampler)
        values: dict[int, float] = {}
        values[job.num_images] = ev.score(schedule, rungs, values.__setitem__)
        rows.append({"candidate": str(cand), "parent": parent, "steps": schedule.step_string(),
                     "speedup": ev.full_macs / ev.avg_macs(schedule),
                     "rfid": {str(k): v for k, v in sorted(values.items())}})
        print(f"  {i}/{args.candidates}: " + ", ".join(f"{k}: {v:.2f}" for k, v in
                                                      sorted(values.items())),
              file=sys.stderr, flush=True)
    full = np.array([r["rfid"][str(job.num_images)] for r in rows])
    order = np.argsort(full)
    best_half, best_quarter = set(order[:len(rows) // 2]), set(order[:len(rows) // 4])
    table = []
    print(f"\n{len(rows)} candidates, rFID on {job.num_images} images of the search's seeds")
    children = [(i, r["parent"]) for i, r in enumerate(rows) if r["parent"] is not None]
    print(f"{'rung':>6} {'Kendall tau':>12} {'best half stopped':>18} {'best quarter stopped':>21}"
          f" {'children stopped':>17} {'of them wrongly':>16}")
    for n in rungs:
        at = np.array([r["rfid"][str(n)] for r in rows])
        tau = float(kendalltau(at, full).statistic)
        worse_half = set(np.argsort(at)[len(rows) // 2:])
        half = len(best_half & worse_half) / max(len(best_half), 1)
        quarter = len(best_quarter & worse_half) / max(len(best_quarter), 1)
        # the parent rule: a child worse than its parent at the rung is stopped; wrongly when
        # it ends better than its parent on all the images
        stopped = [(c, p) for c, p in children if at[c] > at[p]]
        wrong = [(c, p) for c, p in stopped if full[c] < full[p]]
        table.append({"rung": n, "tau": tau, "best_half_stopped": half,
                      "best_quarter_stopped": quarter, "children": len(children),
                      "children_stopped": len(stopped), "stopped_wrongly": len(wrong)})
        print(f"{n:>6} {tau:>12.3f} {half:>18.0%} {quarter:>21.0%} "
              f"{len(stopped):>8} of {len(children):<5} {len(wrong):>9} of {len(stopped):<4}")
    Path(args.out).write_text(json.dumps({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(), "args": vars(args), "num_images": job.num_images,
        "rungs": list(rungs), "table": table, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
