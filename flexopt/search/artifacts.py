"""Sample grids as Optuna artifacts: where the store lives, how a grid is made, uploaded, found.

Why artifacts: optuna-dashboard shows a trial's artifacts next to its values, so a user browsing
the study sees what a candidate's images look like; `flexopt report` finds the same files back.
Every evaluated trial uploads one small PNG (`samples.png`, the first few images, one row); the
teacher's images from the same noises are one study-level artifact (`teacher-samples.png`), so
rows line up noise by noise.
"""

from __future__ import annotations

import io
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from flexopt.errors import FlexoptError
from flexopt.search.storage import mask_url

TRIAL_GRID = "samples.png"
TEACHER_GRID = "teacher-samples.png"
MAX_IMAGES = 8  # images per grid: enough to judge, small enough for every trial
THUMB = 96  # longest side of one image in a grid, in pixels


def artifact_dir(storage: str, artifacts: str | Path | None = None) -> Path:
    """The artifact directory of a storage: `--artifacts DIR`, else `x-artifacts/` beside x.db.

    Only a SQLite file has an obvious "beside"; for any other URL the user must say where.
    """
    if artifacts is not None:
        return Path(artifacts)
    url = urlparse(storage)
    if url.scheme == "sqlite" and storage.startswith("sqlite:///"):
        db = Path(unquote(storage[len("sqlite:///"):]))
        if db.name and db.name != ":memory:":
            return db.with_name(f"{db.stem}-artifacts")
    raise FlexoptError(
        f"storage {mask_url(storage)!r} is not a SQLite file, so there is no default artifact "
        "directory; "
        "give one with --artifacts DIR (or --no-artifacts)"
    )


def open_store(
    storage: str, artifacts: str | Path | None = None, *, create: bool = False
) -> FileSystemArtifactStore:
    """The file-system artifact store of `storage`; `create` makes its directory (for writers)."""
    path = artifact_dir(storage, artifacts)
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FlexoptError(
                f"artifact directory {str(path)!r} cannot be created: {err.strerror}"
            ) from None
    elif not path.is_dir():
        raise FlexoptError(
            f"artifact directory {str(path)!r} does not exist; give the search's --artifacts DIR"
        )
    return FileSystemArtifactStore(path)


# ------------------------------------------------------------------------------------ grids
def _as_uint8_nchw(images: Any) -> np.ndarray:
    """Images as uint8 N×C×H×W.

    Accepts numpy arrays or torch tensors, uint8 or float in [0, 1], N×C×H×W or N×H×W×C (what
    diffusers' `output_type="np"` and `GeneratedImages.images` hold), C in 1, 3, 4.
    """
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    arr = np.asarray(images)
    channels_first = arr.ndim == 4 and arr.shape[1] in (1, 3, 4)
    if arr.ndim == 4 and not channels_first and arr.shape[3] in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
        channels_first = True
    if not channels_first or not (arr.dtype == np.uint8 or np.issubdtype(arr.dtype, np.floating)):
        raise FlexoptError(
            f"sample images have shape {arr.shape} and dtype {arr.dtype}; allowed: "
            "N×C×H×W or N×H×W×C (C in 1, 3, 4), uint8 or float in [0, 1]"
        )
    if arr.dtype != np.uint8:
        arr = np.round(np.clip(np.nan_to_num(arr), 0.0, 1.0) * 255).astype(np.uint8)
    return arr


def grid_png(
    images: Any,
    max_images: int = MAX_IMAGES,
    thumb: int | None = THUMB,
    pad: int = 2,
    columns: int | None = None,
    scale: int = 1,
) -> bytes:
    """The first `max_images` images as a PNG grid of `columns` per row (None: one row), each
    enlarged `scale`× (nearest: pixels stay sharp) and, if wider than `thumb` px, shrunk to it."""
    from PIL import Image

    arr = _as_uint8_nchw(images)[:max_images]
    if arr.shape[1] == 4:
        arr = arr[:, :3]
    tiles = []
    for img in arr:
        tile = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        tile = tile.convert("RGB")
        if scale > 1:
            tile = tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)
        if thumb is not None and max(tile.size) > thumb:
            tile.thumbnail((thumb, thumb), Image.Resampling.LANCZOS)
        tiles.append(tile)
    if not tiles:
        raise FlexoptError("no sample images to put in a grid")
    cols = min(columns or len(tiles), len(tiles))
    rows = -(-len(tiles) // cols)
    w, h = max(t.width for t in tiles), max(t.height for t in tiles)
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, t in enumerate(tiles):
        grid.paste(t, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    if arr.shape[1] == 1:
        grid = grid.convert("L")  # grey images make a grey grid (a third of the bytes)
    buf = io.BytesIO()
    grid.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


# ---------------------------------------------------------------------------- upload / find
def _upload(
    target: optuna.Trial | FrozenTrial | optuna.Study,
    data: bytes,
    filename: str,
    store: FileSystemArtifactStore,
    storage: optuna.storages.BaseStorage | None,
) -> str:
    with tempfile.TemporaryDirectory(prefix="flexopt-grid-") as tmp:
        path = Path(tmp) / filename  # the file's name is what the dashboard shows
        path.write_bytes(data)
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=target,
                               storage=storage, mimetype="image/png")


def upload_sample_grid(
    trial: optuna.Trial | FrozenTrial,
    images: Any,
    store: FileSystemArtifactStore,
    *,
    storage: optuna.storages.BaseStorage | None = None,
    max_images: int = MAX_IMAGES,
) -> str:
    """Upload a trial's sample grid (`samples.png`); returns the artifact id.

    `storage` is needed only for a `FrozenTrial` (Optuna's rule).
    """
    return _upload(trial, grid_png(images, max_images), TRIAL_GRID, store, storage)


def upload_teacher_grid(
    study: optuna.Study, images: Any, store: FileSystemArtifactStore,
    *, max_images: int = MAX_IMAGES,
) -> str:
    """Upload the teacher's grid as a study artifact, once: a resumed study keeps the first."""
    existing = _find(get_all_artifact_meta(study), TEACHER_GRID)
    if existing is not None:
        return existing
    return _upload(study, grid_png(images, max_images), TEACHER_GRID, store, None)


def _find(metas: list[Any], filename: str) -> str | None:
    ids = [m.artifact_id for m in metas if m.filename == filename]
    return ids[0] if ids else None


def _read(store: FileSystemArtifactStore, artifact_id: str | None) -> bytes | None:
    if artifact_id is None:
        return None
    try:
        with store.open_reader(artifact_id) as f:
            return f.read()
    except ArtifactNotFound:
        return None  # recorded in the storage but its file was removed: show no grid


def find_sample_grid(
    study: optuna.Study,
    trial: FrozenTrial,
    store: FileSystemArtifactStore,
    trials: Sequence[FrozenTrial] | None = None,
) -> bytes | None:
    """A trial's grid PNG, or that of the trial it duplicates (same steps, not re-evaluated).

    `trials` (the study's trials by number) saves reloading them when called in a loop.
    """
    found = _read(store, _find(get_all_artifact_meta(trial, storage=study._storage), TRIAL_GRID))
    dup = trial.user_attrs.get("duplicate_of")
    if found is None and isinstance(dup, int) and dup != trial.number:
        trials = trials if trials is not None else study.get_trials(deepcopy=False)
        if 0 <= dup < len(trials):
            return find_sample_grid(study, trials[dup], store, trials)
    return found


def find_teacher_grid(study: optuna.Study, store: FileSystemArtifactStore) -> bytes | None:
    """The teacher's grid PNG of the study, if one was uploaded."""
    return _read(store, _find(get_all_artifact_meta(study), TEACHER_GRID))


@dataclass(frozen=True)
class SampleGridUploader:
    """The objective's hook: `uploader(trial, images)` after a candidate is scored.

    A failed upload (disk full, store gone) only warns: losing a picture must not lose an
    evaluation that cost seconds of GPU time. `images=None` (no images kept) does nothing.
    """

    store: FileSystemArtifactStore
    max_images: int = MAX_IMAGES

    @classmethod
    def for_storage(cls, storage: str, artifacts: str | Path | None = None) -> SampleGridUploader:
        return cls(open_store(storage, artifacts, create=True))

    def __call__(self, trial: optuna.Trial, images: Any) -> str | None:
        if images is None:
            return None
        try:
            return upload_sample_grid(trial, images, self.store, max_images=self.max_images)
        except (OSError, FlexoptError) as err:
            warnings.warn(f"trial {trial.number}: sample grid not uploaded: {err}", stacklevel=2)
            return None

    def teacher(self, study: optuna.Study, images: Any) -> str | None:
        """Upload the teacher's grid (once per study); same failure rule as for trials."""
        try:
            return upload_teacher_grid(study, images, self.store, max_images=self.max_images)
        except (OSError, FlexoptError) as err:
            warnings.warn(f"teacher sample grid not uploaded: {err}", stacklevel=2)
            return None
