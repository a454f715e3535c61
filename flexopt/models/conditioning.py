"""What images are conditioned on: prompts (text pipelines), class labels, and input images
(img2img, ControlNet) with masks (inpainting).

Parsed from the command line and from study configs alike; kept free of torch so reading a
config stays cheap.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flexopt.errors import FlexoptError

DEFAULT_GUIDANCE = 7.5  # Stable Diffusion's usual classifier-free guidance scale
MAX_CLASS_LABEL = 1_000_000  # a bound, so a typo like 0-99999999999 is an error, not a MemoryError


PROMPT_COLUMNS = ("caption", "prompt", "text")  # looked for, in this order, case-insensitive
PROMPT_TABLES = {".jsonl": None, ".csv": ",", ".tsv": "\t"}  # suffix -> CSV delimiter
PROMPT_FILE_FORMS = "one prompt per line, or JSONL / CSV / TSV with a caption column"


def parse_prompts(prompts: Sequence[str], prompt_file: str | None,
                  column: str | None = None) -> tuple[str, ...]:
    """Prompts given with --prompt (repeatable) and/or read from --prompt-file (a text file, one
    prompt a line; or `.jsonl` / `.csv` / `.tsv` with a caption column, `column` or the first of
    `PROMPT_COLUMNS` found)."""
    out = [p for p in prompts if p.strip()]
    if prompt_file:
        out += read_prompt_file(prompt_file, column)
    elif column is not None:
        raise FlexoptError(f"--prompt-column {column!r} was given without a prompt file; "
                           "allowed: --prompt-file with it")
    return tuple(out)


def read_prompt_file(path: str, column: str | None = None) -> list[str]:
    """The prompts of a prompt file, in file order, blank ones dropped."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise FlexoptError(f"prompt file {path!r} cannot be read: {err.strerror}") from None
    except UnicodeDecodeError:
        raise FlexoptError(f"prompt file {path!r} is not a UTF-8 text file; allowed: "
                           f"{PROMPT_FILE_FORMS}") from None
    suffix = Path(path).suffix.lower()
    if suffix in PROMPT_TABLES:
        rows = _table_rows(path, text, suffix)
        lines = [_caption(path, row, n, column) for n, row in rows]
    elif column is not None:
        raise FlexoptError(f"--prompt-column {column!r} applies to JSONL, CSV or TSV prompt "
                           f"files; {path!r} is plain text (one prompt per line)")
    else:
        lines = text.splitlines()
    out = [" ".join(line.split()) for line in lines if line.strip()]
    if not out:
        raise FlexoptError(f"prompt file {path!r} holds no prompts; allowed: {PROMPT_FILE_FORMS}")
    return out


def _table_rows(path: str, text: str, suffix: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of a JSONL file's objects or a CSV / TSV file's rows (header first)."""
    if suffix != ".jsonl":
        reader = csv.DictReader(io.StringIO(text), delimiter=PROMPT_TABLES[suffix])
        try:
            return [(reader.line_num, dict(row)) for row in reader]
        except csv.Error as err:
            raise FlexoptError(f"prompt file {path!r} is not valid CSV: {err}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise FlexoptError(f"prompt file {path!r} line {n} is not a JSON object; allowed: "
                               'one object per line, e.g. {"caption": "a photo of a cat"}')
        rows.append((n, row))
    return rows


def _caption(path: str, row: dict[str, Any], line: int, column: str | None) -> str:
    """The caption of one row: `column`, else the first of `PROMPT_COLUMNS` the row has."""
    keys = {str(k).lower(): k for k in row if k is not None}
    want = [column] if column is not None else list(PROMPT_COLUMNS)
    for name in want:
        key = name if name in row else keys.get(name.lower())
        if key is not None:
            value = row[key]
            if not isinstance(value, str):
                raise FlexoptError(f"prompt file {path!r} line {line}: {key!r} is "
                                   f"{type(value).__name__}, not text")
            return value
    have = ", ".join(map(str, row)) or "none"
    asked = f"column {column!r}" if column else f"a column named {' or '.join(PROMPT_COLUMNS)}"
    raise FlexoptError(f"prompt file {path!r} line {line} has no {asked} (its columns: {have}); "
                       "allowed: --prompt-column NAME naming one of them")


def prompt_order(count: int, seed: int) -> list[int]:
    """A shuffle of `range(count)` seeded by `seed`: the order images take the prompts in."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


def image_prompts(prompts: Sequence[str], seed: int, first: int, n: int) -> list[str]:
    """The prompts of images `first .. first + n - 1` of a run from `seed`.

    Image i takes prompt `order[i % P]`, `order` a shuffle of the P prompts seeded by `seed`: N
    images draw N distinct prompts at random (N ≤ P), reproducibly, and image i's prompt does
    not depend on N or the batch size. Other seeds (held-out validation) draw other prompts.
    """
    if not prompts:
        return [""] * n
    order = prompt_order(len(prompts), seed)
    return [prompts[order[(first + i) % len(prompts)]] for i in range(n)]


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
