"""`flexopt macs` and `flexopt generate`, on tiny pipelines saved to disk and loaded back the way
a user's model directory (or hub id) is."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tiny
import torch
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.models.loading import REFERENCE_UNETS, load_pipeline, load_unet_config
from flexopt.run.cost import count_macs
from flexopt.run.pipeline import apply_schedule
from flexopt.space.schedule import Schedule


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ddim_dir(tmp_path_factory):
    return tiny.save(tiny.ddim_pipeline(), tmp_path_factory.mktemp("ddim") / "pipe")


@pytest.fixture(scope="module")
def schedules(tmp_path_factory):
    d = tmp_path_factory.mktemp("schedules")
    return {
        "uniform": Schedule.uniform(6, 3, 2).save(d / "uniform.json"),
        "deep": Schedule.uniform(6, 2, 13).save(d / "deep.json"),
        "plms": Schedule.uniform(4, 2, 1, "plms").save(d / "plms.json"),
    }


# ------------------------------------------------------------------------------- macs
def test_macs_json_from_a_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(REFERENCE_UNETS["ddpm-cifar10"]))
    result = invoke("macs", path, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"full_macs", "partial_macs", "max_branch"}
    assert data["max_branch"] == 12 and list(data["partial_macs"]) == [str(b) for b in range(1, 13)]
    assert type(data["full_macs"]) is int and 6.0e9 < data["full_macs"] < 6.2e9


def test_macs_of_pipeline_and_model_directories_agree(ddim_dir):
    expected = count_macs(tiny.unet2d()).to_json()
    for target in (ddim_dir, ddim_dir / "unet"):
        result = invoke("macs", target, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) == expected
    text = invoke("macs", ddim_dir)
    assert text.exit_code == 0 and "full step" in text.output
    assert len(re.findall(r"^\s+\d+\s+\S+\s+[\d.]+%$", text.output, re.M)) == 12


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist; allowed: a diffusers pipeline directory"),
        (lambda p: p, "is not a diffusers model (no model_index.json or config.json)"),
        (lambda p: _write(p / "x.txt", "hi"), "is a file but not a config.json"),
        (lambda p: _write(p / "c.json", '{"_class_name": "VQModel"}'), "'VQModel' is not supp"),
        (lambda p: _write(p / "c.json", "[1"), "cannot read c.json"),
    ],
)
def test_macs_bad_models(tmp_path, make, message):
    result = invoke("macs", make(tmp_path))
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def _write(path, text):
    path.write_text(text)
    return path


def test_unknown_hub_id_is_a_clear_error():
    # tests run with HF_HUB_OFFLINE=1: nothing is fetched
    with pytest.raises(FlexoptError, match="'nobody/nothing' does not exist locally"):
        load_unet_config("nobody/nothing")
    with pytest.raises(FlexoptError, match="'nobody/nothing' cannot be loaded as a diffusers"):
        load_pipeline("nobody/nothing")


def test_loading_a_pipeline_logs_no_diffusers_warnings(ddim_dir):
    # a user's console should show flexopt's output, not loader noise such as the
    # "install accelerate" warning diffusers prints on every load without it
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("diffusers")
    logger.addHandler(handler)
    try:
        load_pipeline(str(ddim_dir))
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []


# ---------------------------------------------------------------------------- generate
def test_generate_writes_pngs_and_npz(ddim_dir, schedules, tmp_path):
    out = tmp_path / "out"
    args = ("generate", ddim_dir, "--schedule", schedules["uniform"], "--num-images", 3)
    result = invoke(*args, "--seed", 5, "--out", out, "--batch-size", 2, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["00000.png", "00001.png", "00002.png"]
    data = np.load(out / "images.npz")
    images = data["images"]
    assert images.dtype == np.float32 and images.shape == (3, 16, 16, 3)
    assert images.min() >= 0 and images.max() <= 1
    assert data["seeds"].tolist() == [5, 6, 7]
    assert "NFE 6 per image" in result.output and "avg MACs" in result.output
    assert re.search(r"sampling time [\d.]+ s", result.output)

    # image i depends on seed + i only, not on the batch it was made in
    again = tmp_path / "again"
    result = invoke(*args, "--seed", 5, "--out", again, "--batch-size", 3, "--device", "cpu")
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(again / "images.npz")["images"], images, atol=1e-4)
    assert not (out / "grid.png").exists()


def test_generate_grid_holds_every_image_in_rows(ddim_dir, schedules, tmp_path):
    from PIL import Image

    result = invoke("generate", ddim_dir, "--schedule", schedules["uniform"], "--num-images", 3,
                    "--out", tmp_path, "--device", "cpu", "--grid", 2, "--grid-scale", 2)
    assert result.exit_code == 0, result.output
    assert "grid.png" in result.output
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    assert grid.shape == (2 * 32, 2 * 32, 3)  # 3 images of 16 px, 2 per row, enlarged 2x
    third = np.asarray(Image.open(tmp_path / "00002.png").convert("RGB"))
    assert np.array_equal(grid[32:, :32], third.repeat(2, 0).repeat(2, 1))
    result = invoke("generate", ddim_dir, "--schedule", schedules["uniform"], "--num-images", 1,
                    "--out", tmp_path, "--device", "cpu", "--grid", 0)
    assert result.exit_code == 2 and "'--grid'" in result.output


def test_generate_equals_the_python_api(ddim_dir, schedules, tmp_path):
    pipe = load_pipeline(str(ddim_dir))
    run = apply_schedule(pipe, Schedule.load(schedules["uniform"]))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    expected = run(batch_size=2, generator=gens, output_type="np", progress=False).images
    result = invoke(
        "generate", ddim_dir, "--schedule", schedules["uniform"], "--num-images", 2,
        "--seed", 0, "--out", tmp_path, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "images.npz")["images"], expected, atol=1e-6)


def test_generate_stable_diffusion_with_prompts(tmp_path, schedules):
    pytest.importorskip("transformers")
    sd_dir = tiny.save(tiny.sd_pipeline(tmp_path), tmp_path / "sd")
    result = invoke(
        "generate", sd_dir, "--schedule", schedules["plms"], "--num-images", 2, "--seed", 0,
        "--out", tmp_path / "o", "--prompt", "a cat", "--prompt", "a dog", "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "o" / "images.npz")["images"].shape == (2, 16, 16, 3)
    assert "NFE 4 per image (5 batched U-Net calls)" in result.output  # PLMS: +1 corrector


@pytest.mark.parametrize(
    ("extra", "schedule", "message"),
    [
        ((), "deep", "branch 13 is beyond this UNet2DModel; allowed: 1..12 (the maximum is 12)"),
        (("--t-ref", 50), "uniform", "schedule t_ref 6 disagrees with the requested 50"),
        (("--sampler", "plms"), "uniform", "sampler 'ddim' disagrees with the requested sampler"),
        (("--dtype", "float8"), "uniform",
         "dtype 'float8' is not supported; allowed: fp32, bf16, fp16 (or float32"),
    ],
)
def test_generate_errors(ddim_dir, schedules, tmp_path, extra, schedule, message):
    result = invoke(
        "generate", ddim_dir, "--schedule", schedules[schedule], "--num-images", 1,
        "--out", tmp_path, "--device", "cpu", *extra,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_generate_bad_model_paths(tmp_path, schedules):
    (tmp_path / "empty").mkdir()
    (tmp_path / "cfg").mkdir()
    cases = {
        tmp_path / "missing": "does not exist",
        tmp_path / "empty": "is not a diffusers model",
        _write(tmp_path / "cfg" / "config.json", "{}"): "is a file (a config has no weights)",
        tmp_path / "cfg": "config.json has no _class_name; allowed: UNet2DModel",
    }
    for model, message in cases.items():
        result = invoke(
            "generate", model, "--schedule", schedules["uniform"], "--num-images", 1,
            "--out", tmp_path / "o",
        )  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output


def test_unet_directory_needs_a_scheduler(tmp_path):
    unet_dir = tiny.save(tiny.unet2d(), tmp_path / "unet")
    with pytest.raises(FlexoptError, match="U-Net directory without a scheduler config"):
        load_pipeline(str(unet_dir))
    tiny.ddim_scheduler().save_pretrained(tmp_path / "scheduler")
    pipe = load_pipeline(str(unet_dir))  # takes ../scheduler, as inside a pipeline directory
    assert type(pipe).__name__ == "DDPMPipeline"
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(FlexoptError, match="bare UNet2DConditionModel; allowed: its pipeline"):
        load_pipeline(str(tiny.save(tiny.unet_cond(), tmp_path / "cond")))


def test_generate_in_bf16_by_its_short_name(ddim_dir, schedules, tmp_path):
    """--dtype bf16 runs the U-Net in bfloat16 (on CPU it works, slowly, and says so)."""
    from flexopt.models.loading import dtype_name, parse_dtype

    assert [dtype_name(n) for n in ("fp32", "bf16", "fp16", "float16")] == [
        "float32", "bfloat16", "float16", "float16"]
    assert parse_dtype("bf16") == torch.bfloat16
    with pytest.warns(RuntimeWarning, match="bfloat16 on CPU runs, but slowly"):
        result = invoke(
            "generate", ddim_dir, "--schedule", schedules["uniform"], "--num-images", 2,
            "--out", tmp_path, "--device", "cpu", "--dtype", "bf16",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list(tmp_path.glob("*.png"))) == 2
