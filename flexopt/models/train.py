"""Train a small DDPM teacher (`UNet2DModel` + `DDPMScheduler`) and save a diffusers pipeline.

This is how flexopt's embedded default model is made: a real data set a package ships, our own
training loop, EMA weights, resumable checkpoints, and a standard `DDPMPipeline` directory
(safetensors) that plain `DDPMPipeline.from_pretrained` loads too.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from flexopt.errors import FlexoptError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the data)."""

    data: str = "fashion-mnist"
    image_size: int = 32
    block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    layers_per_block: int = 2
    attention_block: int = 2  # index of the down block with self-attention (-1: none)
    steps: int = 20_000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 500
    ema_decay: float = 0.999
    num_train_timesteps: int = 1000
    seed: int = 0
    checkpoint_every: int = 500
    init_from: str | None = None  # a pipeline/U-Net to warm-start from (same architecture)
    extra: dict = field(default_factory=dict)

    def unet_config(self, channels: int) -> dict:
        n = len(self.block_out_channels)
        attn = self.attention_block
        down = tuple("AttnDownBlock2D" if i == attn else "DownBlock2D" for i in range(n))
        up = tuple("AttnUpBlock2D" if n - 1 - i == attn else "UpBlock2D" for i in range(n))
        return {
            "sample_size": self.image_size,
            "in_channels": channels,
            "out_channels": channels,
            "layers_per_block": self.layers_per_block,
            "block_out_channels": tuple(self.block_out_channels),
            "down_block_types": down,
            "up_block_types": up,
            "norm_num_groups": 8,
            "attention_head_dim": None,
        }


def check_config(cfg: TrainConfig) -> None:
    """Refuse an image size the U-Net cannot round-trip, before any data is loaded or trained."""
    from flexopt.models.loading import size_multiple

    blocks = len(cfg.block_out_channels)
    factor = size_multiple(blocks)
    if cfg.image_size % factor:
        channels = ",".join(str(c) for c in cfg.block_out_channels)
        raise FlexoptError(
            f"--image-size {cfg.image_size} is invalid for {blocks} U-Net blocks "
            f"(--channels {channels}); allowed: a multiple of {factor}"
        )


def _config_json(cfg: TrainConfig) -> str:
    d = asdict(cfg)
    if d["init_from"] is None:  # so checkpoints written before warm starts existed still resume
        del d["init_from"]
    return json.dumps(d, sort_keys=True)


def _config_diff(stored: str | None, cfg: TrainConfig) -> list[str]:
    """`key: stored X, given Y` for each setting that differs, so a refusal says what to change."""
    try:
        old = json.loads(stored) if stored else {}
    except ValueError:
        old = {}
    new = json.loads(_config_json(cfg))

    def show(d: dict, key: str) -> str:
        return json.dumps(d[key]) if key in d else "(unset)"

    keys = sorted(old.keys() | new.keys())
    return [f"{k}: stored {show(old, k)}, given {show(new, k)}"
            for k in keys if show(old, k) != show(new, k)]


def _check_checkpoint_config(ckpt: Path, stored: str | None, cfg: TrainConfig) -> None:
    """Refuse to resume another config: the LR schedule (and the data) make it a different run."""
    if stored == _config_json(cfg):
        return
    diff = "; ".join(_config_diff(stored, cfg)) or "unreadable stored config"
    raise FlexoptError(
        f"{ckpt} was written with another training config ({diff}); "
        "re-run with the stored settings to resume, or use another --out (or delete it)"
    )


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def _check_init(cfg: TrainConfig, channels: int) -> dict:
    """Refuse an `init_from` of another architecture, by name (a warm start continues a model,
    it does not convert one), reading no weights; returns its training record ({} if none)."""
    from flexopt.models.loading import load_unet_config, resolve_model

    src = cfg.init_from
    have = load_unet_config(src)
    want = json.loads(json.dumps(cfg.unet_config(channels)))
    diff = [f"{k}: {json.dumps(have.get(k))} there, {json.dumps(v)} here"
            for k, v in want.items() if have.get(k) != v]
    if have.get("_class_name", "UNet2DModel") != "UNet2DModel" or diff:
        why = "; ".join(diff) or "not a UNet2DModel"
        raise FlexoptError(
            f"--init-from {src!r} is not this architecture ({why}); "
            "allowed: a UNet2DModel with the --channels, --image-size and data channels given"
        )
    record = Path(resolve_model(src)).expanduser() / "flexopt_training.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class _Run:
    """A training run's state: what a checkpoint holds."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    step: int = 0
    seconds: float = 0.0


def train_teacher(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    images: np.ndarray | None = None,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
    time_limit: float | None = None,
    stop_at: int | None = None,
    snapshot_every: int | None = None,
    log_every: int = 100,
) -> Path:
    """Train (or resume) and write a `DDPMPipeline` directory to `out_dir`; returns its path.

    `time_limit` (seconds) or `stop_at` (a step) end this run early with a checkpoint, exactly
    as an interruption would; running again resumes. The pipeline holds the EMA weights so far.
    `cfg.init_from` warm-starts model and EMA from a trained pipeline (fresh optimizer and LR
    schedule). `snapshot_every` keeps the EMA pipeline at `OUT/snapshots/step-NNNNNN` so a
    training curve (FID per step) can be measured afterwards; `OUT/log.csv` records the loss.
    """
    from diffusers import DDPMPipeline, DDPMScheduler
    from tqdm.auto import tqdm

    from flexopt.models.data import load_images

    check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if images is None:
        images = load_images(cfg.data, cfg.image_size)
    data = torch.from_numpy(images).float().div(127.5).sub(1.0)  # [-1, 1]
    n_images, channels = data.shape[0], data.shape[1]
    ckpt = out / "checkpoint.pt"
    prior = _check_init(cfg, channels) if cfg.init_from else {}
    run = _start(cfg, channels, device, ckpt, prior, log)
    # clip_sample=False in the exported config: DDIM (flexopt's and diffusers') clips x0 but keeps
    # the unclipped epsilon, so on data whose background sits at -1 (Fashion-MNIST) each step
    # nudges it brighter and more steps sample *worse* (docs/teacher.md, "more steps, worse").
    scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule="linear",
                              prediction_type="epsilon", clip_sample=False)
    alphas = scheduler.alphas_cumprod.to(device)
    curve = _Curve(out / "log.csv", run.step)
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train", unit="step", disable=not progress)
    t0 = time.perf_counter() - run.seconds
    loss_avg = None
    run.model.train()

    run_start = time.perf_counter()
    last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    while run.step < last:
        if time_limit is not None and time.perf_counter() - run_start > time_limit:
            log(f"time limit reached at step {run.step}")
            break
        loss = _train_step(run, cfg, data, alphas, device)
        loss_avg = loss if loss_avg is None else 0.98 * loss_avg + 0.02 * loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        step = run.step
        if step % log_every == 0:
            curve.add(step, loss_avg, _lr_at(cfg, step - 1), time.perf_counter() - t0)
        if snapshot_every and step % snapshot_every == 0:
            DDPMPipeline(unet=run.ema, scheduler=scheduler).save_pretrained(
                out / "snapshots" / f"step-{step:06d}", safe_serialization=True)
        if step % cfg.checkpoint_every == 0 or step == last:
            curve.flush()
            _save_checkpoint(run, cfg, ckpt, t0)
    bar.close()
    curve.flush()
    if run.step % cfg.checkpoint_every and run.step != last:  # stopped by the time limit
        _save_checkpoint(run, cfg, ckpt, t0)
    pipe = DDPMPipeline(unet=run.ema, scheduler=scheduler)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    info = _lineage(cfg, prior, run, time.perf_counter() - t0, device, n_images, loss_avg)
    (out / "pipeline" / "flexopt_training.json").write_text(json.dumps(info, indent=2))
    return out / "pipeline"


def _start(cfg: TrainConfig, channels: int, device: str, ckpt: Path, prior: dict[str, Any],
           log: Callable[[str], None]) -> _Run:
    """A fresh run (seeded), warm-started from `cfg.init_from`, or resumed from `ckpt`."""
    from diffusers import UNet2DModel

    torch.manual_seed(cfg.seed)
    model = UNet2DModel(**cfg.unet_config(channels)).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    run = _Run(model, ema, opt, torch.Generator().manual_seed(cfg.seed))
    if cfg.init_from and not ckpt.exists():  # resuming: the checkpoint has the weights
        from flexopt.models.loading import load_pipeline

        init = load_pipeline(cfg.init_from).unet.state_dict()
        model.load_state_dict(init)
        ema.load_state_dict(init)
        log(f"warm start from {cfg.init_from} ({prior.get('steps', '?')} steps trained)")
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        _check_checkpoint_config(ckpt, state.get("config"), cfg)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        run.gen.set_state(state["generator"])
        run.step, run.seconds = int(state["step"]), float(state["seconds"])
        log(f"resuming from {ckpt} at step {run.step}")
    return run


def _save_checkpoint(run: _Run, cfg: TrainConfig, ckpt: Path, t0: float) -> None:
    """Everything a resumed run needs to continue exactly (atomic: a crash keeps the last one)."""
    run.seconds = time.perf_counter() - t0
    _save_atomic({
        "config": _config_json(cfg),
        "model": run.model.state_dict(), "ema": run.ema.state_dict(),
        "optimizer": run.opt.state_dict(), "generator": run.gen.get_state(),
        "step": run.step, "seconds": run.seconds,
    }, ckpt)


def _train_step(run: _Run, cfg: TrainConfig, data: torch.Tensor, alphas: torch.Tensor,
                device: str) -> float:
    """One optimizer step on a random batch (epsilon loss), then the EMA update; its loss."""
    idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=run.gen)
    x0 = data[idx].to(device)
    if torch.rand((), generator=run.gen) < 0.5:  # horizontal flips: Fashion-MNIST is symmetric
        x0 = x0.flip(-1)
    noise = torch.randn(x0.shape, generator=run.gen).to(device)
    t = torch.randint(0, cfg.num_train_timesteps, (cfg.batch_size,), generator=run.gen).to(device)
    a = alphas[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    loss = F.mse_loss(run.model(xt, t).sample, noise)
    for g in run.opt.param_groups:
        g["lr"] = _lr_at(cfg, run.step)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    run.opt.step()
    decay = min(cfg.ema_decay, (1 + run.step) / (10 + run.step))
    with torch.no_grad():
        for pe, pm in zip(run.ema.parameters(), run.model.parameters(), strict=True):
            pe.lerp_(pm, 1 - decay)
    run.step += 1
    return loss.item()


def _lineage(cfg: TrainConfig, prior: dict[str, Any], run: _Run, seconds: float, device: str,
             n_images: int, loss_avg: float | None) -> dict[str, Any]:
    """`flexopt_training.json`: this run's settings and cost, and the warm starts before it."""
    info = {"config": asdict(cfg), "steps": run.step, "seconds": seconds,
            "device": device, "images": n_images, "torch": torch.__version__,
            "final_loss_ema": loss_avg, "parameters": sum(p.numel() for p in run.ema.parameters())}
    if cfg.init_from:
        info["init"] = {"from": cfg.init_from, "steps": prior.get("steps"),
                        "seconds": prior.get("seconds"), "device": prior.get("device")}
        if "init" in prior:  # a chain of warm starts keeps its whole lineage
            info["init"]["init"] = prior["init"]
        before = prior.get("total_steps", prior.get("steps"))
        if isinstance(before, int):
            info["total_steps"] = before + run.step
    return info


class _Curve:
    """`log.csv` (step, loss_ema, lr, seconds): rows past a resumed step are dropped, so a
    resumed run's curve has each step once."""

    HEADER = "step,loss_ema,lr,seconds\n"

    def __init__(self, path: Path, start: int) -> None:
        self.path, self.rows = path, []
        kept = []
        if path.is_file():
            for line in path.read_text().splitlines()[1:]:
                head = line.split(",", 1)[0]
                if head.isdigit() and int(head) <= start:
                    kept.append(line + "\n")
        path.write_text(self.HEADER + "".join(kept))

    def add(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self.rows.append(f"{step},{loss:.6f},{lr:.6g},{seconds:.1f}\n")

    def flush(self) -> None:
        if self.rows:
            with self.path.open("a") as f:
                f.writelines(self.rows)
            self.rows = []
