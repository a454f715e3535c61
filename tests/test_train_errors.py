"""Mistakes in `train-teacher` input give one clear `Error:` line (exit 2), never a traceback."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.models.data import load_images
from flexopt.models.train import TrainConfig, check_config

TINY_CLI = ["--image-size", "8", "--channels", "8,16", "--batch-size", "2",
            "--checkpoint-every", "1"]


def _folder(path, n=3):
    """A folder of `n` small grey PNGs."""
    path.mkdir()
    for i in range(n):
        pixels = np.random.default_rng(i).integers(0, 255, (8, 8), np.uint8)
        Image.fromarray(pixels).save(path / f"{i}.png")
    return path


def _train(*args):
    return CliRunner().invoke(main, ["train-teacher", *args])


def _assert_user_error(result, *parts):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    for part in parts:
        assert part in result.output, result.output


@pytest.mark.parametrize(("channels", "size", "factor"), [
    ("16,32,64,128", "9", 8),
    ("16,32,64,128,256", "8", 16),
    ("8,16", "9", 2),
])
def test_image_size_not_divisible_is_refused_before_training(tmp_path, channels, size, factor):
    out = tmp_path / "out"
    r = _train("--data", str(_folder(tmp_path / "imgs")), "--out", str(out), "--steps", "1",
               "--batch-size", "2", "--channels", channels, "--image-size", size)
    blocks = len(channels.split(","))
    _assert_user_error(r, f"--image-size {size} is invalid for {blocks} U-Net blocks",
                       f"allowed: a multiple of {factor}")
    assert not out.exists(), "refused before anything was written"


def test_image_size_rule_matches_the_unet():
    check_config(TrainConfig(image_size=12, block_out_channels=(8, 16, 24)))  # 12 = 3 * 4
    check_config(TrainConfig(image_size=9, block_out_channels=(8,)))  # one block: no downsampling
    with pytest.raises(FlexoptError, match="a multiple of 4"):
        check_config(TrainConfig(image_size=10, block_out_channels=(8, 16, 24)))


@pytest.mark.parametrize("name", ["0_bad.png", "z_bad.png"])  # as the first file and a later one
def test_non_image_in_folder_is_named(tmp_path, name):
    folder = _folder(tmp_path / "imgs")
    bad = folder / name
    bad.write_text("this is text, not a PNG")
    with pytest.raises(FlexoptError, match=re.escape(f"{name} is not a readable image")):
        load_images(str(folder), 8)
    r = _train("--data", str(folder), "--out", str(tmp_path / "out"), "--steps", "1", *TINY_CLI)
    _assert_user_error(r, f"{bad} is not a readable image", "remove or replace this file")


def test_truncated_image_in_folder_is_named(tmp_path):
    folder = _folder(tmp_path / "imgs")
    good = (folder / "1.png").read_bytes()
    (folder / "1.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(FlexoptError, match=re.escape("1.png is not a readable image")):
        load_images(str(folder), 8)


def test_changed_setting_names_the_differing_keys(tmp_path):
    folder, out = str(_folder(tmp_path / "imgs")), str(tmp_path / "out")
    first = _train("--data", folder, "--out", out, "--steps", "2", *TINY_CLI)
    assert first.exit_code == 0, first.output
    r = _train("--data", folder, "--out", out, "--steps", "3", "--lr", "0.001", *TINY_CLI)
    _assert_user_error(r, "was written with another training config",
                       "steps: stored 2, given 3", "lr: stored 0.0002, given 0.001",
                       "re-run with the stored settings", "another --out")
    assert "batch_size" not in r.output, "only differing keys are named"
    again = _train("--data", folder, "--out", out, "--steps", "2", *TINY_CLI)
    assert again.exit_code == 0 and "resuming from" in again.output, again.output


def test_init_from_another_architecture_names_the_difference(tmp_path):
    folder, out = str(_folder(tmp_path / "imgs")), str(tmp_path / "out")
    first = _train("--data", folder, "--out", out, "--steps", "1", *TINY_CLI)
    assert first.exit_code == 0, first.output
    r = _train("--data", folder, "--out", str(tmp_path / "warm"), "--steps", "1",
               "--init-from", f"{out}/pipeline", *TINY_CLI[:2], "--channels", "8,8",
               *TINY_CLI[4:])
    _assert_user_error(r, "--init-from", "is not this architecture",
                       "block_out_channels: [8, 16] there, [8, 8] here")
    r = _train("--data", folder, "--out", str(tmp_path / "warm"), "--steps", "1",
               "--init-from", str(tmp_path / "nowhere"), *TINY_CLI)
    _assert_user_error(r, "does not exist")
