"""How well cheap metrics rank schedules: Kendall tau against rFID on many unseen images.

A search ranks candidates by a metric on a few images (its own seeds); what matters is whether
that ranking agrees with a precise measurement. For a fixed set of schedules spread over
1.5x-6x speedup (fewer-step teachers, DeepCache-uniform, and candidates drawn from budget-fitted
search spaces, i.e. what a search evaluates), this measures:

- the reference: rFID of `--reference-images` images from seeds the search never uses
  (`--reference-seed`, far from 0), against the teacher's images from the same noises;
- rFID, KID and the paired distance on the first n = 16 … 256 images of the search's seeds
  (from 0), each against the teacher's first n images;
- Kendall tau of each (metric, n) ranking against the reference, and the seconds one candidate
  costs at n (generation and features timed in chunks of 16, 16, 32, 64, 128 images, so the time
  to n images is measured, not extrapolated).

Prints a table and writes JSON (the schedules, every value, the timings and the machine).

    python benchmarks/metric_fidelity.py --reference-images 1000 --out metric_fidelity.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import time

import numpy as np
from scipy.stats import kendalltau

from flexopt.metrics import FeatureStats, score
from flexopt.models.loading import load_pipeline
from flexopt.run.fitting import fit_space
from flexopt.search.evaluator import EvalSettings, ModelEvaluator
from flexopt.search.study import feasible_trials, load_study, trial_schedule
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace

COUNTS = (16, 32, 64, 128, 256)
METRICS = ("rfid", "kid", "paired")


def schedules(ev: ModelEvaluator, n_sampled: int, seed: int) -> list[tuple[str, Schedule]]:
    """Fewer-step teachers, DeepCache-uniform and fitted-space samples within 1.5x-6x."""
    t_ref, full = ev.t_ref, ev.full_macs
    out = [(f"teacher T={t}", Schedule("ddim", t_ref, 1, ((1, 1),) * t))
           for t in (9, 11, 13, 15, 17, 19, 22, 25, 29, 33) if t < t_ref]
    for n in (2, 5, 10):
        for b in (1, 2, 3):
            s = Schedule.uniform(t_ref, n, b)
            if 1.5 <= full / ev.avg_macs(s) <= 6.0:
                out.append((f"deepcache n={n} b={b}", s))
    rng = random.Random(seed)
    for speedup in (2.0, 2.5, 4.0):
        limit = full / speedup
        fit = fit_space(ev.profile, t_ref, limit)
        space: SearchSpace = fit.space
        for _ in range(n_sampled):
            for _ in range(1000):
                cand = space.sample(rng)
                s = Schedule.from_candidate(cand, space)
                if 0.75 * limit <= ev.avg_macs(s) < limit:
                    break
            out.append((f"sampled {speedup:g}x {cand}", s))
    return out


def searched(storages: list[str], per_study: int) -> list[tuple[str, Schedule]]:
    """The best `per_study` searched (not baseline) feasible schedules of each finished study."""
    out = []
    for storage in storages:
        study = load_study(storage, None)
        best = [t for t in feasible_trials(study) if "baseline" not in t.user_attrs][:per_study]
        out += [(f"searched {study.study_name} #{t.number}", trial_schedule(study, t))
                for t in best]
    return out


def summarize(rows: list[dict], counts: list[int], meta: dict, out: str, final: bool) -> None:
    """Kendall tau of every (metric, n) against the reference over `rows`, written to `out`
    (after every schedule, so a long run keeps what it measured); the table printed when final."""
    ref = [r["reference_rfid"] for r in rows]
    table = []
    for metric in METRICS:
        for n in counts:
            tau = kendalltau([r[f"{metric}@{n}"] for r in rows], ref).statistic
            secs = float(np.median([r["seconds_to_n"][str(n)] + r[f"seconds_{metric}@{n}"]
                                    for r in rows]))
            table.append({"metric": metric, "n": n, "kendall_tau": float(tau),
                          "seconds_per_candidate": secs})
    halves = np.array([r["reference_halves"] for r in rows])
    split_tau = float(kendalltau(halves[:, 0], halves[:, 1]).statistic)
    with open(out, "w") as f:
        json.dump({**meta, "counts": counts, "table": table, "reference_split_half_tau": split_tau,
                   "complete": final, "rows": rows}, f, indent=2)
    if not final:
        return
    r_images = meta["reference_images"]
    print(f"\nKendall tau against rFID-{r_images} on unseen seeds ({len(rows)} schedules); "
          "seconds per candidate = median over schedules")
    print(f"reference noise: tau between its two disjoint halves (rFID-{r_images // 2} each) = "
          f"{split_tau:.3f}")
    print(f"{'metric':8} " + " ".join(f"{'n=' + str(n):>14}" for n in counts))
    for metric in METRICS:
        cells = [next(t for t in table if t["metric"] == metric and t["n"] == n) for n in counts]
        print(f"{metric:8} " + " ".join(
            f"{c['kendall_tau']:6.3f} {c['seconds_per_candidate']:5.1f}s  " for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--t-ref", type=int, default=50)
    ap.add_argument("--reference-images", type=int, default=1000)
    ap.add_argument("--reference-seed", type=int, default=200_000)
    ap.add_argument("--sampled", type=int, default=2, help="Candidates per fitted space.")
    ap.add_argument("--max-count", type=int, default=COUNTS[-1])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--schedules", type=int, default=None,
                    help="Only the first K schedules (a quick check of the script).")
    ap.add_argument("--study", action="append", default=[], metavar="STORAGE",
                    help="A finished search's storage URL (one study in it); its best searched "
                         "schedules join the set. Repeatable.")
    ap.add_argument("--per-study", type=int, default=2)
    ap.add_argument("--reverse", action="store_true",
                    help="Measure the schedules last to first (a second process, in parallel).")
    ap.add_argument("--rows-from", action="append", default=[], metavar="JSON",
                    help="Rows another run of the same settings measured (its --out): those "
                         "schedules are not measured again and join the table. Repeatable.")
    ap.add_argument("--out", default="metric_fidelity.json")
    args = ap.parse_args()
    counts = [n for n in COUNTS if n <= args.max_count]

    pipe = load_pipeline(args.model)
    ev = ModelEvaluator(pipe, "ddim", args.t_ref, EvalSettings(counts[-1], 0, args.batch_size),
                        args.cache_dir, args.inception_weights, progress=False)
    ref_ev = dataclasses.replace(ev, settings=EvalSettings(
        args.reference_images, args.reference_seed, args.batch_size))
    todo = schedules(ev, args.sampled, seed=0) + searched(args.study, args.per_study)
    # A fixed shuffle: the rows written so far (after every schedule) span all the kinds.
    todo = [todo[i] for i in np.random.default_rng(0).permutation(len(todo))][:args.schedules]
    total = len(todo)
    rows: list[dict] = []
    for path in args.rows_from:
        with open(path) as f:
            rows += [r for r in json.load(f)["rows"] if r["schedule"] not in
                     {x["schedule"] for x in rows}]
    done_names = {r["schedule"] for r in rows}
    todo = [t for t in (todo[::-1] if args.reverse else todo) if t[0] not in done_names]
    meta = {"machine": platform.platform(), "model": args.model, "t_ref": args.t_ref,
            "reference_images": args.reference_images, "reference_seed": args.reference_seed,
            "schedules": total}
    print(f"{total} schedules ({len(rows)} measured before); reference rFID on "
          f"{args.reference_images} images from seed {args.reference_seed}; search metrics on "
          f"n = {counts} from seed 0", flush=True)

    def chunked(schedule: Schedule) -> tuple[np.ndarray, list[float]]:
        """Features of the first counts[-1] search-seed images, and the seconds to each n."""
        feats, elapsed, done, total = [], [], 0, 0.0
        for n in counts:
            chunk = dataclasses.replace(ev, settings=EvalSettings(n - done, done, args.batch_size))
            t0 = time.perf_counter()
            feats.append(ev.features(chunk.images(schedule).images))
            total += time.perf_counter() - t0
            elapsed.append(total)
            done = n
        return np.concatenate(feats), elapsed

    t_start = time.perf_counter()
    if not todo:  # every row measured before: the table of the merged rows
        summarize(rows, counts, {**meta, "seconds": 0.0}, args.out, final=True)
        print(f"wrote {args.out}")
        return
    teacher_feats, _ = chunked(ev.teacher_schedule)
    teacher_ref = ref_ev.teacher().stats
    teacher_stats = [FeatureStats.from_features(teacher_feats[:n]) for n in counts]
    for t in teacher_stats:  # once, as a search's cached teacher has them
        _ = t.sqrt_sigma, t.trace_sigma
    for name, schedule in todo:
        t0 = time.perf_counter()
        feats, seconds = chunked(schedule)
        row = {"schedule": name, "steps": schedule.step_string(), "nfe": schedule.nfe,
               "avg_macs": ev.avg_macs(schedule), "speedup": ev.full_macs / ev.avg_macs(schedule),
               "seconds_to_n": dict(zip(map(str, counts), seconds, strict=True))}
        for n, teacher_n in zip(counts, teacher_stats, strict=True):
            for metric in METRICS:
                t1 = time.perf_counter()
                row[f"{metric}@{n}"] = float(score(metric, teacher_n, feats[:n]))
                row[f"seconds_{metric}@{n}"] = time.perf_counter() - t1
        ref_feats = ref_ev.features(ref_ev.images(schedule).images)
        row["reference_rfid"] = float(teacher_ref.frechet_to(ref_feats))
        half = len(ref_feats) // 2  # two disjoint halves: how far the reference itself agrees
        row["reference_halves"] = [float(teacher_ref.frechet_to(ref_feats[:half])),
                                   float(teacher_ref.frechet_to(ref_feats[half:]))]
        rows.append(row)
        print(f"[{len(rows)}/{total}] {name:34} {row['speedup']:5.2f}x ref rFID "
              f"{row['reference_rfid']:7.2f}  rFID@{counts[-1]} {row[f'rfid@{counts[-1]}']:7.2f}  "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        if len(rows) >= 2:
            summarize(rows, counts, {**meta, "seconds": time.perf_counter() - t_start},
                      args.out, final=False)

    summarize(rows, counts, {**meta, "seconds": time.perf_counter() - t_start}, args.out,
              final=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
