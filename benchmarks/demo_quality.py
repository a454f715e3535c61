"""Quality of the demo's result on seeds the search never saw: rFID and real FID.

Compares the plain teacher, the search's best schedule and the DeepCache-uniform baseline of
the closest avg MACs, each scored by rFID (against the teacher, same noises) and by the standard
FID against Fashion-MNIST test images. Prints a table and writes JSON.

    python benchmarks/demo_quality.py --storage sqlite:///flexopt-demo/demo.db --study-name demo \
        --num-images 1000 --seed 100000 --reference-images 2000 --out demo_quality.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import optuna

from flexopt.metrics.reference import reference_stats
from flexopt.models.loading import load_pipeline
from flexopt.search.evaluator import EvalSettings, ModelEvaluator
from flexopt.search.study import feasible_trials, load_study, trial_schedule


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--storage", required=True)
    ap.add_argument("--study-name", default="demo")
    ap.add_argument("--num-images", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=100_000, help="Far from the search's seeds.")
    ap.add_argument("--reference", default="fashion-mnist")
    ap.add_argument("--reference-images", type=int, default=2000,
                    help="Use the first N test images (0: all of them).")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", default="demo_quality.json")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    study = load_study(args.storage, args.study_name)
    feasible = feasible_trials(study)
    best = next(t for t in feasible if "baseline" not in t.user_attrs)
    deepcache = [t for t in study.trials if str(t.user_attrs.get("baseline", "")).startswith(
        "deepcache") and t.values is not None]
    closest = min(deepcache, key=lambda t: abs(t.user_attrs["avg_macs"]
                                               - best.user_attrs["avg_macs"]))
    best_s, dc_s = trial_schedule(study, best), trial_schedule(study, closest)

    pipe = load_pipeline(args.model)
    ev = ModelEvaluator(pipe, best_s.sampler, best_s.t_ref,
                        EvalSettings(args.num_images, args.seed, args.batch_size))
    size = pipe.unet.config.sample_size
    t0 = time.perf_counter()
    ref = reference_stats(args.reference, "test", size, ev.extractor, ev.extractor.weights.sha256,
                          args.reference_images or None)
    teacher = ev.teacher()
    rows = []
    for name, schedule in (("teacher", ev.teacher_schedule), (f"best (trial {best.number})",
                           best_s), (closest.user_attrs["baseline"], dc_s)):
        if name == "teacher":  # its features are in the teacher cache already
            feats = teacher.stats.features
        else:
            feats = ev.features(ev.images(schedule).images)
        rows.append({
            "schedule": name,
            "steps": schedule.step_string(),
            "avg_macs": ev.avg_macs(schedule),
            "speedup": ev.full_macs / ev.avg_macs(schedule),
            "nfe": schedule.nfe,
            "rfid": teacher.stats.frechet_to(feats),
            "fid": ref.stats.frechet_to(feats),
            "search_rfid": None if name == "teacher" else (
                best.values[0] if schedule is best_s else closest.values[0]),
        })
    print(f"{args.num_images} images from seed {args.seed} (unseen by the search); real FID "
          f"against {ref.stats.n} {args.reference} test images")
    print(f"{'schedule':22} {'avg MACs':>10} {'speedup':>8} {'NFE':>4} {'rFID':>8} {'FID':>8} "
          f"{'rFID@search':>12}")
    for r in rows:
        sr = "-" if r["search_rfid"] is None else f"{r['search_rfid']:.2f}"
        print(f"{r['schedule']:22} {r['avg_macs'] / 1e6:>9.1f}M {r['speedup']:>7.2f}x "
              f"{r['nfe']:>4} {r['rfid']:>8.2f} {r['fid']:>8.2f} {sr:>12}")
    with open(args.out, "w") as f:
        json.dump({"machine": platform.platform(), "num_images": args.num_images,
                   "seed": args.seed, "reference_images": ref.stats.n, "rows": rows,
                   "seconds": time.perf_counter() - t0}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
