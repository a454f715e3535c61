"""The metric-fidelity benchmark runs end to end on a tiny model (its numbers are not checked
here: speed and ranking quality belong to the benchmark's own output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tiny

ROOT = Path(__file__).resolve().parent.parent


def test_metric_fidelity_script_on_a_tiny_model(tmp_path, inception_weights):
    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), tmp_path / "m")
    out = tmp_path / "mf.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "metric_fidelity.py"), "--model", str(model),
         "--reference-images", "4", "--max-count", "16", "--sampled", "1", "--schedules", "2",
         "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"), "--inception-weights",
         inception_weights, "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert [r["schedule"] for r in data["rows"]] == ["teacher T=9", "teacher T=11"]
    speedups = [r["speedup"] for r in data["rows"]]
    assert speedups == sorted(speedups, reverse=True) and speedups[0] == 50 / 9
    cells = {(c["metric"], c["n"]) for c in data["table"]}
    assert cells == {(m, 16) for m in ("rfid", "kid", "paired")}
    assert "Kendall tau" in p.stdout
