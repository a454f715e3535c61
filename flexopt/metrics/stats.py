"""`FeatureStats`: what a teacher cache stores, and the scores of candidates against it.

Mean and covariance (ddof=1, float64) serve rFID; the raw features (kept by default) serve the fast
Fréchet path, KID and the paired distance. The expensive teacher-side pieces (√Σ, KID's teacher
kernel term) are computed once per object and reused for every candidate of a study.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.metrics.cachedir import atomic_write
from flexopt.metrics.frechet import (
    check_features,
    clamp_distance,
    frechet_to_features,
    sqrtm_psd,
    trace_sqrt_product,
)
from flexopt.metrics.kid import kid, kxx_offdiag_mean, paired_distance

STATS_FORMAT = "flexopt.feature_stats/1"


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Mean, covariance (ddof=1) and optionally the raw features (N×d) of one image set.

    Storable with `save` / `load` (`np.savez`; loading needs no pickle), or inside a larger archive
    through `to_arrays` / `from_arrays`. √Σ is computed on first use and kept (and can be stored).
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, keep_features: bool = True) -> FeatureStats:
        x = check_features(features, None)
        if x.shape[0] < 2:
            raise FlexoptError(f"feature statistics need at least 2 images, got {x.shape[0]}")
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=0)
        xc = x64 - mu
        sigma = xc.T @ xc / (x.shape[0] - 1)
        sigma = (sigma + sigma.T) * 0.5
        return cls(mu, sigma, int(x.shape[0]), x if keep_features else None)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @functools.cached_property
    def sqrt_sigma(self) -> np.ndarray:
        return sqrtm_psd(self.sigma)

    @functools.cached_property
    def trace_sigma(self) -> float:
        return float(np.trace(self.sigma))

    @functools.cached_property
    def kid_kxx(self) -> float:
        return kxx_offdiag_mean(self._require_features("KID"))

    def frechet_to(self, other: np.ndarray | FeatureStats) -> float:
        """FD from these (teacher) stats to a candidate's raw features (fast) or its stats."""
        if isinstance(other, FeatureStats):
            if other.features is None:
                if other.dim != self.dim:
                    raise FlexoptError(f"feature dims differ: {self.dim} vs {other.dim}")
                diff = self.mu - other.mu
                tr_cov = trace_sqrt_product(self.sqrt_sigma, other.sigma)
                return clamp_distance(
                    diff @ diff + self.trace_sigma + other.trace_sigma - 2.0 * tr_cov
                )
            other = other.features
        return frechet_to_features(self.mu, self.sqrt_sigma, self.trace_sigma, other)

    def kid_to(self, features: np.ndarray) -> float:
        """Unbiased KID (poly kernel) from the teacher's raw features to the candidate's."""
        x = self._require_features("KID")
        y = check_features(features, self.dim)
        return kid(x, y, kxx=self.kid_kxx)

    def paired_to(self, features: np.ndarray) -> float:
        """Mean L2 between teacher and candidate features of the same noise index."""
        return paired_distance(self._require_features("the paired distance"), features)

    def to_arrays(self, with_sqrt: bool = False) -> dict[str, np.ndarray]:
        """Plain arrays for `np.savez` (no objects, so loading needs no pickle)."""
        out = {
            "format": np.array(STATS_FORMAT),
            "mu": self.mu,
            "sigma": self.sigma,
            "n": np.array(self.n, dtype=np.int64),
        }
        if self.features is not None:
            out["features"] = self.features
        if with_sqrt:
            out["sqrt_sigma"] = self.sqrt_sigma
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source: str = "arrays") -> FeatureStats:
        try:
            fmt = str(arrays["format"][()])
            mu = np.asarray(arrays["mu"], dtype=np.float64)
            sigma = np.asarray(arrays["sigma"], dtype=np.float64)
            n = int(arrays["n"][()])
        except KeyError as exc:
            raise FlexoptError(f"{source}: feature statistics lack the array {exc}") from exc
        if fmt != STATS_FORMAT:
            raise FlexoptError(f"{source}: format {fmt!r}, expected {STATS_FORMAT!r}")
        feats = np.asarray(arrays["features"]) if "features" in arrays else None
        sqrt = np.asarray(arrays["sqrt_sigma"], np.float64) if "sqrt_sigma" in arrays else None
        d = mu.shape[0] if mu.ndim == 1 else -1
        if not (
            d > 0
            and sigma.shape == (d, d)
            and (feats is None or feats.shape == (n, d))
            and (sqrt is None or sqrt.shape == (d, d))
        ):
            raise FlexoptError(
                f"{source}: inconsistent feature statistics: mu {mu.shape}, sigma {sigma.shape}, "
                f"features {None if feats is None else feats.shape}, n {n}"
            )
        stats = cls(mu, sigma, n, feats)
        if sqrt is not None:
            stats.__dict__["sqrt_sigma"] = sqrt  # seeds the cached_property
        return stats

    def save(self, path: str | os.PathLike[str], with_sqrt: bool = False) -> Path:
        """Write an `.npz` atomically (temp file + `os.replace`); the name is used as given."""
        buf = io.BytesIO()
        np.savez(buf, **self.to_arrays(with_sqrt))
        return atomic_write(path, lambda f: f.write(buf.getbuffer()))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as exc:
            raise FlexoptError(f"cannot read feature statistics {path}: {exc}") from exc
        return cls.from_arrays(arrays, source=str(path))

    def _require_features(self, what: str) -> np.ndarray:
        if self.features is None:
            raise FlexoptError(
                f"{what} needs the teacher's raw features; these statistics keep only mean and "
                "covariance (build them with keep_features=True)"
            )
        return self.features
