"""Image data sets a package ships, for training and scoring the embedded teacher.

`fashion-mnist` reads Debian's `dataset-fashion-mnist` (IDX files under
/usr/share/datasets/fashion-mnist/); `digits` is scikit-learn's bundled 8×8 digits (the fallback
where the Debian package is missing); any other value is a folder of images. All come back as a
uint8 array `N×C×H×W`, resized to the requested square size.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from flexopt.errors import FlexoptError

if TYPE_CHECKING:
    from PIL.Image import Image

FASHION_MNIST_DIR = Path(
    os.environ.get("FLEXOPT_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")
)
NAMES = ("fashion-mnist", "digits")
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def read_idx_images(path: Path) -> np.ndarray:
    """Images from an IDX file (the MNIST format), gzipped or not, as uint8 `N×H×W`."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 16 or int.from_bytes(data[:4], "big") != 0x00000803:
        raise FlexoptError(f"{path} is not an IDX image file (bad magic number)")
    n, h, w = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    if len(data) != 16 + n * h * w:
        raise FlexoptError(f"{path} is truncated: expected {n}x{h}x{w} images")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, h, w).copy()


def _fashion_mnist_path(split: str) -> Path:
    """The IDX file of a Fashion-MNIST split; a one-line error naming the fix when it is missing."""
    stem = {"train": "train", "test": "t10k"}[split]
    path = FASHION_MNIST_DIR / f"{stem}-images-idx3-ubyte.gz"
    if not path.exists():
        raise FlexoptError(
            f"Fashion-MNIST not found at {path}; install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist), set FLEXOPT_FASHION_MNIST, "
            "or use --data digits"
        )
    return path


def fashion_mnist(split: str = "train") -> np.ndarray:
    """Fashion-MNIST images (uint8 `N×28×28`): 60k `train`, 10k `test`."""
    return read_idx_images(_fashion_mnist_path(split))


def check_data(data: str, split: str = "train") -> None:
    """Refuse a data set that is not on this machine, before the minutes of work that need it
    (a search builds its teacher statistics before it first reads the reference)."""
    if data == "fashion-mnist":
        _fashion_mnist_path(split)
    elif data != "digits" and not Path(data).is_dir():
        raise _unknown_data(data)


def _unknown_data(data: str) -> FlexoptError:
    return FlexoptError(
        f"data {data!r} is neither a known data set ({', '.join(NAMES)}) nor a folder of images"
    )


def digits() -> np.ndarray:
    """scikit-learn's 1797 8×8 digits, rescaled to uint8 `N×8×8`."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise FlexoptError("--data digits needs scikit-learn: pip install scikit-learn") from None
    x = load_digits().images  # values 0..16
    return np.round(x * (255.0 / 16.0)).astype(np.uint8)


def _read_image(
    path: Path, mode: str | None = None, size: tuple[int, int] | None = None
) -> Image:
    """One image, decoded now, so a file that only looks like an image fails as a user error."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as img:
            img.load()
            out = img.convert(mode) if mode else img.copy()
    except (OSError, SyntaxError, ValueError) as err:  # broken or truncated files, too
        reason = "unknown file format" if isinstance(err, UnidentifiedImageError) else str(err)
        raise FlexoptError(
            f"{path} is not a readable image ({reason}); allowed in an image folder: only valid "
            f"{', '.join(sorted(_IMAGE_EXT))} images, so remove or replace this file"
        ) from None
    return out.resize(size) if size and out.size != size else out


def image_folder(folder: Path) -> np.ndarray:
    """Every image under `folder` (recursively), as uint8 `N×C×H×W` at the first image's size."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXT)
    if not files:
        raise FlexoptError(f"no images ({', '.join(sorted(_IMAGE_EXT))}) found under {folder}")
    first = _read_image(files[0])
    mode = "L" if first.mode in ("L", "1", "I;16") else "RGB"
    arrays = [np.asarray(_read_image(p, mode, first.size)) for p in files]
    x = np.stack(arrays)
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def load_images(data: str, size: int, split: str = "train") -> np.ndarray:
    """Images of data set `data` as uint8 `N×C×size×size` (bilinear resize, zero-free padding)."""
    if data == "fashion-mnist":
        x = fashion_mnist(split)[:, None]
    elif data == "digits":
        x = digits()[:, None]
    elif Path(data).is_dir():
        x = image_folder(Path(data))
    else:
        raise _unknown_data(data)
    return resize_uint8(x, size)


def resize_uint8(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 `N×C×H×W` images to `size×size` (no-op when already that size)."""
    if x.shape[-2:] == (size, size):
        return np.ascontiguousarray(x)
    t = torch.from_numpy(x).float()
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return t.round().clamp(0, 255).to(torch.uint8).numpy()
