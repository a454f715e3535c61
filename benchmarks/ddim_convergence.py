"""Do more DDIM steps converge? Pixel statistics and distances of DDIM-K samples, clip on and off.

A well-behaved sampler approaches one answer as K grows: the distance of DDIM-K images to the
finest K's shrinks, and pixel statistics settle near the data's. With x0 clipping on
(`clip_sample=True` in the model's scheduler config) DDIM clips x0 but keeps the unclipped
epsilon, so on data whose background sits at the clip boundary (Fashion-MNIST's black) every
step lifts it a little: more steps, brighter backgrounds, worse FID (docs/teacher.md). Same noises
for every K (image i from seed `--seed + i`), flexopt's own generation path. Prints a table and
writes JSON.

    python benchmarks/ddim_convergence.py --model flexopt:fashion-mnist --steps 10,25,50,100,200 \
        --num-images 64 --clip config,off --reference fashion-mnist --out ddim_convergence.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from flexopt.models.data import load_images
from flexopt.models.loading import load_pipeline, load_unet_config
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.space.schedule import Schedule

BLACK, WHITE = 0.02, 0.98  # "background" / "saturated" pixel thresholds, on the [0, 1] scale


def pixel_stats(images: np.ndarray) -> dict[str, float]:
    """Mean, standard deviation and the near-black / near-white fractions of [0, 1] images."""
    return {"mean": float(images.mean()), "std": float(images.std()),
            "black": float((images < BLACK).mean()), "white": float((images > WHITE).mean())}


def with_clip(pipe, config, clip: str):
    """`pipe` with a scheduler from `config` whose `clip_sample` is as given (`config`: as is)."""
    extra = {} if clip == "config" else {"clip_sample": clip == "on"}
    pipe.scheduler = type(pipe.scheduler).from_config(config, **extra)
    return pipe


def measure(pipe, steps: list[int], clip: str, num_images: int, seed: int,
            batch_size: int) -> list[dict]:
    """One row per K: pixel statistics and the mean |x_K - x_Kmax| over pixels and images."""
    images, rows = {}, []
    for k in steps:
        t0 = time.perf_counter()
        out = generate_images(apply_schedule(pipe, Schedule.full(k)), num_images, seed,
                              batch_size, progress=False)
        images[k] = out.images
        rows.append({"clip": clip, "clip_sample": bool(pipe.scheduler.config.clip_sample),
                     "steps": k, **pixel_stats(out.images),
                     "seconds": time.perf_counter() - t0})
    finest = images[max(steps)]
    for row in rows:
        row["distance_to_finest"] = float(np.abs(images[row["steps"]] - finest).mean())
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flexopt:fashion-mnist")
    ap.add_argument("--steps", default="10,25,50,100,200",
                    help="DDIM step counts, comma-separated.")
    ap.add_argument("--clip", default="config,off",
                    help="Comma-separated: config (the model's own clip_sample), on, off.")
    ap.add_argument("--num-images", type=int, default=64)
    ap.add_argument("--seed", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--reference", default=None,
                    help="A data set (fashion-mnist, digits, a folder): its pixel statistics.")
    ap.add_argument("--reference-images", type=int, default=2000)
    ap.add_argument("--out", default="ddim_convergence.json")
    args = ap.parse_args()
    try:
        steps = sorted({int(s) for s in args.steps.split(",")})
    except ValueError:
        steps = []
    if not steps or steps[0] < 1:
        ap.error(f"--steps {args.steps!r}; allowed: positive integers, comma-separated")
    clips = [c.strip() for c in args.clip.split(",")]
    if bad := [c for c in clips if c not in ("config", "on", "off")]:
        ap.error(f"--clip {bad[0]!r}; allowed: config, on, off")

    pipe = load_pipeline(args.model)  # once; each clip setting swaps in its own scheduler
    config = pipe.scheduler.config
    rows = [r for c in clips for r in measure(with_clip(pipe, config, c), steps, c,
                                                args.num_images, args.seed, args.batch_size)]
    print(f"{args.model}: {args.num_images} images from seed {args.seed}; distance = mean "
          f"|x_K - x_{max(steps)}| on [0, 1]")
    print("| clip_sample | DDIM steps | mean | std | near-black | near-white | "
          "distance to finest |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    real = None
    if args.reference:
        size = load_unet_config(args.model)["sample_size"]
        data = load_images(args.reference, size, "test")[: args.reference_images]
        real = pixel_stats(data.astype(np.float32) / 255)
        print(f"| data ({args.reference}, {len(data)} test images) | – | {real['mean']:.4f} | "
              f"{real['std']:.4f} | {real['black']:.4f} | {real['white']:.4f} | – |")
    for r in rows:
        print(f"| {str(r['clip_sample']).lower()} ({r['clip']}) | {r['steps']} | {r['mean']:.4f} "
              f"| {r['std']:.4f} | {r['black']:.4f} | {r['white']:.4f} | "
              f"{r['distance_to_finest']:.4f} |")
    result = {"model": args.model, "num_images": args.num_images, "seed": args.seed,
              "rows": rows, "reference": real,
              "machine": platform.processor() or platform.machine()}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
