"""Real-data reference statistics, for the standard FID of generated images against a data set.

rFID (against the teacher) ranks candidates during a search; the real FID against held-out data
says how good the teacher and the chosen schedule are in absolute terms. Reference statistics are
cached like the teacher's, keyed by data set, split, size, count and feature network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.metrics.stats import FeatureStats
from flexopt.metrics.teacher import ReferenceKey, TeacherCache, TeacherEntry


def reference_stats(
    data: str,
    split: str,
    image_size: int,
    features: Callable[..., np.ndarray],
    features_sha: str,
    num_images: int | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> TeacherEntry:
    """Inception statistics of a data set's images (the first `num_images`, default all).

    `features(images, progress)` maps N×3×H×W images to N×D features."""
    from flexopt.models.data import NAMES, load_images

    name = data if data in NAMES else str(Path(data).resolve())
    images = None
    if num_images is None:  # the count is part of the key: load once to know it
        images = load_images(data, image_size, split)
        num_images = len(images)
    key = ReferenceKey(name, split, image_size, num_images, features_sha)

    def build() -> tuple[FeatureStats, np.ndarray]:
        x = images if images is not None else load_images(data, image_size, split)
        if len(x) < num_images:
            raise FlexoptError(f"{num_images} reference images were asked for, but {data} "
                               f"holds {len(x)}; allowed: at most {len(x)}")
        x = x[:num_images]
        rgb = np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x
        return FeatureStats.from_features(features(rgb, progress), keep_features=False), x

    return TeacherCache(cache, kind="reference").get_or_build(key, build)
