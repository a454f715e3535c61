"""The search objective, chosen by name: rFID (the default), KID, or the paired distance.

All three compare a candidate's features with the teacher's from the same initial noises; lower is
better and the teacher scores 0 (KID: 0 in expectation; it is unbiased, so it can dip below 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.metrics.stats import FeatureStats

DEFAULT_METRIC = "rfid"
METRICS: dict[str, Callable[[FeatureStats, np.ndarray], float]] = {
    "rfid": FeatureStats.frechet_to,
    "kid": FeatureStats.kid_to,
    "paired": FeatureStats.paired_to,
}


def check_metric(name: str) -> str:
    """`name` if it is a known objective, else a FlexoptError listing the allowed names."""
    if name not in METRICS:
        raise FlexoptError(f"unknown metric {name!r}; allowed: {', '.join(METRICS)}")
    return name


def score(name: str, teacher: FeatureStats, candidate_features: np.ndarray) -> float:
    """Objective `name` of a candidate's N×2048 features against the teacher's statistics."""
    return METRICS[check_metric(name)](teacher, candidate_features)
