"""Multi-fidelity search: score a candidate on a growing number of images and stop the hopeless.

A candidate's rFID on its first 8 or 16 images already ranks it well against the others
(docs/search-quality.md measures how well), so most candidates that end far behind can be stopped
there. Each rung is an image count; after it the objective reports the metric of the first n
images against the teacher's first n (`trial.report(value, step=n)`) and asks Optuna's pruner
(`trial.should_prune()`). The value at a rung is biased upwards at small n, but every candidate
at that rung carries the same bias (same n, same teacher images, same noises), and the pruners
only compare trials at the same step, so it ranks them fairly.

Pruned trials are PRUNED with their intermediate values (optuna-dashboard plots them). The
evolutionary sampler never takes one as a parent and never proposes its candidate again.
Baselines report their rungs too (they fill the rungs' statistics) but are never pruned.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from flexopt.errors import FlexoptError

PRUNERS = ("none", "median", "halving", "hyperband")
# docs/search-quality.md, "Pruning at equal wall-clock": on the demo's 2-minute searches halving
# and median added 4-8 % candidates, within the spread over seeds, so pruning stays opt-in.
DEFAULT_PRUNER = "none"
MIN_RUNG = 8  # the first rung: rFID of 8 images, the fewest the default rungs use
REDUCTION = 2  # each rung doubles the images; halving keeps the best half


def default_rungs(num_images: int) -> tuple[int, ...]:
    """8, 16, 32, … below `num_images` (none when `num_images` <= 8)."""
    out, n = [], MIN_RUNG
    while n < num_images:
        out.append(n)
        n *= REDUCTION
    return tuple(out)


def check_rungs(rungs: Sequence[int], num_images: int) -> tuple[int, ...]:
    """Rung image counts: increasing integers >= 2 and below `num_images` (a covariance needs
    two images; the last rung is the whole set, implied)."""
    out = tuple(int(n) for n in rungs)
    if any(n < 2 or n >= num_images for n in out) or list(out) != sorted(set(out)):
        raise FlexoptError(f"rungs {','.join(map(str, out))} are invalid for {num_images} images "
                           f"per candidate; allowed: increasing image counts from 2 to "
                           f"{num_images - 1}")
    return out


def parse_rungs(value: str | Sequence[int] | None, num_images: int) -> tuple[int, ...]:
    """Rung image counts from "8,16,32" or a list; None or "auto": `default_rungs`."""
    if value is None or value == "auto":
        return default_rungs(num_images)
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise FlexoptError(f"rungs {value!r} are invalid; allowed: image counts like "
                               "8,16,32, or auto") from None
    return check_rungs(value, num_images)


def check_pruner(name: str) -> str:
    if name not in PRUNERS:
        raise FlexoptError(f"pruner {name!r} is invalid; allowed: {', '.join(PRUNERS)}")
    return name


def make_pruner(name: str, rungs: Sequence[int], num_images: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner `name` over image-count steps (`none`: `NopPruner`).

    - `median`: stop a candidate whose rung value is worse than the median of the earlier
      candidates at that rung (after 5 candidates have reached it).
    - `halving`: asynchronous successive halving with rungs at `rungs[0]`·2^k images: a
      candidate goes on only if it is in the best half of those that reached its rung.
    - `hyperband`: several halving brackets from `rungs[0]` up to `num_images` images.
    """
    check_pruner(name)
    if name == "none" or not rungs:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rungs[0], reduction_factor=REDUCTION, min_early_stopping_rate=0)
    return optuna.pruners.HyperbandPruner(min_resource=rungs[0], max_resource=num_images,
                                          reduction_factor=REDUCTION)


__all__ = ["DEFAULT_PRUNER", "PRUNERS", "check_pruner", "check_rungs", "default_rungs",
           "make_pruner", "parse_rungs"]
