"""The search objective, chosen by name: rFID (the default), KID, the paired distance, or FID.

rFID, KID and the paired distance compare a candidate's features with the teacher's from the same
initial noises; lower is better and the teacher scores 0 (KID: 0 in expectation; it is unbiased,
so it can dip below 0). FID compares them with a real data set's statistics instead: it aims the
search at realism rather than at closeness to the teacher, which differ when the fewer-step
teacher is already nearer the data than the teacher itself (docs/search-quality.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.metrics.stats import FeatureStats

DEFAULT_METRIC = "rfid"
# Against the teacher's features from the same noises.
METRICS: dict[str, Callable[[FeatureStats, np.ndarray], float]] = {
    "rfid": FeatureStats.frechet_to,
    "kid": FeatureStats.kid_to,
    "paired": FeatureStats.paired_to,
}
# Against a data set's statistics (`flexopt.metrics.reference`): a search needs a reference.
DATA_METRICS: dict[str, Callable[[FeatureStats, np.ndarray], float]] = {
    "fid": FeatureStats.frechet_to,
}
OBJECTIVES = {**METRICS, **DATA_METRICS}


def check_metric(name: str) -> str:
    """`name` if it is a known objective, else a FlexoptError listing the allowed names."""
    if name not in OBJECTIVES:
        raise FlexoptError(f"unknown metric {name!r}; allowed: {', '.join(OBJECTIVES)}")
    return name


def needs_reference(name: str) -> bool:
    """Whether objective `name` scores against a data set rather than the teacher."""
    return check_metric(name) in DATA_METRICS


def score(name: str, target: FeatureStats, candidate_features: np.ndarray) -> float:
    """Objective `name` of a candidate's N×2048 features against `target`: the teacher's
    statistics, or for a data metric the reference data set's."""
    return OBJECTIVES[check_metric(name)](target, candidate_features)
