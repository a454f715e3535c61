"""CLIP score: do the images still match their prompts?

The standard definition (Hessel et al. 2021, as torchmetrics' `CLIPScore` computes it): for image
i and its prompt, `max(100 · cos(E_image, E_text), 0)`, averaged over the images. The model is a
`transformers` CLIP (`CLIPModel` plus its processor) by hub id or directory; the literature's is
`openai/clip-vit-large-patch14`. Images are scored as the uint8 pictures a user would save, and
prompts are truncated to CLIP's 77 tokens, as torchmetrics does.

rFID says whether a schedule's images are still the teacher's; the CLIP score says whether they
still show what was asked for. A search can guard it (`flexopt search --clip-guard D`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flexopt.errors import FlexoptError
from flexopt.hub import hub_cached_or_reachable

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def clip_scores(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """Per-image CLIP scores of row-paired embeddings: max(100 · cos, 0)."""
    a = np.asarray(image_embeddings, np.float64)
    b = np.asarray(text_embeddings, np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise FlexoptError(f"CLIP scores need image and text embeddings of the same N×d shape, "
                           f"got {a.shape} and {b.shape}")
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.maximum(100.0 * (a * b).sum(axis=1), 0.0)


@dataclass(frozen=True)
class ClipComparison:
    """A schedule's CLIP score next to the teacher's on the same images' seeds and prompts."""

    schedule: np.ndarray  # per-image scores
    teacher: np.ndarray

    @property
    def value(self) -> float:
        return float(self.schedule.mean())

    @property
    def teacher_value(self) -> float:
        return float(self.teacher.mean())

    @property
    def difference(self) -> float:
        return self.value - self.teacher_value

    @property
    def difference_se(self) -> float:
        """SE of the paired mean difference (image i of both from noise i, prompt i)."""
        d = self.schedule - self.teacher
        return float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")


@dataclass
class ClipScorer:
    """A loaded CLIP model that embeds images and prompts (batched, on `device`)."""

    model: Any  # transformers.CLIPModel
    processor: Any  # transformers.CLIPProcessor
    name: str
    batch_size: int = 64
    _texts: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _fingerprint: str | None = field(default=None, init=False, repr=False)

    @classmethod
    def load(cls, name: str = DEFAULT_CLIP_MODEL, device: Any = None,
             batch_size: int = 64) -> ClipScorer:
        """`CLIPModel` and `CLIPProcessor` from a directory or hub id; one clear line when the
        id is not in the local Hugging Face cache and the hub cannot be reached."""
        from pathlib import Path

        try:
            from transformers import CLIPModel, CLIPProcessor
        except ImportError:
            raise FlexoptError("the CLIP score needs transformers: pip install transformers"
                               ) from None
        source = f"CLIP model {name!r}"
        how = ("give --clip-model DIR, a folder with a CLIPModel and its processor saved by "
               f"save_pretrained, or download it once where the hub is reachable (`hf download "
               f"{name}`) so it is in the local cache")
        path, local = Path(name).expanduser(), True
        if path.exists():
            where = str(path)
        elif name.count("/") != 1 or name.startswith((".", "/", "~")):
            raise FlexoptError(f"{source} does not exist: not a folder, nor a hub id "
                               "(owner/name); allowed: " + how.removeprefix("give "))
        else:
            where = name
            local = hub_cached_or_reachable(name, "config.json", f"{source} cannot be loaded",
                                            how)
        try:
            model = CLIPModel.from_pretrained(where, local_files_only=local).eval()
            processor = CLIPProcessor.from_pretrained(where, local_files_only=local)
        except Exception as err:  # transformers raises OSError, ValueError, KeyError...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise FlexoptError(f"{source} cannot be loaded: {first}; {how}") from None
        if device is not None:
            model = model.to(device)
        return cls(model, processor, name, batch_size)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        """Hash of the weights and the preprocessing: what makes two scorers' numbers equal."""
        if self._fingerprint is None:
            from flexopt.metrics.teacher import fingerprint_modules

            h = hashlib.sha256(fingerprint_modules({"clip": self.model}).encode())
            h.update(repr(sorted(self.processor.image_processor.to_dict().items())).encode())
            self._fingerprint = h.hexdigest()[:24]
        return self._fingerprint

    def image_embeddings(self, images: np.ndarray,
                         progress: Callable[[int], object] | None = None) -> np.ndarray:
        """Unit CLIP embeddings (N×d, float32) of float N×H×W×C images in [0, 1]."""
        import torch
        from PIL import Image

        from flexopt.metrics.features import to_uint8

        pixels = to_uint8(np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2)))
        out = []
        for start in range(0, pixels.shape[0], self.batch_size):
            batch = pixels[start:start + self.batch_size].permute(0, 2, 3, 1).numpy()
            pil = [Image.fromarray(img) for img in batch]
            inputs = self.processor(images=pil, return_tensors="pt")
            with torch.no_grad():
                emb = _pooled(self.model.get_image_features(
                    pixel_values=inputs["pixel_values"].to(self.device,
                                                           self.model.dtype)))
            out.append(_unit(emb))
            if progress is not None:
                progress(len(pil))
        return np.concatenate(out)

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        """Unit CLIP embeddings (N×d, float32) of the prompts, each distinct one embedded once."""
        import torch

        new = [p for p in dict.fromkeys(prompts) if p not in self._texts]
        max_len = self.model.config.text_config.max_position_embeddings
        for start in range(0, len(new), self.batch_size):
            chunk = new[start:start + self.batch_size]
            tokens = self.processor.tokenizer(chunk, padding=True, truncation=True,
                                              max_length=max_len, return_tensors="pt")
            with torch.no_grad():
                emb = _pooled(self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device)))
            self._texts.update(zip(chunk, _unit(emb), strict=True))
        if not prompts:
            return np.zeros((0, self.model.config.projection_dim), np.float32)
        return np.stack([self._texts[p] for p in prompts])

    def scores(self, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """Per-image CLIP scores of images and their prompts (row i with prompt i)."""
        if len(prompts) != len(images):
            raise FlexoptError(f"{len(images)} images but {len(prompts)} prompts; allowed: one "
                               "prompt per image")
        return clip_scores(self.image_embeddings(images), self.text_embeddings(prompts))


def _pooled(output: Any) -> Any:
    """The projected embedding: transformers 5 returns an output object, 4.x a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


def _unit(embeddings: Any) -> np.ndarray:
    e = embeddings.float()
    return (e / e.norm(dim=-1, keepdim=True)).cpu().numpy()
