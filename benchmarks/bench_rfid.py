"""Seconds per candidate evaluation, split into generation / Inception features / distance.

Builds a tiny random-weight DDPM pipeline (the test suite's shape, or --model), computes the
teacher statistics once, then scores a few DeepCache-uniform candidates with each metric and
prints the mean split per candidate. Writes JSON.

    python benchmarks/bench_rfid.py --num-images 64 --out bench_rfid.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch

from flexopt.search.evaluator import EvalSettings, ModelEvaluator
from flexopt.space.schedule import Schedule


def tiny_pipeline():
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(16, 32, 32, 32), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D",
                                         "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       attention_head_dim=8)
    return DDIMPipeline(unet.eval(), DDIMScheduler(beta_schedule="linear", clip_sample=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="A pipeline (default: a tiny random one).")
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--t-ref", type=int, default=20)
    ap.add_argument("--metrics", default="rfid,kid,paired")
    ap.add_argument("--out", default="bench_rfid.json")
    args = ap.parse_args()
    if args.model:
        from flexopt.models.loading import load_pipeline

        pipe = load_pipeline(args.model)
    else:
        pipe = tiny_pipeline()
    candidates = [Schedule.uniform(args.t_ref, n, b) for n in (2, 5, 10) for b in (1, 3)]
    results = {}
    with tempfile.TemporaryDirectory() as cache:
        for metric in args.metrics.split(","):
            ev = ModelEvaluator(pipe, "ddim", args.t_ref,
                                EvalSettings(args.num_images, 0, args.num_images, metric),
                                cache_dir=cache, progress=False)
            t0 = time.perf_counter()
            ev.teacher()
            teacher_s = time.perf_counter() - t0
            splits = []
            for i, s in enumerate(candidates):
                ev.score(s)
                if i:  # the first candidate also pays the teacher-side √Σ / kernel terms
                    splits.append(ev.last_timings)
                else:
                    first = ev.last_timings
            mean = {k: statistics.mean(d[k] for d in splits) for k in splits[0]}
            results[metric] = {"teacher_seconds": teacher_s, "first_candidate": first,
                               "per_candidate": mean}
    print(f"{args.num_images} images per candidate, t_ref {args.t_ref}, torch threads "
          f"{torch.get_num_threads()}, {platform.processor() or platform.machine()}")
    print(f"{'metric':7} {'teacher s':>9} {'generate':>9} {'features':>9} {'distance':>9} "
          f"{'total':>7} {'1st distance':>13}")
    for metric, r in results.items():
        m = r["per_candidate"]
        print(f"{metric:7} {r['teacher_seconds']:>9.2f} {m['generate']:>9.2f} "
              f"{m['features']:>9.2f} {m['metric']:>9.3f} {sum(m.values()):>7.2f} "
              f"{r['first_candidate']['metric']:>13.3f}")
    with open(args.out, "w") as f:
        json.dump({"machine": platform.platform(), "num_images": args.num_images,
                   "results": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
