"""Image-quality metrics for the search: FID Inception features, rFID, KID, paired distance, and
the CLIP score of text pipelines (`ClipScorer`).

`inception_features` turns generated images into 2048-d features; `FeatureStats` holds a teacher's
statistics (storable with `np.savez`) and scores candidates against it (or, for the `fid`
objective, against a data set's); `score(name, ...)` picks the objective by name.
"""

from __future__ import annotations

from flexopt._lazy import lazy_attributes

# `kid` names both a submodule and its function: bound eagerly (numpy only), so importing the
# submodule later cannot shadow the function with the module.
from flexopt.metrics.kid import kid

# Lazy (PEP 562): the Inception network needs torch, which `flexopt --help` and configs should
# not load; `from flexopt.metrics import FeatureStats` imports only what it names.
_LAZY = {
    "ClipScorer": "flexopt.metrics.clip",
    "DEFAULT_CLIP_MODEL": "flexopt.metrics.clip",
    "DEFAULT_METRIC": "flexopt.metrics.objectives",
    "FeatureStats": "flexopt.metrics.stats",
    "InceptionExtractor": "flexopt.metrics.features",
    "InceptionWeights": "flexopt.metrics.weights",
    "Interval": "flexopt.metrics.bootstrap",
    "DATA_METRICS": "flexopt.metrics.objectives",
    "METRICS": "flexopt.metrics.objectives",
    "OBJECTIVES": "flexopt.metrics.objectives",
    "PairedBootstrap": "flexopt.metrics.bootstrap",
    "cache_dir": "flexopt.metrics.cachedir",
    "check_metric": "flexopt.metrics.objectives",
    "clip_scores": "flexopt.metrics.clip",
    "frechet_between": "flexopt.metrics.frechet",
    "frechet_distance": "flexopt.metrics.frechet",
    "inception_features": "flexopt.metrics.features",
    "needs_reference": "flexopt.metrics.objectives",
    "load_inception": "flexopt.metrics.features",
    "paired_bootstrap": "flexopt.metrics.bootstrap",
    "paired_distance": "flexopt.metrics.kid",
    "resolve_inception_weights": "flexopt.metrics.weights",
    "score": "flexopt.metrics.objectives",
    "sqrtm_psd": "flexopt.metrics.frechet",
    "to_uint8": "flexopt.metrics.features",
}


__getattr__ = lazy_attributes("flexopt.metrics", _LAZY)


__all__ = [
    "DATA_METRICS",
    "DEFAULT_CLIP_MODEL",
    "DEFAULT_METRIC",
    "METRICS",
    "OBJECTIVES",
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
    "needs_reference",
    "paired_bootstrap",
    "paired_distance",
    "resolve_inception_weights",
    "score",
    "sqrtm_psd",
    "to_uint8",
]
