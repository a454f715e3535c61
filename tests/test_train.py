"""Teacher training: deterministic, resumable, and a standard diffusers pipeline comes out."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline
from PIL import Image

from flexopt.cli import main
from flexopt.data import load_images, read_idx_images
from flexopt.errors import FlexoptError
from flexopt.train import TrainConfig, train_teacher

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
