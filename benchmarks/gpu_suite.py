"""One GPU run of the performance benchmarks at CIFAR-10 scale, in under 8 minutes.

Parts, each timed, all in one JSON (machine, date, command, arguments):
1. hardware floor: image-steps/s of a plain full U-Net forward (CIFAR-10 config, random weights)
   at the benchmark's batch and dtype — what no schedule executor can beat per full step;
2. benchmark (1), `bench_executor.py`: flexopt vs the stock loop and DeepCache's helper on the
   same schedules (DDIM `t_ref` steps, interval 5, branches 1-3), CIFAR-10 config, then SD 1.5;
3. host syncs per generation (CUDA only): `torch.cuda.set_sync_debug_mode("warn")` around one
   flexopt and one helper generation, counting the synchronizing calls each makes;
4. Inception features in fp32 and in --features-dtype (autocast): images/s, max feature
   difference, and the rFID difference it makes (teacher vs a DeepCache-uniform candidate of the
   embedded model, same noises) — lower precision is only ever behind a flag;
5. benchmark (2), `bench_search.py` (per-candidate seconds with and without prefix reuse), by
   subprocess when the file exists; if not, the suite says so and goes on.

    python benchmarks/gpu_suite.py --out gpu_suite.json          # on a GPU: ~1,000 images
    python benchmarks/gpu_suite.py --tiny --out gpu_suite.json   # a CPU check of the plumbing
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_executor  # noqa: E402  (a sibling script, not a package)

from flexopt.models.loading import dtype_name  # noqa: E402

BUDGET_S = 480  # the 8 minutes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true",
                    help="toy sizes for a CPU check (numbers mean nothing)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bf16", help="U-Net dtype: fp32, bf16 or fp16")
    ap.add_argument("--t-ref", type=int, default=100, help="DDIM steps (CIFAR-10: 100)")
    ap.add_argument("--images", type=int, default=1000, help="images (batch of benchmark 1)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds of benchmark 1")
    ap.add_argument("--no-sd", action="store_true", help="skip the SD 1.5 config in (1)")
    ap.add_argument("--features-dtype", default="fp16", help="lower-precision Inception: bf16/fp16")
    ap.add_argument("--features-model", default="flexopt:fashion-mnist",
                    help="model whose images score the features' precision")
    ap.add_argument("--inception-weights", default=None)
    ap.add_argument("--search-model", default="flexopt:fashion-mnist")
    ap.add_argument("--candidates", type=int, default=20, help="benchmark (2) candidates")
    ap.add_argument("--prefix-cache-mb", type=float, default=4096)
    ap.add_argument("--out", default="gpu_suite.json")
    args = ap.parse_args(argv)
    for flag in ("dtype", "features_dtype"):
        try:
            setattr(args, flag, dtype_name(getattr(args, flag)))
        except Exception as err:  # FlexoptError
            ap.error(f"--{flag.replace('_', '-')}: {err}")
    if args.tiny:
        args.t_ref, args.images, args.repeats, args.candidates = 10, 4, 1, 2
        args.prefix_cache_mb = 16
        if not args.device.startswith("cuda"):
            args.dtype = "float32"  # bf16 U-Nets crawl on CPU; the plumbing is the same
    return args


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def hardware_floor(args: argparse.Namespace) -> dict[str, Any]:
    """Image-steps/s of the bare full forward, CIFAR-10 config, same batch and dtype."""
    pipe = bench_executor.build("ddpm-cifar10", args.tiny, args.device, getattr(torch, args.dtype))
    unet, cfg = pipe.unet, pipe.unet.config
    x = torch.randn(args.images, cfg.in_channels, cfg.sample_size, cfg.sample_size,
                    device=args.device, dtype=unet.dtype)
    t = torch.tensor(500, device=args.device)
    calls = 3 if args.tiny else 10
    with torch.inference_mode():
        for _ in range(2):
            unet(x, t)
        sync(args.device)
        start = time.perf_counter()
        for _ in range(calls):
            unet(x, t)
        sync(args.device)
        seconds = time.perf_counter() - start
    return {"batch": args.images, "calls": calls, "seconds": seconds,
            "image_steps_per_s": args.images * calls / seconds}


def executor(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    argv = ["--configs", "ddpm-cifar10" if args.no_sd else "ddpm-cifar10,sd15",
            "--steps", str(args.t_ref), "--interval", "5", "--branches", "1,2,3",
            "--batch-size", str(args.images), "--sd-batch-size", "1" if args.tiny else "2",
            "--repeats", str(args.repeats), "--warmup", "1", "--device", args.device,
            "--dtype", args.dtype, "--quiet", "--out", str(out)]
    if args.tiny:
        argv.append("--tiny")
    return bench_executor.main(argv)


def host_syncs(args: argparse.Namespace) -> dict[str, Any] | None:
    """Synchronizing CUDA calls in one generation, flexopt vs the helper (CUDA only)."""
    if not args.device.startswith("cuda"):
        return None
    from flexopt.space.schedule import Schedule

    pipe = bench_executor.build("ddpm-cifar10", args.tiny, args.device, getattr(torch, args.dtype))
    batch = min(args.images, 16)
    loop = bench_executor.make_loop(pipe, args.t_ref, batch, args.device)
    schedule = Schedule.uniform(args.t_ref, 5, 1)
    cases = {"flexopt b=1": bench_executor.flexopt(pipe, loop, schedule, batch),
             "helper b=1": bench_executor.deepcache(pipe, loop, 5, 1),
             "stock": loop}
    counts: dict[str, Any] = {"steps": args.t_ref}
    for name, fn in cases.items():
        fn()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[name] = sum("synchronizing" in str(w.message) for w in caught)
    return counts


def features_precision(args: argparse.Namespace) -> dict[str, Any]:
    """fp32 vs --features-dtype Inception on the embedded teacher's and a candidate's images."""
    from flexopt.metrics import FeatureStats, load_inception
    from flexopt.models.loading import load_pipeline
    from flexopt.run.pipeline import apply_schedule, generate_images
    from flexopt.space.schedule import Schedule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = load_pipeline(args.features_model, device=args.device,
                             dtype=getattr(torch, args.dtype))
    n, batch = args.images, args.images
    teacher = generate_images(apply_schedule(pipe, Schedule.full(args.t_ref)), n, 0, batch,
                              progress=False)
    candidate = generate_images(apply_schedule(pipe, Schedule.uniform(args.t_ref, 5, 3)), n, 0,
                                batch, progress=False)
    out: dict[str, Any] = {"images": n, "model": args.features_model}
    feats = {}
    for name in ("float32", args.features_dtype):
        dtype = None if name == "float32" else getattr(torch, name)
        extractor = load_inception(args.inception_weights, device=args.device,
                                   batch_size=min(n, 500), dtype=dtype)
        imgs = [np.ascontiguousarray(g.images.transpose(0, 3, 1, 2)) for g in (teacher, candidate)]
        extractor(imgs[0][:2])  # warm-up
        sync(args.device)
        start = time.perf_counter()
        feats[name] = [extractor(x) for x in imgs]
        sync(args.device)
        seconds = time.perf_counter() - start
        rfid = FeatureStats.from_features(feats[name][0]).frechet_to(feats[name][1])
        out[name] = {"images_per_s": 2 * n / seconds, "rfid": rfid}
    low = args.features_dtype
    out["max_abs_feature_diff"] = float(max(np.abs(a - b).max()
                                            for a, b in zip(feats["float32"], feats[low],
                                                            strict=True)))
    out["rfid_diff"] = out[low]["rfid"] - out["float32"]["rfid"]
    return out


def search(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Benchmark (2) by subprocess, or a note that its script is missing."""
    script = HERE / "bench_search.py"
    if not script.exists():
        print(f"MISSING: {script} does not exist; benchmark (2) (the search with and without "
              "prefix reuse) was NOT run", flush=True)
        return {"missing": str(script)}
    cmd = [sys.executable, str(script), "--model", args.search_model, "--t-ref",
           str(args.t_ref), "--images", str(args.images), "--candidates", str(args.candidates),
           "--prefix-cache-mb", str(args.prefix_cache_mb), "--out", str(out)]
    text = script.read_text()
    for flag, value in (("--batch-size", str(min(args.images, 500))), ("--device", args.device),
                        ("--inception-weights", args.inception_weights)):
        if value is not None and f'"{flag}"' in text:  # flags beyond the agreed six, if it has them
            cmd += [flag, value]
    print("running:", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, check=False)
    result: dict[str, Any] = {"command": cmd, "returncode": p.returncode}
    if p.returncode == 0 and out.exists():
        result["result"] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    start = time.perf_counter()
    parts: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        steps = [("floor", lambda: hardware_floor(args)),
                 ("executor", lambda: executor(args, Path(tmp) / "executor.json")),
                 ("host_syncs", lambda: host_syncs(args)),
                 ("features", lambda: features_precision(args)),
                 ("search", lambda: search(args, Path(tmp) / "search.json"))]
        for name, part in steps:
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            parts[name] = part()
            seconds[name] = time.perf_counter() - t0
    total = time.perf_counter() - start

    floor = parts["floor"]["image_steps_per_s"]
    print(f"\n{'part':12} {'seconds':>8}  result")
    print(f"{'floor':12} {seconds['floor']:>8.1f}  {floor:,.0f} image-steps/s (full forward, "
          f"batch {args.images}, {args.dtype})")
    for r in parts["executor"]["rows"]:
        guided = 2 if r["config"] == "sd15" else 1  # the U-Net sees both guidance halves
        steps_per_s = guided * r["batch"] * r["nfe"] / r["seconds"]
        vs = f", {r['vs_helper']:.3f}x the helper's speed" if "vs_helper" in r else ""
        print(f"{'executor':12} {'':>8}  {r['config']} {r['case']}: {r['seconds']:.2f} s, wall "
              f"{r['wall_speedup']:.2f}x / MACs {r['macs_speedup']:.2f}x = "
              f"{r['wall_over_macs']:.2f}{vs}; {steps_per_s:,.0f} U-Net image-calls/s")
    print(f"{'':12} {seconds['executor']:>8.1f}")
    print(f"{'host syncs':12} {seconds['host_syncs']:>8.1f}  {parts['host_syncs']}")
    f = parts["features"]
    low = args.features_dtype
    print(f"{'features':12} {seconds['features']:>8.1f}  fp32 {f['float32']['images_per_s']:,.0f}"
          f" img/s rFID {f['float32']['rfid']:.3f}; {low} {f[low]['images_per_s']:,.0f} img/s "
          f"rFID {f[low]['rfid']:.3f} (diff {f['rfid_diff']:+.4f}, max|feature diff| "
          f"{f['max_abs_feature_diff']:.2e})")
    s = parts["search"]
    state = "MISSING" if "missing" in s else f"exit {s['returncode']}"
    print(f"{'search':12} {seconds['search']:>8.1f}  bench_search.py: {state}")
    print(f"total {total:.0f} s (budget {BUDGET_S} s){'  OVER BUDGET' if total > BUDGET_S else ''}")

    result = {"benchmark": "gpu_suite", "date": datetime.datetime.now(datetime.UTC).isoformat(
        timespec="seconds"), "machine": bench_executor.machine(), "command": " ".join(sys.argv),
        "args": vars(args), "seconds": seconds, "total_seconds": total, **parts}
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
