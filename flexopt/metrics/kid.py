"""KID and the paired feature distance: objectives for small image counts.

KID is the unbiased MMD² with the polynomial kernel k(x, y) = (x·y/d + 1)³ (Bińkowski et al.,
torch-fidelity's defaults), computed on the whole sets rather than on random subsets: the search
compares candidates against one fixed teacher set, so a deterministic value ranks them better. The
paired distance uses the one thing rFID throws away at small N: image i of the candidate and image i
of the teacher come from the same initial noise.
"""

from __future__ import annotations

import numpy as np

from flexopt.errors import FlexoptError


def polynomial_kernel(
    x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0
) -> np.ndarray:
    """(x·y/d + coef0)^degree for all row pairs, in float64."""
    d = x.shape[1]
    return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / d + coef0) ** degree


def kxx_offdiag_mean(x: np.ndarray) -> float:
    """Mean of k(x_i, x_j) over i ≠ j: the teacher-only term, cacheable."""
    m = x.shape[0]
    if m < 2:
        raise FlexoptError(f"KID needs at least 2 images per set, got {m}")
    k = polynomial_kernel(x, x)
    return float((k.sum() - np.trace(k)) / (m * (m - 1)))


def kid(x: np.ndarray, y: np.ndarray, *, kxx: float | None = None) -> float:
    """Unbiased MMD² of feature sets x (m×d) and y (n×d); `kxx` = kxx_offdiag_mean(x) if known."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise FlexoptError(f"KID needs two N×d feature arrays, got {x.shape} and {y.shape}")
    kxx = kxx_offdiag_mean(x) if kxx is None else kxx
    return float(kxx + kxx_offdiag_mean(y) - 2.0 * polynomial_kernel(x, y).mean())


def paired_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Mean L2 distance between row i of x and row i of y (same noise index)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise FlexoptError(
            f"the paired distance needs teacher and candidate features of the same shape "
            f"(image i of both from noise i), got {x.shape} and {y.shape}"
        )
    return float(np.linalg.norm(x - y, axis=1).mean())
