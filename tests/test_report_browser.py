"""The report of a tiny-model search in a real headless browser (Debian `chromium`).

The search runs a real (random-weight, 16 px) diffusers U-Net through flexopt's executor and
DDIM sampler, with MACs counted on the model; only the score is a cheap stand-in for rFID (mean
pixel distance to the teacher's images from the same noises). Skipped only where no browser is
installed and `CI` is unset; under CI a missing browser fails. FLEXOPT_REPORT_SHOTS=DIR keeps the
screenshots for a look.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tiny
from PIL import Image
from test_report_data import build_study

from flexopt.report.browser import find_browser, render, screenshot
from flexopt.report.data import collect
from flexopt.report.html import FIGURE_IDS, build_report
from flexopt.report.png import export_pareto_png
from flexopt.run.cost import count_macs, schedule_cost
from flexopt.run.pipeline import apply_schedule, generate_images
from flexopt.search.study import load_study
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace

BROWSER = find_browser()
if BROWSER is None and not os.environ.get("CI"):
    pytest.skip("no Chromium/Chrome installed (CI installs chromium)", allow_module_level=True)


TINY_SPACE = SearchSpace((4, 5), (1, 3, 6), (2, 3, 4), t_ref=16)


class TinyModelEvaluator:
    """A tiny diffusers DDIM pipeline: real MACs, real images; score = 100 · mean |Δ pixel|."""

    def __init__(self, n_images: int = 4) -> None:
        self.pipe = tiny.ddim_pipeline()
        self.profile = count_macs(self.pipe.unet)
        self.full_macs = float(self.profile.full)
        self.n_images = n_images
        self.teacher_images = self._generate(Schedule.full(TINY_SPACE.t_ref))
        self.last_images: np.ndarray | None = None

    def _generate(self, schedule: Schedule) -> np.ndarray:  # float N×H×W×C in [0, 1]
        run = apply_schedule(self.pipe, schedule)
        return generate_images(run, self.n_images, 0, self.n_images, progress=False).images

    def avg_macs(self, schedule: Schedule) -> float:
        return schedule_cost(schedule, self.profile).avg_macs

    def score(self, schedule: Schedule) -> float:
        self.last_images = self._generate(schedule)
        return float(np.abs(self.last_images - self.teacher_images).mean() * 100)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    assert BROWSER is not None, "CI must have chromium: apt-get install -y chromium"
    root = tmp_path_factory.mktemp("browser")
    built = build_study(root, multi=True, n_trials=24, evaluator=TinyModelEvaluator(),
                        space=TINY_SPACE, budget="2x")
    return build_report(built.storage, None, root / "report.html", highlight=(20,))[0]


def test_report_renders_without_console_errors(page):
    result = render(page, BROWSER)
    assert result.errors == [], result.errors
    for div in FIGURE_IDS:  # each plot div was filled by plotly.js: an SVG with its traces
        m = re.search(rf'<div id="{div}" class="plotly-graph-div.*?</div>\s*<script', result.dom,
                      re.S)
        assert m and "main-svg" in m.group(0), f"plot {div} did not render"
    assert result.dom.count('class="scatterlayer') >= 2  # Pareto and progress plots drew points
    assert 'class="barlayer' in result.dom  # schedule strips
    assert result.dom.count("<img alt=") >= 2  # teacher and at least one trial's grid


def test_screenshot_and_browser_png(page, tmp_path):
    keep = os.environ.get("FLEXOPT_REPORT_SHOTS")
    shot = screenshot(page, tmp_path / "report.png", size=(1280, 3200), browser=BROWSER)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 3200)
    assert len(img.resize((64, 160)).getcolors(64 * 160)) > 50  # not a blank page
    png = export_pareto_png(collect(load_study(f"sqlite:///{page.parent}/study.db", None)),
                            tmp_path / "pareto.png", backend="browser")
    assert Image.open(png).size == (1000, 600)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for f in (shot, png, page):
            shutil.copy(f, Path(keep) / f.name)


def test_console_errors_are_caught(tmp_path):
    assert BROWSER is not None
    bad = tmp_path / "bad.html"
    bad.write_text("<html><head></head><body><p>x</p><script>console.log('all good');"
                   "console.error('boom'); nope();</script></body></html>")
    result = render(bad, BROWSER)
    assert any("boom" in e for e in result.errors)
    assert any("nope is not defined" in e for e in result.errors)
    assert "all good" in result.console and not any("good" in e for e in result.errors)
