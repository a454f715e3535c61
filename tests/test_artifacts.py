"""Sample grids as Optuna artifacts: store location, grid images, upload and find back."""

from __future__ import annotations

import io
import warnings

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from flexopt.errors import FlexoptError
from flexopt.search.artifacts import (
    TEACHER_GRID,
    SampleGridUploader,
    artifact_dir,
    find_sample_grid,
    find_teacher_grid,
    grid_png,
    open_store,
    upload_sample_grid,
    upload_teacher_grid,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
IMAGES = np.random.default_rng(0).integers(0, 256, (10, 3, 32, 32), dtype=np.uint8)


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_artifact_dir_rule(tmp_path):
    assert artifact_dir("sqlite:///runs/x.db") == artifact_dir("sqlite:///runs/x.db", None)
    assert str(artifact_dir("sqlite:///runs/x.db")) == "runs/x-artifacts"
    assert artifact_dir(f"sqlite:///{tmp_path}/s.db") == tmp_path / "s-artifacts"
    assert artifact_dir("postgresql://h/db", tmp_path) == tmp_path
    with pytest.raises(FlexoptError, match=r"not a SQLite file.*--artifacts DIR"):
        artifact_dir("postgresql://h/db")
    with pytest.raises(FlexoptError, match="--artifacts DIR"):
        artifact_dir("sqlite:///:memory:")
    with pytest.raises(FlexoptError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/s.db")
    open_store(f"sqlite:///{tmp_path}/s.db", create=True)
    assert (tmp_path / "s-artifacts").is_dir()


def test_grid_png_layout_and_inputs():
    w, h = _png_size(grid_png(IMAGES))  # first 8 images of 32 px, 2 px padding
    assert (w, h) == (8 * 32 + 9 * 2, 32 + 4)
    w, h = _png_size(grid_png(torch.from_numpy(IMAGES[:2, :1]), thumb=16))  # grey, shrunk
    assert (w, h) == (2 * 16 + 3 * 2, 16 + 4)
    # Rows of `columns`, enlarged `scale`x with sharp pixels, no shrinking with thumb=None.
    grey = IMAGES[:5, :1]
    png = grid_png(grey, max_images=5, thumb=None, pad=0, columns=2, scale=3)
    w, h = _png_size(png)
    assert (w, h) == (2 * 96, 3 * 96)
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.ndim == 2, "grey images make a grey grid"
    assert np.array_equal(img[96:192, 96:192], np.kron(grey[3, 0], np.ones((3, 3), np.uint8)))
    assert (img[192:, 96:] == 255).all(), "the empty cell is white"
    floats = IMAGES.transpose(0, 2, 3, 1).astype(np.float32) / 255  # diffusers' "np" output
    assert grid_png(floats) == grid_png(IMAGES)
    with pytest.raises(FlexoptError, match=r"N×C×H×W or N×H×W×C"):
        grid_png(IMAGES[0])
    with pytest.raises(FlexoptError, match=r"uint8 or float"):
        grid_png(IMAGES.astype(np.int64))


def test_upload_and_find(tmp_path):
    store = open_store("postgresql://unused", tmp_path / "art", create=True)
    study = optuna.create_study()
    trial = study.ask()
    upload_sample_grid(trial, IMAGES, store)
    study.tell(trial, 1.0)
    dup = study.ask()
    dup.set_user_attr("duplicate_of", 0)
    study.tell(dup, 1.0)
    study.tell(study.ask(), 2.0)
    trials = study.get_trials()
    assert find_sample_grid(study, trials[0], store) == grid_png(IMAGES)
    assert find_sample_grid(study, trials[1], store) == grid_png(IMAGES)  # via duplicate_of
    assert find_sample_grid(study, trials[2], store) is None
    assert find_teacher_grid(study, store) is None
    first = upload_teacher_grid(study, IMAGES[:3], store)
    assert upload_teacher_grid(study, IMAGES, store) == first  # once per study
    assert _png_size(find_teacher_grid(study, store))[0] == 3 * 32 + 4 * 2
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [m.filename for m in metas] == [TEACHER_GRID] and metas[0].mimetype == "image/png"


def test_uploader_hook_never_fails_a_trial(tmp_path):
    uploader = SampleGridUploader.for_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study()
    trial = study.ask()
    assert uploader(trial, None) is None
    assert uploader(trial, IMAGES) is not None
    with pytest.warns(UserWarning, match="sample grid not uploaded"):
        assert uploader(trial, IMAGES[0]) is None  # bad shape: warn, keep the evaluation
    (tmp_path / "s-artifacts").rename(tmp_path / "gone")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert uploader(trial, IMAGES) is None
        assert uploader.teacher(study, IMAGES) is None
    assert len(caught) == 2
