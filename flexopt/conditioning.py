"""What images are conditioned on: prompts (text pipelines), class labels, and input images
(img2img, ControlNet) with masks (inpainting).

Parsed from the command line and from study configs alike; kept free of torch so reading a
config stays cheap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from flexopt.errors import FlexoptError

DEFAULT_GUIDANCE = 7.5  # Stable Diffusion's usual classifier-free guidance scale
MAX_CLASS_LABEL = 1_000_000  # a bound, so a typo like 0-99999999999 is an error, not a MemoryError


def parse_prompts(prompts: Sequence[str], prompt_file: str | None) -> tuple[str, ...]:
    """Prompts given with --prompt (repeatable) and/or one per line in --prompt-file."""
    out = [p for p in prompts if p.strip()]
    if prompt_file:
        try:
            with open(prompt_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f if line.strip()]
        except OSError as err:
            raise FlexoptError(
                f"prompt file {prompt_file!r} cannot be read: {err.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise FlexoptError(f"prompt file {prompt_file!r} is not a UTF-8 text file; allowed: "
                               "one prompt per line") from None
        if not lines:
            raise FlexoptError(f"prompt file {prompt_file!r} holds no prompts; allowed: one "
                               "prompt per line")
        out += lines
    return tuple(out)


def parse_class_labels(value: str | int | Sequence[int] | None) -> tuple[int, ...]:
    """Class labels from "0-999", "3,7,9", "0-4,9", an integer or a list of integers."""
    if value is None or value == "":
        return ()
    if isinstance(value, bool):
        raise FlexoptError(f"class labels {value!r} are invalid; allowed: e.g. 0-999 or 3,7,9")
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, str):
        items = list(value)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in items):
            raise FlexoptError(f"class labels {value!r} are invalid; allowed: integers >= 0")
        return tuple(items)
    out: list[int] = []
    for part in value.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            a = b = -1
        if a < 0 or b < a:
            raise FlexoptError(f"class labels {value!r} are invalid at {part.strip()!r}; "
                               "allowed: labels and ranges, e.g. 0-999 or 3,7,9")
        if b >= MAX_CLASS_LABEL:
            raise FlexoptError(f"class label {b} is too large; allowed: labels below "
                               f"{MAX_CLASS_LABEL:,}")
        out.extend(range(a, b + 1))
    return tuple(out)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def list_images(directory: str, flag: str) -> tuple[str, ...]:
    """The image files of `directory` (sorted by name): the inputs cycled over generated images."""
    d = Path(directory)
    if not d.is_dir():
        raise FlexoptError(f"{flag} {directory!r} is not a directory; allowed: a folder of images "
                           f"({', '.join(IMAGE_SUFFIXES)})")
    files = sorted(str(p) for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FlexoptError(f"{flag} {directory!r} holds no images; allowed: a folder of images "
                           f"({', '.join(IMAGE_SUFFIXES)})")
    return tuple(files)


def files_digest(paths: Sequence[str]) -> str:
    """sha256 over the files' bytes, in order: what makes a teacher's inputs the same."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]
