"""Wall-clock of DeepCache-uniform schedules vs the full schedule, next to their MACs ratios.

Builds the DDPM CIFAR-10 U-Net config with random weights (no download), runs the full DDIM
schedule and `Schedule.uniform(steps, interval, b)` for each branch through `apply_schedule`, and
prints, per schedule, NFE, avg MACs, the MACs speedup and the measured wall-clock speedup (best
of --repeats). SPEC §3 gives the DeepCache helper's wall-clock on an H100 for comparison. Writes
JSON. The default (20 steps, batch 64) takes about 3 minutes on 2 CPU cores.

    python benchmarks/bench_executor.py --steps 20 --batch-size 64 --out bench_executor.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from flexopt.cost import count_macs, schedule_cost
from flexopt.models import REFERENCE_UNETS
from flexopt.pipeline import apply_schedule
from flexopt.schedule import Schedule

# SPEC §3: DeepCache helper on an H100 (bf16, batch 500, DDIM 100, interval 5), wall-clock speedup.
H100_DEEPCACHE = {1: 3.16, 2: 2.39, 3: 1.88}


def build_pipeline(config_name: str, device: str, dtype: torch.dtype):
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    config = {k: v for k, v in REFERENCE_UNETS[config_name].items() if k != "_class_name"}
    torch.manual_seed(0)
    unet = UNet2DModel(**config).eval().to(device)
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    scheduler = DDIMScheduler(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
    return DDIMPipeline(unet, scheduler)


def time_schedule(pipe, schedule: Schedule, batch: int, repeats: int, device: str) -> float:
    run = apply_schedule(pipe, schedule)
    best = float("inf")
    for _ in range(repeats):
        gen = torch.Generator("cpu").manual_seed(0)
        run(batch_size=batch, generator=gen, output_type="pt", progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, run.stats.seconds)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="ddpm-cifar10", choices=sorted(REFERENCE_UNETS))
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps (the paper uses 100)")
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--branches", default="1,2,3")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1, help="runs per schedule; the best counts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--out", default="bench_executor.json")
    args = ap.parse_args()
    if REFERENCE_UNETS[args.config]["_class_name"] != "UNet2DModel":
        ap.error("--config must be a UNet2DModel config")

    pipe = build_pipeline(args.config, args.device, getattr(torch, args.dtype))
    profile = count_macs(REFERENCE_UNETS[args.config])
    with torch.no_grad():  # warm-up: one full U-Net call at the benchmark's batch size
        x = torch.randn(args.batch_size, 3, 32, 32, device=args.device, dtype=pipe.unet.dtype)
        pipe.unet(x, 500)

    schedules = {"full": Schedule.full(args.steps)}
    for b in (int(v) for v in args.branches.split(",")):
        schedules[f"branch {b}"] = Schedule.uniform(args.steps, args.interval, b)
    rows = []
    start = time.perf_counter()
    for name, schedule in schedules.items():
        seconds = time_schedule(pipe, schedule, args.batch_size, args.repeats, args.device)
        cost = schedule_cost(schedule, profile)
        rows.append({"schedule": name, "nfe": schedule.nfe, "avg_macs": cost.avg_macs,
                     "macs_speedup": cost.speedup, "seconds": seconds})
    for row in rows:
        row["wall_speedup"] = rows[0]["seconds"] / row["seconds"]
        b = int(row["schedule"].split()[1]) if row["schedule"] != "full" else None
        row["h100_deepcache_wall_speedup"] = H100_DEEPCACHE.get(b) if b else 1.0

    print(f"{args.config} U-Net, random weights, DDIM {args.steps} steps, interval "
          f"{args.interval}, batch {args.batch_size}, {args.dtype} on {args.device} "
          f"({torch.get_num_threads()} threads)")
    print(f"{'schedule':10} {'NFE':>4} {'avg MACs':>9} {'MACs x':>7} {'seconds':>8} "
          f"{'wall x':>7} {'H100 DeepCache wall x':>22}")
    for r in rows:
        ref = r["h100_deepcache_wall_speedup"]
        print(f"{r['schedule']:10} {r['nfe']:>4} {r['avg_macs'] / 1e9:>8.2f}G "
              f"{r['macs_speedup']:>7.2f} {r['seconds']:>8.1f} {r['wall_speedup']:>7.2f} "
              f"{(f'{ref:.2f}' if ref else '-'):>22}")
    with open(args.out, "w") as f:
        json.dump({"machine": platform.platform(), "cpus": os.cpu_count(),
                   "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "args": vars(args), "total_seconds": time.perf_counter() - start,
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
