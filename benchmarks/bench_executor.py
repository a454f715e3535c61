"""Executor wall-clock vs the full schedule and DeepCache's helper, same schedules, same run.

For each U-Net config (random weights, no download: `flexopt.models.loading.REFERENCE_UNETS`; or
`fashion-mnist`, flexopt's embedded teacher, the model of the issue's table), runs in one process,
interleaved round by round (min over --repeats rounds counts; the median is reported too). Each
round runs the cases in pairs that are compared (`stock` with `flexopt full`, each branch's helper
with flexopt), a pair's two runs back to back in a random order and the pairs in a random order
(seeded by the round), so slow drifts of a shared machine hit both sides of a comparison alike;
`paired` is the median over rounds of the counterpart's seconds / flexopt's within a round (the
helper's, or stock's for `flexopt full`), and `wins` the rounds flexopt was the faster of the pair:

- `stock`: the plain diffusers loop (no flexopt, no DeepCache): the full schedule, the baseline;
- `flexopt full`: the all-full schedule through flexopt (its overhead on a full run);
- for each branch b: DeepCache's `DeepCacheSDHelper` (`cache_interval` N, `cache_branch_id` b-1)
  and flexopt's `Schedule.uniform(steps, N, b)`: the same step types (SPEC §1), DDIM for both
  (under PNDM the helper counts PLMS's repeated timestep, so its steps differ).

The loop: a pixel U-Net (`UNet2DModel`, CIFAR-10 config) runs through diffusers' own
`DDIMPipeline` (output as tensors); the SD 1.5 U-Net (`UNet2DConditionModel`) has no text encoder
or VAE here, so it runs the denoising loop a text pipeline runs (classifier-free guidance batched,
random text embeddings) through the same `pipe.unet` / `pipe.scheduler` attributes the helper and
flexopt hook into. flexopt runs as users call it (`apply_schedule` for the pipeline; `scheduled`
for the loop). Each row: wall-clock speedup over `stock`, MACs speedup (SPEC §1) and their ratio;
each branch also flexopt's time relative to the helper's and max|flexopt - helper| of the outputs
(they run the same computation). CPU seconds (process time) are recorded too: on a busy machine
they move less than wall-clock. `--tiny` shrinks both configs (a CPU check, not a measurement).

    python benchmarks/bench_executor.py --configs ddpm-cifar10 --steps 50 --interval 5 \
        --batch-size 64 --repeats 3 --out bench_executor.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from types import SimpleNamespace
from typing import Any

import torch

from flexopt.models.loading import REFERENCE_UNETS, dtype_name
from flexopt.run.cost import count_macs, schedule_cost
from flexopt.run.hooks import scheduled
from flexopt.run.pipeline import apply_schedule
from flexopt.space.schedule import Schedule

CONFIGS = ("ddpm-cifar10", "sd15")
EMBEDDED = "fashion-mnist"  # flexopt's embedded teacher (trained weights): the table
# DDPM CIFAR-10's and SD 1.5's noise schedules (their scheduler configs), run with DDIM.
SCHEDULES: dict[str, dict[str, Any]] = {
    "UNet2DModel": {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02,
                    "beta_schedule": "linear", "clip_sample": True},
    "UNet2DConditionModel": {"num_train_timesteps": 1000, "beta_start": 0.00085,
                             "beta_end": 0.012, "beta_schedule": "scaled_linear",
                             "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False},
}
# The same block structure at toy widths: `--tiny` (tests, CPU checks).
TINY: dict[str, dict[str, Any]] = {
    "ddpm-cifar10": {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8,
                     "sample_size": 16},
    "sd15": {"block_out_channels": [16, 32, 32, 32], "norm_num_groups": 8, "sample_size": 8,
             "cross_attention_dim": 32, "attention_head_dim": 4},
}
TEXT_TOKENS = 77  # CLIP's sequence length


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor(),
                            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                            "torch": torch.__version__, "python": sys.version.split()[0]}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    for package in ("diffusers", "DeepCache"):
        try:
            info[package.lower()] = version(package)
        except PackageNotFoundError:
            info[package.lower()] = None
    return info


def unet_config(name: str, tiny: bool) -> dict[str, Any]:
    config = dict(REFERENCE_UNETS[name])
    return {**config, **TINY[name]} if tiny else config


def build(name: str, tiny: bool, device: str, dtype: torch.dtype) -> Any:
    """A random-weight U-Net of config `name` with a DDIM scheduler: a `DDIMPipeline` for a pixel
    U-Net, else an object with `unet` and `scheduler` (what the helper and flexopt need)."""
    import diffusers
    from diffusers import DDIMPipeline, DDIMScheduler

    if name == EMBEDDED:
        from flexopt.models.loading import load_pipeline

        src = load_pipeline(f"flexopt:{EMBEDDED}", device=device)
        unet = src.unet if dtype == torch.float32 else src.unet.to(dtype=dtype)
        pipe = DDIMPipeline(unet, DDIMScheduler.from_config(src.scheduler.config))
        pipe.set_progress_bar_config(disable=True)
        return pipe
    config = unet_config(name, tiny)
    kind = config.pop("_class_name")
    torch.manual_seed(0)
    unet = getattr(diffusers, kind)(**config).eval().to(device)
    if dtype != torch.float32:
        unet = unet.to(dtype=dtype)
    scheduler = DDIMScheduler(**SCHEDULES[kind])
    if kind == "UNet2DModel":
        pipe = DDIMPipeline(unet, scheduler)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    return SimpleNamespace(unet=unet, scheduler=scheduler)


def make_loop(pipe: Any, steps: int, batch: int, device: str) -> Callable[[], torch.Tensor]:
    """One generation with whatever scheduler / U-Net forward `pipe` has now (fixed noise)."""
    unet = pipe.unet
    if not isinstance(pipe, SimpleNamespace):
        def pixel() -> torch.Tensor:
            gen = torch.Generator("cpu").manual_seed(0)
            return pipe(batch_size=batch, generator=gen, num_inference_steps=steps, eta=0.0,
                        output_type="pt").images
        return pixel

    cfg = unet.config
    g = torch.Generator("cpu").manual_seed(0)
    size = (batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    noise = torch.randn(size, generator=g).to(device=device, dtype=unet.dtype)
    text = torch.randn(2 * batch, TEXT_TOKENS, cfg.cross_attention_dim, generator=g)
    text = text.to(device=device, dtype=unet.dtype)

    @torch.no_grad()
    def text_loop() -> torch.Tensor:
        """A text pipeline's denoising loop: guidance 7.5, unconditional and text batched."""
        scheduler = pipe.scheduler
        scheduler.set_timesteps(steps, device=device)
        x = noise
        for t in scheduler.timesteps:
            out = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=text).sample
            uncond, cond = out.chunk(2)
            x = scheduler.step(uncond + 7.5 * (cond - uncond), t, x).prev_sample
        return x

    return text_loop


def deepcache(pipe: Any, loop: Callable[[], torch.Tensor], interval: int, branch: int
              ) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        from DeepCache import DeepCacheSDHelper

        helper = DeepCacheSDHelper(pipe=pipe)
        helper.set_params(cache_interval=interval, cache_branch_id=branch - 1)
        helper.enable()
        try:
            return loop()
        finally:
            helper.disable()
    return run


def flexopt(pipe: Any, loop: Callable[[], torch.Tensor], schedule: Schedule, batch: int
            ) -> Callable[[], torch.Tensor]:
    if isinstance(pipe, SimpleNamespace):
        def in_loop() -> torch.Tensor:
            with scheduled(pipe, schedule):
                return loop()
        return in_loop
    run = apply_schedule(pipe, schedule)

    def in_pipeline() -> torch.Tensor:
        gen = torch.Generator("cpu").manual_seed(0)
        return run(batch_size=batch, generator=gen, output_type="pt", progress=False).images
    return in_pipeline


def timed(fn: Callable[[], torch.Tensor], device: str) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, process CPU seconds, output) of one call."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def round_order(cases: list[str], r: int, shuffle: bool) -> list[str]:
    """The cases' order in round `r`: compared pairs back to back, each pair and the pairs in an
    order seeded by `r` (a fixed order favours or handicaps whoever runs after whom)."""
    pairs = [["stock", "flexopt full"]] + [
        [k.replace("flexopt", "helper"), k] for k in cases if k.startswith("flexopt b=")]
    if shuffle:
        rng = random.Random(r)
        rng.shuffle(pairs)
        for pair in pairs:
            rng.shuffle(pair)
    return [k for pair in pairs for k in pair]


def bench_config(name: str, args: argparse.Namespace, log: Callable[[str], None]
                 ) -> list[dict[str, Any]]:
    """Rows for one config: every case timed in each of --repeats interleaved rounds."""
    dtype = getattr(torch, dtype_name(args.dtype))
    pipe = build(name, args.tiny, args.device, dtype)
    conditional = isinstance(pipe, SimpleNamespace)
    batch = args.sd_batch_size if conditional else args.batch_size
    profile = count_macs(pipe.unet)
    loop = make_loop(pipe, args.steps, batch, args.device)
    full = Schedule.full(args.steps)
    cases: dict[str, tuple[Schedule, Callable[[], torch.Tensor]]] = {
        "stock": (full, loop), "flexopt full": (full, flexopt(pipe, loop, full, batch))}
    for b in args.branches:
        schedule = Schedule.uniform(args.steps, args.interval, b)
        cases[f"helper b={b}"] = (schedule, deepcache(pipe, loop, args.interval, b))
        cases[f"flexopt b={b}"] = (schedule, flexopt(pipe, loop, schedule, batch))
    best = {k: [float("inf"), float("inf")] for k in cases}
    outputs: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for _ in range(args.warmup):
            for _, fn in cases.values():
                fn()
        walls: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeats):
            for key in round_order(list(cases), r, args.shuffle):
                wall, cpu, out = timed(cases[key][1], args.device)
                best[key] = [min(best[key][0], wall), min(best[key][1], cpu)]
                walls[key].append(wall)
                outputs[key] = out
                log(f"  {name} round {r + 1}: {key} {wall:.3f} s")
    rows = []
    base_wall, base_cpu = best["stock"]
    for key, (schedule, _) in cases.items():
        cost = schedule_cost(schedule, profile)
        wall, cpu = best[key]
        row: dict[str, Any] = {
            "config": name, "case": key, "nfe": schedule.nfe, "avg_macs": cost.avg_macs,
            "macs_speedup": cost.speedup, "seconds": wall, "cpu_seconds": cpu,
            "wall_speedup": base_wall / wall, "cpu_speedup": base_cpu / cpu,
            "wall_over_macs": base_wall / wall / cost.speedup, "batch": batch,
            "seconds_all": walls[key], "seconds_median": statistics.median(walls[key]),
        }
        if key.startswith("flexopt"):  # paired with its counterpart of the same round
            other = "stock" if key == "flexopt full" else key.replace("flexopt", "helper")
            ratios = [h / f for h, f in zip(walls[other], walls[key], strict=True)]
            row["paired"] = statistics.median(ratios)  # > 1: flexopt faster
            row["wins"] = sum(x > 1 for x in ratios)
            row["rounds"] = len(ratios)
        if key.startswith("flexopt b="):
            helper = key.replace("flexopt", "helper")
            row["vs_helper"] = best[helper][0] / wall  # > 1: flexopt faster
            row["vs_helper_median"] = statistics.median(walls[helper]) / row["seconds_median"]
            row["max_abs_diff_vs_helper"] = float(
                (outputs[key].float() - outputs[helper].float()).abs().max())
        if key == "flexopt full":
            row["max_abs_diff_vs_stock"] = float(
                (outputs[key].float() - outputs["stock"].float()).abs().max())
        rows.append(row)
    if args.ops:
        count_ops(cases, rows)
    return rows


def op_counts(fn: Callable[[], torch.Tensor]) -> Counter[str]:
    """How often one call of `fn` runs each aten op (torch.profiler, CPU events)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return Counter({e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")})


# Ops that carry the U-Net's arithmetic (substrings of aten op names); the rest are views,
# copies of scalars and allocations, whose counts also differ with one-time setup.
HEAVY_OPS = ("conv", "group_norm", "layer_norm", "silu", "gelu", "linear", "addmm", "mm",
             "scaled_dot_product", "softmax", "upsample", "cat")


def count_ops(cases: dict[str, tuple[Schedule, Callable[[], torch.Tensor]]],
              rows: list[dict[str, Any]]) -> None:
    """Add to each flexopt row its and its counterpart's counts of the heavy ops (`heavy_ops`:
    op -> [counterpart, flexopt]), `heavy_no_more` (flexopt runs none of them more often) and
    the total op counts. Why: wall clock on a noisy machine cannot tell 2 % apart; the op
    counts say whether one side does more work."""
    counts = {key: op_counts(fn) for key, (_, fn) in cases.items()}
    for row in rows:
        key = row["case"]
        if not key.startswith("flexopt"):
            continue
        other = "stock" if key == "flexopt full" else key.replace("flexopt", "helper")
        mine, theirs = counts[key], counts[other]
        heavy = sorted(op for op in set(mine) | set(theirs) if any(h in op for h in HEAVY_OPS))
        row["heavy_ops"] = {op: [theirs[op], mine[op]] for op in heavy}
        row["heavy_no_more"] = all(mine[op] <= theirs[op] for op in heavy)
        row["all_ops"] = [sum(theirs.values()), sum(mine.values())]
        diff = ", ".join(f"{op[6:]} {a}/{b}" for op, (a, b) in row["heavy_ops"].items() if a != b)
        print(f"ops {row['config']} {key} vs {other}: heavy ops {diff or 'all equal'} "
              f"(counterpart/flexopt); all ops {row['all_ops'][0]}/{row['all_ops'][1]}; flexopt "
              f"runs no heavy op more often: {row['heavy_no_more']}")


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'config':13} {'case':13} {'NFE':>4} {'MACs x':>7} {'seconds':>8} {'wall x':>7} "
            f"{'wall/MACs':>9} {'CPU x':>6} {'vs helper':>9} {'median vs':>9} {'paired':>6} "
            f"{'wins':>5} {'max|diff|':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        diff = r.get("max_abs_diff_vs_helper", r.get("max_abs_diff_vs_stock"))
        vs, med, pv = r.get("vs_helper"), r.get("vs_helper_median"), r.get("paired")
        wins = f"{r['wins']}/{r['rounds']}" if "wins" in r else "-"
        lines.append(
            f"{r['config']:13} {r['case']:13} {r['nfe']:>4} {r['macs_speedup']:>7.2f} "
            f"{r['seconds']:>8.3f} {r['wall_speedup']:>7.2f} {r['wall_over_macs']:>9.2f} "
            f"{r['cpu_speedup']:>6.2f} {(f'{vs:.3f}' if vs else '-'):>9} "
            f"{(f'{med:.3f}' if med else '-'):>9} "
            f"{(f'{pv:.3f}' if pv else '-'):>6} {wins:>5} "
            f"{(f'{diff:.1e}' if diff is not None else '-'):>9}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, of: {', '.join((*CONFIGS, EMBEDDED))} (the last: the "
                         "embedded teacher with its trained weights, always at its own size)")
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (T_ref)")
    ap.add_argument("--interval", type=int, default=5, help="DeepCache interval N")
    ap.add_argument("--branches", default="1,2,3")
    ap.add_argument("--batch-size", type=int, default=64, help="images per run (CIFAR-10)")
    ap.add_argument("--sd-batch-size", type=int, default=2,
                    help="prompts per run (SD 1.5; the U-Net sees twice that, with guidance)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the min counts")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                    help="run the cases in a fixed order each round (default: compared pairs "
                         "back to back, in an order seeded by the round)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", help="U-Net dtype: fp32, bf16 or fp16")
    ap.add_argument("--tiny", action="store_true", help="toy widths (a CPU check, not a number)")
    ap.add_argument("--quiet", action="store_true", help="no per-run lines")
    ap.add_argument("--ops", action="store_true",
                    help="also count each case's aten ops (one profiled call) and list those whose "
                    "counts differ between flexopt and its counterpart")
    ap.add_argument("--out", default="bench_executor.json")
    args = ap.parse_args(argv)
    args.configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in args.configs if c not in (*CONFIGS, EMBEDDED)]
    if bad:
        ap.error(f"--configs: {bad[0]!r} is not one of {', '.join((*CONFIGS, EMBEDDED))}")
    try:
        args.branches = [int(b) for b in args.branches.split(",")]
        dtype_name(args.dtype)
    except ValueError:
        ap.error("--branches: comma-separated integers, e.g. 1,2,3")
    except Exception as err:  # FlexoptError: a bad --dtype
        ap.error(str(err))
    if args.steps % args.interval:
        ap.error(f"--interval {args.interval} must divide --steps {args.steps}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    log = (lambda _: None) if args.quiet else (lambda s: print(s, flush=True))
    start = time.perf_counter()
    rows = [row for name in args.configs for row in bench_config(name, args, log)]
    print(f"DDIM {args.steps} steps, interval {args.interval}, {dtype_name(args.dtype)} on "
          f"{args.device} ({torch.get_num_threads()} threads), random weights (the embedded "
          "teacher: trained)"
          f"{' (tiny widths)' if args.tiny else ''}; min of {args.repeats} interleaved rounds"
          f"{' (shuffled order)' if args.shuffle else ''}; x = speedup over stock, vs helper > 1 "
          "= flexopt faster (median vs: the same from the rounds' medians; paired: median of "
          "the per-round ratios; wins: rounds flexopt was faster)")
    print(table(rows))
    result = {"benchmark": "executor", "date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "machine": machine(), "command": " ".join(sys.argv),
        "args": vars(args), "total_seconds": time.perf_counter() - start, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
