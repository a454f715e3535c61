"""Teacher training: deterministic, resumable, and a standard diffusers pipeline comes out."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline
from PIL import Image

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.models.data import load_images, read_idx_images
from flexopt.models.train import TrainConfig, train_teacher

TINY = dict(image_size=8, block_out_channels=(8, 16), attention_block=1, batch_size=4,
            warmup=2, checkpoint_every=2)


def _images(n=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)


def _weights(path):
    unet = DDPMPipeline.from_pretrained(path).unet
    return {k: v.clone() for k, v in unet.state_dict().items()}


def test_resume_equals_straight_run_and_pipeline_loads(tmp_path):
    imgs = _images()
    cfg = TrainConfig(steps=5, **TINY)
    quiet = dict(progress=False, log=lambda s: None)
    straight = train_teacher(cfg, tmp_path / "a", imgs, **quiet)
    again = train_teacher(cfg, tmp_path / "b", imgs, **quiet)
    # Interrupted after 3 steps, then the same command again: resumes from the checkpoint.
    train_teacher(cfg, tmp_path / "c", imgs, stop_at=3, **quiet)
    assert torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)["step"] == 3
    msgs = []
    resumed = train_teacher(cfg, tmp_path / "c", imgs, progress=False, log=msgs.append)
    assert any("resuming from" in m and "step 3" in m for m in msgs)
    a, b, c = _weights(straight), _weights(again), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), "training is not deterministic"
        assert torch.equal(a[k], c[k]), f"resumed training differs at {k}"
    assert (tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_checkpoint_of_other_config_is_refused(tmp_path):
    imgs = _images()
    train_teacher(TrainConfig(steps=2, **TINY), tmp_path, imgs, progress=False, log=print)
    with pytest.raises(FlexoptError, match="another training config"):
        train_teacher(TrainConfig(steps=2, lr=1e-3, **TINY), tmp_path, imgs, progress=False)


def test_warm_start_continues_the_given_weights_and_resumes_exactly(tmp_path):
    imgs = _images()
    quiet = dict(progress=False, log=lambda s: None)
    base = train_teacher(TrainConfig(steps=3, **TINY), tmp_path / "base", imgs, **quiet)
    warm = TrainConfig(steps=4, lr=1e-3, init_from=str(base), **TINY)
    # Stopped before its first step, the warm start holds exactly the given weights.
    start = train_teacher(warm, tmp_path / "w0", imgs, stop_at=0, **quiet)
    a, b = _weights(base), _weights(start)
    assert all(torch.equal(a[k], b[k]) for k in a)
    straight = train_teacher(warm, tmp_path / "w1", imgs, snapshot_every=2, log_every=1,
                             progress=False, log=lambda s: None)
    train_teacher(warm, tmp_path / "w2", imgs, stop_at=3, log_every=1, **quiet)
    resumed = train_teacher(warm, tmp_path / "w2", imgs, log_every=1, **quiet)
    c, d = _weights(straight), _weights(resumed)
    assert all(torch.equal(c[k], d[k]) for k in c), "a resumed warm start differs"
    assert any(not torch.equal(a[k], c[k]) for k in a), "the warm start did not train"
    # The loss curve has each step once, also across the interruption; snapshots are pipelines.
    for run in ("w1", "w2"):
        rows = (tmp_path / run / "log.csv").read_text().splitlines()
        assert rows[0] == "step,loss_ema,lr,seconds"
        assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]
    snap = DDPMPipeline.from_pretrained(tmp_path / "w1" / "snapshots" / "step-000004")
    e = snap.unet.state_dict()
    assert all(torch.equal(c[k], e[k]) for k in c)
    assert (tmp_path / "w1" / "snapshots" / "step-000002").is_dir()
    info = json.loads((straight / "flexopt_training.json").read_text())
    assert info["init"]["steps"] == 3 and info["total_steps"] == 7
    # A warm start of a warm start counts every step before it and keeps the lineage.
    again = TrainConfig(steps=2, lr=1e-3, init_from=str(straight), **TINY)
    chained = train_teacher(again, tmp_path / "w3", imgs, **quiet)
    info = json.loads((chained / "flexopt_training.json").read_text())
    assert info["total_steps"] == 9 and info["init"]["steps"] == 4
    assert info["init"]["init"]["from"] == str(base) and info["init"]["init"]["steps"] == 3


def test_warm_start_from_another_architecture_is_refused(tmp_path):
    imgs = _images()
    base = train_teacher(TrainConfig(steps=1, **TINY), tmp_path / "base", imgs,
                         progress=False, log=lambda s: None)
    other = dict(TINY, block_out_channels=(16, 16))
    with pytest.raises(FlexoptError, match=r"is not this architecture \(block_out_channels"):
        train_teacher(TrainConfig(steps=1, init_from=str(base), **other), tmp_path / "x", imgs,
                      progress=False)


def test_idx_reader_and_image_folder(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = (0x803).to_bytes(4, "big") + b"".join(v.to_bytes(4, "big") for v in x.shape)
    p = tmp_path / "imgs-idx3-ubyte.gz"
    p.write_bytes(gzip.compress(raw + x.tobytes()))
    assert np.array_equal(read_idx_images(p), x)
    p.write_bytes(gzip.compress(raw + x.tobytes()[:-1]))
    with pytest.raises(FlexoptError, match="truncated"):
        read_idx_images(p)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((10, 10), 40 * i, np.uint8)).save(folder / f"{i}.png")
    got = load_images(str(folder), 8)
    assert got.shape == (3, 1, 8, 8) and got.dtype == np.uint8
    assert got[2].min() == 80


def test_cli_train_teacher_on_folder(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (8, 8), np.uint8)).save(
            folder / f"{i}.png")
    r = CliRunner().invoke(main, ["train-teacher", "--data", str(folder), "--out",
                                  str(tmp_path / "out"), "--steps", "2", "--image-size", "8",
                                  "--channels", "8,16", "--batch-size", "2"])
    assert r.exit_code == 0, r.output
    assert DDPMPipeline.from_pretrained(tmp_path / "out" / "pipeline").unet.config.sample_size == 8
    bad = CliRunner().invoke(main, ["train-teacher", "--data", "nope", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "neither a known data set" in bad.output
    bad = CliRunner().invoke(main, ["train-teacher", "--channels", "7,x", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--channels '7,x' is invalid" in bad.output


def test_exported_teacher_samples_converge_as_ddim_steps_grow(tmp_path):
    """More DDIM steps must approach one answer, not drift: the exported scheduler config turns
    off x0 clipping, which DDIM applies without re-deriving epsilon (with it on, this tiny model's
    DDIM-40 and DDIM-160 samples differ by ~0.27 of the range, and the gap barely shrinks)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    path = train_teacher(TrainConfig(steps=5, **TINY), tmp_path, _images(), progress=False,
                         log=lambda s: None)
    src = DDPMPipeline.from_pretrained(path)
    assert src.scheduler.config.clip_sample is False
    pipe = DDIMPipeline(unet=src.unet, scheduler=DDIMScheduler.from_config(src.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    out = {k: pipe(batch_size=4, generator=torch.Generator().manual_seed(0), num_inference_steps=k,
                   output_type="np").images for k in (10, 40, 160)}
    far, near = (float(np.abs(out[k] - out[160]).mean()) for k in (10, 40))
    assert near < 0.6 * far and near < 0.05, (far, near)
