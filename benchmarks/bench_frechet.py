"""Benchmark: Fréchet distance (fast teacher-side path vs scipy sqrtm) and Inception throughput.

    python benchmarks/bench_frechet.py [--n 1000] [--d 2048] [--out bench_frechet.json]

Prints a table and writes JSON. Not a test: timings depend on the machine (BLAS threads, cores).
The sqrtm reference is the usual FID code (pytorch-fid / torch-fidelity): sqrtm(Σ1 Σ2), real part.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import torch

from flexopt.metrics import FeatureStats, frechet_distance, load_inception


def sqrtm_reference(mu1: Any, s1: Any, mu2: Any, s2: Any) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real if np.iscomplexobj(covmean) else covmean
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time of `repeats` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def features(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    """Correlated, non-negative features with a decaying spectrum, like Inception pool features."""
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    scales = 1.0 / np.sqrt(1.0 + np.arange(d))
    z = rng.standard_normal((n, d)) * scales
    return np.abs(z @ basis.T + shift).astype(np.float32)


def bench_frechet(n: int, d: int, repeats: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    teacher = FeatureStats.from_features(features(rng, n, d, 0.5))
    cand_x = features(rng, n, d, 0.55)
    cand = FeatureStats.from_features(cand_x)
    rows: list[dict[str, Any]] = []

    t_ref, ref = timed(lambda: sqrtm_reference(teacher.mu, teacher.sigma, cand.mu, cand.sigma), 1)
    rows.append({"method": "scipy.linalg.sqrtm(Σ1Σ2)", "seconds": t_ref, "fd": ref})
    t_gen, gen = timed(lambda: frechet_distance(teacher.mu, teacher.sigma, cand.mu, cand.sigma), 1)
    rows.append({"method": "frechet_distance (2× eigh)", "seconds": t_gen, "fd": gen})
    t_sqrt, _ = timed(lambda: FeatureStats(teacher.mu, teacher.sigma, n).sqrt_sigma, 1)
    rows.append({"method": "teacher √Σ once (eigh)", "seconds": t_sqrt, "fd": None})
    _ = teacher.sqrt_sigma
    t_fast, fast = timed(lambda: teacher.frechet_to(cand_x), repeats)
    rows.append({"method": "FeatureStats.frechet_to(X)", "seconds": t_fast, "fd": fast})
    for r in rows:
        r["speedup_vs_sqrtm"] = t_ref / r["seconds"]
        r["rel_diff_vs_sqrtm"] = None if r["fd"] is None else abs(r["fd"] - ref) / abs(ref)
    return rows


def bench_bootstrap(n: int, d: int, resamples: int) -> list[dict[str, Any]]:
    """Seconds per resample of the paired bootstrap (`flexopt.metrics.paired_bootstrap`), N < d:
    FID against fixed statistics and rFID against paired teacher features, each on the
    resample's repeated rows (the N×N Gram of N rows, as before) and on its distinct rows
    weighted by their counts (what it does now); the FDs must agree."""
    from flexopt.metrics import frechet_between
    from flexopt.metrics.bootstrap import _PairedGrams, _StatsGrams

    rng = np.random.default_rng(1)
    ref = FeatureStats.from_features(features(rng, max(n, 2 * d), d, 0.5))
    teacher = features(rng, n, d, 0.5).astype(np.float64)
    x = features(rng, n, d, 0.55).astype(np.float64)
    _ = ref.sqrt_sigma
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    t0 = time.perf_counter()
    stats_side = _StatsGrams(ref, x)
    paired_side = _PairedGrams(teacher, teacher @ teacher.T, x)
    setup = time.perf_counter() - t0
    ones = np.ones(n)
    cases = {
        "FID, repeated rows (frechet_to(X[idx]))": lambda idx: ref.frechet_to(x[idx]),
        "FID, distinct rows weighted": lambda idx: stats_side.frechet(*_distinct(idx, n)),
        "rFID, repeated rows (N×N Gram)": lambda idx: paired_side.frechet(idx, ones),
        "rFID, distinct rows weighted": lambda idx: paired_side.frechet(*_distinct(idx, n)),
        "rFID, frechet_between(T[idx], X[idx])": lambda idx: frechet_between(teacher[idx],
                                                                             x[idx]),
    }
    rows = []
    for name, fn in cases.items():
        t = time.perf_counter()
        values = [fn(idx) for idx in draws]
        rows.append({"method": name, "seconds_per_resample": (time.perf_counter() - t) / resamples,
                     "values": values})
    rows.append({"method": "set-up of both (once per set)", "seconds_per_resample": setup,
                 "values": None})
    return rows


def _distinct(idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(idx, minlength=n)
    rows = np.flatnonzero(counts)
    return rows, counts[rows].astype(np.float64)


def bench_inception(n_images: int, size: int, batch_size: int) -> dict[str, Any]:
    extractor = load_inception(batch_size=batch_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_images, 3, size, size), generator=g, dtype=torch.uint8)
    extractor(images[:2])  # warm-up
    t, _ = timed(lambda: extractor(images), 1)
    return {
        "input": f"{size}×{size} uint8",
        "images": n_images,
        "batch_size": batch_size,
        "device": str(extractor.device),
        "seconds": t,
        "images_per_s": n_images / t,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="images per set")
    p.add_argument("--d", type=int, default=2048, help="feature dimension")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--inception-images", type=int, default=64, help="0 skips the Inception rows")
    p.add_argument("--inception-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bootstrap", type=int, default=10,
                   help="resamples timed per bootstrap case (0 skips them)")
    p.add_argument("--out", default="bench_frechet.json")
    args = p.parse_args()

    env = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
    }
    rows = bench_frechet(args.n, args.d, args.repeats)
    print(f"Fréchet distance, N={args.n}, d={args.d} ({env['cpus']} CPUs)")
    print(f"{'method':44s} {'seconds':>9s} {'speedup':>9s} {'rel diff':>10s}")
    for r in rows:
        rel = "" if r["rel_diff_vs_sqrtm"] is None else f"{r['rel_diff_vs_sqrtm']:.1e}"
        print(f"{r['method']:44s} {r['seconds']:9.3f} {r['speedup_vs_sqrtm']:8.1f}x {rel:>10s}")
    result: dict[str, Any] = {"env": env, "n": args.n, "d": args.d, "frechet": rows}
    if args.bootstrap > 0 and args.n < args.d:
        boot = bench_bootstrap(args.n, args.d, args.bootstrap)
        result["bootstrap"] = boot
        print(f"Paired bootstrap, N={args.n} < d={args.d}, {args.bootstrap} resamples")
        print(f"{'method':44s} {'s/resample':>11s} {'max rel diff':>13s}")
        for r in boot:
            rel = ""
            if r["values"] is not None:
                twin = next(b for b in boot if b["method"].split(",")[0]
                            == r["method"].split(",")[0])
                worst = max(abs(a - b) / abs(b)
                            for a, b in zip(r["values"], twin["values"], strict=True))
                rel = f"{worst:.1e}"
            print(f"{r['method']:44s} {r['seconds_per_resample']:11.3f} {rel:>13s}")
    if args.inception_images > 0:
        inc = bench_inception(args.inception_images, args.inception_size, args.batch_size)
        result["inception"] = inc
        print(
            f"Inception features, {inc['input']} → 2048, {inc['images']} images, "
            f"{inc['device']}, "
            f"batch {inc['batch_size']}: {inc['images_per_s']:.1f} images/s"
        )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
