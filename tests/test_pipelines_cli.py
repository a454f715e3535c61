"""The command line on the pipelines `flexopt.scheduled` opened up: a tiny SDXL search end to end
(search → export → generate), img2img and inpainting with --init-images / --mask-images (equal to
the Python API), `macs` of an SDXL pipeline, and one clear line for a missing or stray input."""

from __future__ import annotations

import numpy as np
import pytest
import tiny
import torch
from click.testing import CliRunner
from test_pipelines import _image

import flexopt
from flexopt.cli import main
from flexopt.models.loading import load_pipeline
from flexopt.space.schedule import Schedule

pytest.importorskip("transformers")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sdxl")
    return str(tiny.save(tiny.sdxl_pipeline(d), d / "pipe"))


@pytest.fixture(scope="module")
def img2img_dir(tmp_path_factory):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline

    d = tmp_path_factory.mktemp("img2img")
    parts = tiny.sd_components(d, scheduler=tiny.ddim_scheduler(**tiny.SD_SCHEDULE))
    inpaint = tiny.sd_components(d, unet=tiny.unet_cond(in_channels=9),
                                 scheduler=tiny.ddim_scheduler(**tiny.SD_SCHEDULE))
    return {
        "img2img": str(tiny.save(StableDiffusionImg2ImgPipeline(**parts), d / "img2img")),
        "inpaint": str(tiny.save(StableDiffusionInpaintPipeline(**inpaint), d / "inpaint")),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    (d / "images").mkdir()
    (d / "masks").mkdir()
    for i in range(2):
        _image(10 + i).save(d / "images" / f"{i}.png")
        _image(20 + i, channels=1).save(d / "masks" / f"{i}.png")
    return d


def test_sdxl_search_export_generate(sdxl_dir, tmp_path, inception_weights):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\ntwo dogs\n")
    r = run("search", "--model", sdxl_dir, "--budget", "1.5x", "--segments", "3",
            "--branches", "1,2,5", "--intervals", "1,2", "--t-ref", 6, "--num-images", 4,
            "--batch-size", 4, "--n-trials", 3, "--no-baselines", "--storage", storage,
            "--study-name", "xl",
            "--device", "cpu", "--cache-dir", tmp_path / "cache", "--inception-weights",
            inception_weights, "--prompt-file", prompts, "--guidance-scale", 5, "--no-artifacts")
    assert r.exit_code == 0, r.output
    assert "best searched under budget" in r.output
    r = run("export", "--storage", storage, "--study-name", "xl", "--best",
            "--out", tmp_path / "best.json")
    assert r.exit_code == 0, r.output
    schedule = Schedule.load(tmp_path / "best.json")
    r = run("generate", sdxl_dir, "--schedule", tmp_path / "best.json", "--num-images", 2,
            "--prompt-file", prompts, "--guidance-scale", 5, "--out", tmp_path / "o",
            "--device", "cpu")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "o" / "images.npz")["images"]
    pipe = load_pipeline(sdxl_dir)
    with flexopt.scheduled(pipe, schedule):
        expected = pipe(["a red cube", "two dogs"], guidance_scale=5.0, output_type="np",
                        generator=[torch.Generator().manual_seed(i) for i in range(2)],
                        num_inference_steps=6).images
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("kind", ["img2img", "inpaint"])
def test_generate_with_init_images(img2img_dir, inputs, tmp_path, kind):
    schedule = Schedule.uniform(6, 3, 2)
    schedule.save(tmp_path / "s.json")
    masks = ("--mask-images", inputs / "masks") if kind == "inpaint" else ()
    r = run("generate", img2img_dir[kind], "--schedule", tmp_path / "s.json", "--num-images", 3,
            "--prompt", "a cat", "--init-images", inputs / "images", *masks, "--out",
            tmp_path / "o", "--device", "cpu")
    assert r.exit_code == 0, r.output
    got = np.load(tmp_path / "o" / "images.npz")["images"]
    pipe = load_pipeline(img2img_dir[kind])
    images = [_image(10), _image(11), _image(10)]
    extra = {"mask_image": [_image(20, channels=1), _image(21, channels=1)] * 2}
    extra = {"mask_image": extra["mask_image"][:3]} if kind == "inpaint" else {}
    with flexopt.scheduled(pipe, schedule):
        expected = pipe(["a cat"] * 3, image=images, output_type="np", num_inference_steps=6,
                        generator=[torch.Generator().manual_seed(i) for i in range(3)],
                        **extra).images
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("kind", "extra", "message"),
    [
        ("img2img", (), "StableDiffusionImg2ImgPipeline needs input images: give --init-images"),
        ("inpaint", ("--init-images", "images"), "needs input masks: give --mask-images DIR"),
        ("sdxl", ("--init-images", "images"), "--init-images was given, but "
                                                "StableDiffusionXLPipeline takes no input images"),
        ("img2img", ("--init-images", "nowhere"), "--init-images 'nowhere' is not a directory"),
    ],
)
def test_input_image_errors(img2img_dir, sdxl_dir, inputs, tmp_path, kind, extra, message,
                            monkeypatch):
    monkeypatch.chdir(inputs)
    Schedule.full(6).save(tmp_path / "s.json")
    model = sdxl_dir if kind == "sdxl" else img2img_dir[kind]
    r = run("generate", model, "--schedule", tmp_path / "s.json", "--num-images", 1,
            "--prompt", "x", "--out", tmp_path / "o", "--device", "cpu", *extra)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


def test_macs_of_an_sdxl_pipeline(sdxl_dir):
    from flexopt.run.cost import count_macs

    r = run("macs", sdxl_dir, "--json")
    assert r.exit_code == 0, r.output
    assert f'"full_macs": {count_macs(load_pipeline(sdxl_dir).unet).full}' in r.output
    assert '"max_branch": 9' in r.output


def test_macs_of_a_controlnet_pipeline(tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    from flexopt.run.cost import count_controlnet_macs, count_macs

    parts = tiny.sd_components(tmp_path)
    net = tiny.controlnet(parts["unet"])
    d = tiny.save(StableDiffusionControlNetPipeline(controlnet=net, **parts), tmp_path / "cn")
    r = run("macs", d, "--json")
    assert r.exit_code == 0, r.output
    unet_macs = count_macs(parts["unet"]).full
    net_macs = count_controlnet_macs(net.config, 8)
    assert f'"full_macs": {unet_macs}' in r.output
    assert f'"controlnet_macs": {net_macs}' in r.output
    # a ControlNet is the U-Net's down path and mid block plus its own convolutions
    assert unet_macs / 3 < net_macs < unet_macs
    assert "controlnet :" in run("macs", d).output
