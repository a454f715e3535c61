"""The embedded teacher (`flexopt:fashion-mnist`) and `flexopt demo`, end to end (short run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from diffusers import DDPMPipeline

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.models.loading import embedded_models, load_pipeline, resolve_model
from flexopt.space.schedule import Schedule


def test_embedded_teacher_is_a_plain_diffusers_pipeline():
    assert "fashion-mnist" in embedded_models()
    path = resolve_model("flexopt:fashion-mnist")
    pipe = DDPMPipeline.from_pretrained(path)  # loads without flexopt, as the issue asks
    assert pipe.unet.config.layers_per_block == 2 and len(pipe.unet.config.block_out_channels) == 4
    assert type(load_pipeline("flexopt:fashion-mnist")).__name__ == "DDPMPipeline"
    info = json.loads((Path(path) / "flexopt_training.json").read_text())
    assert info["config"]["data"] == "fashion-mnist" and info["steps"] > 0


def test_unknown_embedded_name():
    with pytest.raises(FlexoptError, match=r"'flexopt:cifar' is not shipped.*fashion-mnist"):
        resolve_model("flexopt:cifar")


def test_demo_short_run(tmp_path, inception_weights, monkeypatch):
    # (inception_weights: the FID packages must be installed; the demo converts its own copy)
    monkeypatch.setenv("FLEXOPT_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    # 12 images per candidate, not 32: the same path (the pruner's rung at 8), fewer images
    r = CliRunner().invoke(main, ["demo", "--out", str(out), "--n-trials", "6", "--minutes", "3",
                                  "--num-images", "12", "--device", "cpu", "--validate-images",
                                  "4"])
    assert r.exit_code == 0, r.output
    assert "12 images per candidate" in r.output
    assert "pruner: population, candidates scored on 8 → 12 images" in r.output
    assert "teacher cache built" in r.output and "what next" in r.output
    # a fitted space, the strongest baselines only, and the held-out comparison at the end
    assert "(fitted to the budget)" in r.output
    # searched candidates and the baselines on top (--minutes may stop it before 6)
    assert re.search(r"in all [1-6] searched candidates.*, \d+ baselines", r.output)
    assert "4 held-out images from seed 100000" in r.output
    assert "best searched" in r.output and "best baseline" in r.output
    assert (out / "validation.json").is_file()
    assert (out / "report.html").stat().st_size > 100_000
    best = Schedule.load(out / "best.json")
    assert best.t_ref == 50 and best.sampler == "ddim"
    r = CliRunner().invoke(main, ["generate", "flexopt:fashion-mnist", "--schedule",
                                  str(out / "best.json"), "--num-images", "2", "--out",
                                  str(tmp_path / "samples"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "samples").glob("*.png"))) == 2
