"""Image-quality metrics for the search: FID Inception features, rFID, KID, paired distance, and
the CLIP score of text pipelines (`ClipScorer`).

`inception_features` turns generated images into 2048-d features; `FeatureStats` holds a teacher's
statistics (storable with `np.savez`) and scores candidates against it; `score(name, ...)` picks the
objective by name.
"""

from __future__ import annotations

from flexopt.metrics.bootstrap import Interval, PairedBootstrap, paired_bootstrap
from flexopt.metrics.cachedir import cache_dir
from flexopt.metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer, clip_scores
from flexopt.metrics.features import (
    InceptionExtractor,
    inception_features,
    load_inception,
    to_uint8,
)
from flexopt.metrics.frechet import frechet_between, frechet_distance, sqrtm_psd
from flexopt.metrics.kid import kid, paired_distance
from flexopt.metrics.objectives import DEFAULT_METRIC, METRICS, check_metric, score
from flexopt.metrics.stats import FeatureStats
from flexopt.metrics.weights import InceptionWeights, resolve_inception_weights

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_METRIC",
    "METRICS",
    "ClipScorer",
    "FeatureStats",
    "InceptionExtractor",
    "InceptionWeights",
    "Interval",
    "PairedBootstrap",
    "cache_dir",
    "check_metric",
    "clip_scores",
    "frechet_between",
    "frechet_distance",
    "inception_features",
    "kid",
    "load_inception",
    "paired_bootstrap",
    "paired_distance",
    "resolve_inception_weights",
    "score",
    "sqrtm_psd",
    "to_uint8",
]
