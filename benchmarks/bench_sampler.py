"""Evaluations needed to reach a known optimum: FlexEvolutionSampler vs Optuna's samplers.

Runs the synthetic problem of `flexopt.testing` (hidden target candidate under a cost budget)
for several seeds and prints, per sampler, how many evaluations it took to find the optimum
(or "-" if not within --max-evals) and the best score at a few checkpoints. Only feasible
candidates count as evaluations: over-budget ones are rejected before any evaluation. Writes JSON.

    python benchmarks/bench_sampler.py --seeds 5 --max-evals 1000 --out bench_sampler.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import optuna

from flexopt.search.sampler import CostLimit, FlexEvolutionSampler
from flexopt.space.segment import SearchSpace
from flexopt.testing import SyntheticProblem

CHECKPOINTS = (100, 300, 1000)


def make_sampler(name: str, problem: SyntheticProblem, seed: int) -> optuna.samplers.BaseSampler:
    evo = {"seed": seed, "population_size": 20, "n_p": 10, "n_c": 5, "n_u": 100}
    if name == "evo":  # the first population spread up to the budget, the space's baselines in it
        limit = math.nextafter(problem.budget, math.inf)  # the problem's budget is inclusive
        return FlexEvolutionSampler(problem.space, CostLimit(problem.cost, limit), **evo)
    if name == "evo-uniform":  # before: uniform feasible draws only, no seeds
        return FlexEvolutionSampler(problem.space, problem.feasible, seeds={}, **evo)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    raise ValueError(name)


def run(name: str, problem: SyntheticProblem, seed: int, max_evals: int) -> dict:
    study = optuna.create_study(sampler=make_sampler(name, problem, seed))
    hit = None
    best = float("inf")
    curve = {}
    t0 = time.perf_counter()
    evals = asks = 0  # only feasible candidates count: others are rejected before evaluation
    while evals < max_evals and asks < 20 * max_evals:
        asks += 1
        trial = study.ask()
        value = problem.objective(trial)
        c = problem.space.from_params(trial.params)
        if not problem.feasible(c):  # other samplers propose over-budget candidates
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, value)
        best = min(best, value)
        evals += 1
        if evals in CHECKPOINTS:
            curve[evals] = best
        if best == 0 and hit is None:
            hit = evals
            break
    for cp in CHECKPOINTS:
        if cp <= max_evals:
            curve.setdefault(cp, best)
    return {"evals_to_optimum": hit, "best_at": curve, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-evals", type=int, default=1000)
    ap.add_argument("--samplers", default="evo,evo-uniform,random,tpe")
    ap.add_argument("--out", default="bench_sampler.json")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)
    results = {}
    for name in args.samplers.split(","):
        runs = [run(name, SyntheticProblem.make(space, seed=1000 + s), s, args.max_evals)
                for s in range(args.seeds)]
        results[name] = runs
    print(f"space: {space.size:,} candidates; {args.seeds} seeds; max {args.max_evals} evaluations")
    print(f"{'sampler':12} {'found':>6} {'mean evals to optimum':>22} "
          + " ".join(f"{'best@' + str(c):>9}" for c in CHECKPOINTS if c <= args.max_evals))
    summary = {}
    for name, runs in results.items():
        hits = [r["evals_to_optimum"] for r in runs if r["evals_to_optimum"] is not None]
        mean_hit = statistics.mean(hits) if hits else None
        bests = {c: statistics.mean(r["best_at"][c] for r in runs)
                 for c in CHECKPOINTS if c <= args.max_evals}
        summary[name] = {"found": len(hits), "mean_evals_to_optimum": mean_hit,
                         "mean_best_at": bests}
        print(f"{name:12} {len(hits):>3}/{len(runs):<2} "
              f"{(f'{mean_hit:.0f}' if mean_hit else '-'):>22} "
              + " ".join(f"{v:>9.2f}" for v in bests.values()))
    with open(args.out, "w") as f:
        json.dump({"machine": platform.platform(), "space_size": space.size,
                   "seeds": args.seeds, "max_evals": args.max_evals,
                   "summary": summary, "runs": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
