"""Fréchet distance between Gaussians fitted to features, fast against a fixed teacher.

FD = |μ1-μ2|² + tr Σ1 + tr Σ2 - 2 tr √(Σ1 Σ2). With A = √Σ1 (symmetric PSD, from `eigh`),
Σ1 Σ2 is similar to A Σ2 A, which is symmetric PSD, so tr √(Σ1 Σ2) = Σ √eig(A Σ2 A): no complex
Schur form (scipy's `sqrtm`), no failure on the singular covariances of N < 2048 images.

Against a teacher, A is computed once. A candidate with raw features X (N rows, centred Xc) has
Σ2 = Xcᵀ Xc / (N-1), so A Σ2 A = Mᵀ M with M = Xc A / √(N-1); for N < d its nonzero eigenvalues are
those of the N×N Gram matrix M Mᵀ, an N³ problem instead of a d³ one.
"""

from __future__ import annotations

import numpy as np

from flexopt.errors import FlexoptError


def sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh(_sym(np.asarray(sigma, dtype=np.float64)))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sqrt_sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr √(Σ1 Σ2) from √Σ1 and Σ2 (d×d eigvalsh)."""
    return sum_sqrt_eig(sqrt_sigma1 @ sigma2 @ sqrt_sigma1)


def sum_sqrt_eig(a: np.ndarray) -> float:
    """Σ √λ over the eigenvalues of a symmetric PSD matrix.

    Eigenvalues under the round-off floor (n·eps·λmax) count as 0: √ would turn that noise of a
    singular matrix (N < d images) into a visible error, ~√eps each.
    """
    w = np.linalg.eigvalsh(_sym(a))
    floor = a.shape[0] * np.finfo(np.float64).eps * max(float(w[-1]), 0.0)
    return float(np.sqrt(w[w > floor]).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance of N(μ1, Σ1) and N(μ2, Σ2), in float64; symmetric in its two sides."""
    mu1, mu2 = (np.asarray(m, dtype=np.float64).reshape(-1) for m in (mu1, mu2))
    s1, s2 = (np.asarray(s, dtype=np.float64) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise FlexoptError(
            f"Fréchet distance needs μ of shape (d,) and Σ of shape (d, d) on both sides; got "
            f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}"
        )
    diff = mu1 - mu2
    tr_cov = trace_sqrt_product(sqrtm_psd(s1), s2)
    return clamp_distance(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_cov)


def frechet_to_features(
    mu1: np.ndarray, sqrt_sigma1: np.ndarray, trace_sigma1: float, features: np.ndarray
) -> float:
    """FD between N(μ1, Σ1), given √Σ1 and tr Σ1, and the Gaussian fitted to raw features (N×d).

    Uses the N×N Gram form when N < d, else the d×d form; both are eigvalsh of a symmetric matrix.
    """
    d = mu1.shape[0]
    x = check_features(features, d).astype(np.float64)
    n = x.shape[0]
    if n < 2:
        raise FlexoptError(f"Fréchet distance needs at least 2 candidate images, got {n}")
    mu2 = x.mean(axis=0)
    xc = x - mu2
    m = (xc @ sqrt_sigma1) / np.sqrt(n - 1)
    tr_cov = sum_sqrt_eig(m @ m.T if n < d else m.T @ m)
    trace2 = float(np.einsum("ij,ij->", xc, xc)) / (n - 1)
    diff = mu1 - mu2
    return clamp_distance(diff @ diff + trace_sigma1 + trace2 - 2.0 * tr_cov)


def frechet_between(x: np.ndarray, y: np.ndarray) -> float:
    """FD between the Gaussians fitted to two raw feature sets (N×d and M×d), for when neither
    side's √Σ is at hand: a bootstrap that resamples the teacher's images as well.

    With Xc, Yc centred and scaled by 1/√(N-1), 1/√(M-1): Σ1 = XcᵀXc, Σ2 = YcᵀYc, and the
    nonzero eigenvalues of Σ1 Σ2 are the squared singular values of Xc Ycᵀ (N×M), so
    tr √(Σ1 Σ2) is its nuclear norm: an N²d + N³ problem instead of d³ when N, M < d.
    """
    x = check_features(x, None).astype(np.float64)
    y = check_features(y, x.shape[1]).astype(np.float64)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise FlexoptError(f"Fréchet distance needs at least 2 images on each side, got "
                           f"{x.shape[0]} and {y.shape[0]}")
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    xc = (x - mu1) / np.sqrt(x.shape[0] - 1)
    yc = (y - mu2) / np.sqrt(y.shape[0] - 1)
    d = x.shape[1]
    if max(x.shape[0], y.shape[0]) < d:
        tr_cov = float(np.linalg.svd(xc @ yc.T, compute_uv=False).sum())
    else:
        tr_cov = trace_sqrt_product(sqrtm_psd(xc.T @ xc), yc.T @ yc)
    diff = mu1 - mu2
    return clamp_distance(diff @ diff + float(np.einsum("ij,ij->", xc, xc))
                          + float(np.einsum("ij,ij->", yc, yc)) - 2.0 * tr_cov)


def clamp_distance(value: float) -> float:
    """A squared distance is never negative: a tiny negative (a distribution against itself,
    -1e-13) is round-off, shown as 0."""
    return max(float(value), 0.0)


def _sym(a: np.ndarray) -> np.ndarray:
    return (a + a.T) * 0.5


def check_features(x: np.ndarray, dim: int | None) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"N×{dim}" if dim is not None else "N×d"
        raise FlexoptError(f"features must be a {want} array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise FlexoptError("features contain NaN or infinity")
    return x
