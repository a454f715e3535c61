"""Loading a MODEL argument: a pipeline or model directory, a hub id, or a U-Net `config.json`.

Why two loaders: `macs` needs only the U-Net's config (it counts on the meta device, without
weights), while `generate` needs a whole pipeline. Every failure is a `FlexoptError` that names the
path and what would have been accepted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flexopt.errors import FlexoptError
from flexopt.hub import hub_cached_or_reachable

if TYPE_CHECKING:
    import torch

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
DTYPES = ("float32", "float16", "bfloat16")
# Short names accepted wherever a dtype is given (`--dtype bf16`), mapped to the torch names.
DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_ACCEPTED = (
    "a diffusers pipeline directory (model_index.json), a model directory (config.json), "
    "a U-Net config.json, or a hub id"
)

# What SD 1.5's and SDXL's U-Net configs share beyond their shapes.
_SD_UNET_COMMON: dict[str, Any] = {
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "center_input_sample": False,
    "mid_block_scale_factor": 1,
}

# Public configs of the paper's U-Nets (SPEC §1, §3), to count their MACs without weights.
REFERENCE_UNETS: dict[str, dict[str, Any]] = {
    # google/ddpm-cifar10-32
    "ddpm-cifar10": {
        "_class_name": "UNet2DModel",
        "sample_size": 32,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [128, 256, 256, 256],
        "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
        # attention at 16x16 on both paths, as in the original DDPM (attn_resolutions=(16,))
        "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": None,
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "center_input_sample": False,
        "mid_block_scale_factor": 1,
        "time_embedding_type": "positional",
    },
    # google/ddpm-bedroom-256 (and -church-256)
    "ddpm-bedroom": {
        "_class_name": "UNet2DModel",
        "sample_size": 256,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [128, 128, 256, 256, 512, 512],
        "layers_per_block": 2,
        "down_block_types": [
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ],
        "up_block_types": [
            "UpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ],
        "attention_head_dim": None,
        "downsample_padding": 0,
        "flip_sin_to_cos": False,
        "freq_shift": 1,
        "norm_eps": 1e-06,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "center_input_sample": False,
        "mid_block_scale_factor": 1,
        "time_embedding_type": "positional",
    },
    # stable-diffusion-v1-5, unet/config.json
    "sd15": {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ],
        "up_block_types": [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
        ],
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "downsample_padding": 1,
        **_SD_UNET_COMMON,
    },
    # stable-diffusion-xl-base-1.0, unet/config.json (the fields that shape the network)
    "sdxl": {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280],
        "layers_per_block": 2,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        **_SD_UNET_COMMON,
    },
}


def unet_class(config: dict[str, Any], source: str = "config") -> type:
    """The diffusers U-Net class a config describes (by `_class_name`)."""
    import diffusers

    name = config.get("_class_name")
    if name is None:
        raise FlexoptError(
            f"{source}: config.json has no _class_name; allowed: {', '.join(UNET_CLASSES)}"
        )
    if name not in UNET_CLASSES:
        raise FlexoptError(
            f"{source}: model class {name!r} is not supported; allowed: {', '.join(UNET_CLASSES)}"
        )
    return getattr(diffusers, name)


def size_multiple(blocks: int) -> int:
    """What a diffusers U-Net's input size must divide by: every down block but the last halves
    the resolution, and the skip connections only line up when each halving is exact."""
    return 2 ** (blocks - 1)


def _read_json(path: Path, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise FlexoptError(f"{source}: cannot read {path.name}: {err}") from None
    if not isinstance(data, dict):
        raise FlexoptError(f"{source}: {path.name} is not a JSON object")
    return data


EMBEDDED_PREFIX = "flexopt:"


def embedded_models() -> list[str]:
    """Names of the pipelines shipped inside the package (`flexopt:NAME`)."""
    root = Path(__file__).parent / "pretrained"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "model_index.json").is_file())


def resolve_model(model: str) -> str:
    """`flexopt:NAME` → the shipped pipeline's directory; anything else unchanged."""
    if not model.startswith(EMBEDDED_PREFIX):
        return model
    name = model[len(EMBEDDED_PREFIX):]
    names = embedded_models()
    if name not in names:
        allowed = ", ".join(EMBEDDED_PREFIX + n for n in names) or "(none in this install)"
        raise FlexoptError(f"model {model!r} is not shipped with flexopt; allowed: {allowed}")
    return str(Path(__file__).parent / "pretrained" / name)


def _looks_like_hub_id(model: str) -> bool:
    parts = model.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not model.startswith((".", "~"))
        and not any(c in model for c in "\\: ")
    )


def _missing(model: str) -> FlexoptError:
    return FlexoptError(f"model {model!r} does not exist; allowed: {_ACCEPTED}")


def load_unet_config(model: str) -> dict[str, Any]:
    """The U-Net config of MODEL, reading no weights."""
    path = Path(resolve_model(model)).expanduser()
    source = f"model {model!r}"
    if path.is_file():
        if path.suffix != ".json":
            raise FlexoptError(f"{source} is a file but not a config.json; allowed: {_ACCEPTED}")
        config = _read_json(path, source)
    elif path.is_dir():
        if (path / "model_index.json").is_file():
            unet_cfg = path / "unet" / "config.json"
            if not unet_cfg.is_file():
                raise FlexoptError(f"{source}: pipeline has no unet/config.json")
            config = _read_json(unet_cfg, source)
        elif (path / "config.json").is_file():
            config = _read_json(path / "config.json", source)
        else:
            raise FlexoptError(
                f"{source} is not a diffusers model (no model_index.json or config.json); "
                f"allowed: {_ACCEPTED}"
            )
    elif _looks_like_hub_id(model):
        config = _hub_unet_config(model)
    else:
        raise _missing(model)
    unet_class(config, source)
    return config


def load_scheduler_config(model: str) -> dict[str, Any]:
    """The scheduler config of a local MODEL (pipeline or U-Net directory), reading no weights;
    {} when it has none here (then DDPM's defaults apply: 1000 training timesteps, offset 0)."""
    path = Path(resolve_model(model)).expanduser()
    for candidate in (path / "scheduler" / "scheduler_config.json",
                      path / "scheduler_config.json",
                      path.parent / "scheduler" / "scheduler_config.json"):
        if candidate.is_file():
            return _read_json(candidate, f"scheduler config {str(candidate)!r}")
    return {}


def load_controlnet_config(model: str) -> dict[str, Any] | None:
    """The ControlNet config of a local pipeline directory that has one (else None)."""
    path = Path(resolve_model(model)).expanduser() / "controlnet" / "config.json"
    return _read_json(path, f"model {model!r}") if path.is_file() else None


def _hub_unet_config(repo: str) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download

    errors = []
    for filename in ("unet/config.json", "config.json"):
        try:
            local = hf_hub_download(repo, filename)
        except Exception as err:  # hub errors have many types (offline, 404, auth)
            errors.append(f"{filename}: {type(err).__name__}")
            continue
        return _read_json(Path(local), f"model {repo!r}")
    raise FlexoptError(
        f"model {repo!r} does not exist locally and the hub has no U-Net config for it "
        f"({'; '.join(errors)}); allowed: {_ACCEPTED}"
    )


def _scheduler_near(path: Path):
    """A scheduler for a bare U-Net directory: its own scheduler_config.json or a sibling
    `scheduler/` (a U-Net inside a pipeline directory)."""
    import diffusers

    for candidate in (
        path / "scheduler_config.json",
        path.parent / "scheduler" / "scheduler_config.json",
    ):
        if candidate.is_file():
            config = _read_json(candidate, f"scheduler config {str(candidate)!r}")
            name = config.get("_class_name", "")
            cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
            if cls is None:
                raise FlexoptError(f"{candidate}: unknown scheduler class {name!r}")
            return cls.from_config(config)
    return None


def load_pipeline(
    model: str, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
):
    """The diffusers pipeline of MODEL (a pipeline dir or hub id; or a UNet2DModel directory with
    a scheduler config next to it, wrapped in a `DDPMPipeline`; or `flexopt:NAME`, a pipeline
    shipped with flexopt)."""
    import diffusers

    path = Path(resolve_model(model)).expanduser()
    source = f"model {model!r}"
    if path.is_file():
        raise FlexoptError(
            f"{source} is a file (a config has no weights); allowed: a diffusers pipeline "
            "directory or hub id"
        )
    if path.is_dir():
        if (path / "model_index.json").is_file():
            pipe = _from_pretrained(diffusers.DiffusionPipeline, str(path), source)
        elif (path / "config.json").is_file():
            config = _read_json(path / "config.json", source)
            cls = unet_class(config, source)
            if cls is not diffusers.UNet2DModel:
                raise FlexoptError(
                    f"{source} is a bare {cls.__name__}; allowed: its pipeline directory "
                    "(text encoder and VAE are needed to generate)"
                )
            scheduler = _scheduler_near(path)
            if scheduler is None:
                raise FlexoptError(
                    f"{source} is a U-Net directory without a scheduler config "
                    "(scheduler_config.json here or ../scheduler/); allowed: a pipeline directory"
                )
            unet = _from_pretrained(cls, str(path), source)
            pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
        else:
            raise FlexoptError(
                f"{source} is not a diffusers model (no model_index.json or config.json); "
                f"allowed: {_ACCEPTED}"
            )
    elif _looks_like_hub_id(model):
        local = hub_cached_or_reachable(model, "model_index.json",
                                        f"{source} cannot be loaded as a diffusers model",
                                        f"allowed: {_ACCEPTED}")
        pipe = _from_pretrained(diffusers.DiffusionPipeline, model, source,
                                local_files_only=local)
    else:
        raise _missing(model)
    # Cast after loading (pipelines load in float32): the dtype keyword of from_pretrained
    # changed name across diffusers versions.
    if dtype is not None and dtype != pipe.unet.dtype:
        pipe = pipe.to(dtype=dtype)
    if device is not None:
        pipe = pipe.to(device)
    import torch

    if pipe.device.type == "cpu" and pipe.unet.dtype != torch.float32:
        import warnings

        warnings.warn(
            f"{str(pipe.unet.dtype).removeprefix('torch.')} on CPU runs, but slowly (few CPU "
            "kernels for it); float32 is the fast choice on CPU", RuntimeWarning, stacklevel=2,
        )
    return pipe


def open_pipeline(model: str, device: str | None = None, dtype: str = "float32"):
    """`load_pipeline` from command-line names: `device` (default: cuda when available) and
    `dtype` ("float32", "bf16", …)."""
    return load_pipeline(model, dtype=parse_dtype(dtype), device=parse_device(device))


def _from_pretrained(cls: type, where: str, source: str, **extra: Any):
    from diffusers.utils import is_accelerate_available

    # Without accelerate, diffusers falls back to low_cpu_mem_usage=False anyway, but warns about
    # it on every load; saying so up front keeps the CLI's output to what matters.
    kwargs = {} if is_accelerate_available() else {"low_cpu_mem_usage": False}
    kwargs.update(extra)
    try:
        return cls.from_pretrained(where, **kwargs)
    except FlexoptError:
        raise
    except Exception as err:  # diffusers raises OSError, ValueError, EnvironmentError...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FlexoptError(f"{source} cannot be loaded as a diffusers model: {first}") from None


def dtype_name(name: str) -> str:
    """The torch name of a dtype given as `fp32` / `bf16` / `fp16` or `float32` / ...; or raise."""
    canonical = DTYPE_ALIASES.get(name, name)
    if canonical not in DTYPES:
        raise FlexoptError(
            f"dtype {name!r} is not supported; allowed: fp32, bf16, fp16 (or {', '.join(DTYPES)})"
        )
    return canonical


def parse_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, dtype_name(name))


def parse_device(name: str | None) -> torch.device:
    """The torch device for --device (default: cuda when available, else cpu).

    Checked here so that asking for a device this machine lacks is one line, not torch's CUDA
    assertion halfway through loading a model.
    """
    import torch

    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise FlexoptError(f"device {name!r} is not supported; allowed: cpu, cuda, cuda:N, mps")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise FlexoptError(f"device {name!r} is not available: this torch sees no CUDA GPU; "
                               "allowed: cpu")
        if dev.index is not None and dev.index >= count:
            raise FlexoptError(f"device {name!r} is not available; allowed: cuda:0..cuda:"
                               f"{count - 1}, cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FlexoptError(f"device {name!r} is not available on this machine; allowed: cpu")
    return dev
