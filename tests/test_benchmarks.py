"""The metric-fidelity benchmark runs end to end on a tiny model (its numbers are not checked
here: speed and ranking quality belong to the benchmark's own output)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

ROOT = Path(__file__).resolve().parent.parent


def test_metric_fidelity_script_on_a_tiny_model(tmp_path, inception_weights):
    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), tmp_path / "m")
    out = tmp_path / "mf.json"
    args = [sys.executable, str(ROOT / "benchmarks" / "metric_fidelity.py"), "--model",
            str(model), "--reference-images", "4", "--max-count", "16", "--sampled", "1",
            "--schedules", "2", "--batch-size", "16", "--cache-dir", str(tmp_path / "cache"),
            "--inception-weights", inception_weights, "--out", str(out)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    names = [r["schedule"] for r in data["rows"]]
    assert len(set(names)) == 2 and data["complete"] and data["schedules"] == 2
    for r in data["rows"]:  # a fewer-step teacher's speedup is t_ref / T exactly
        if r["schedule"].startswith("teacher T="):
            assert r["speedup"] == pytest.approx(50 / int(r["schedule"].split("=")[1]))
        assert 1.5 <= r["speedup"] <= 6 and len(r["reference_halves"]) == 2
    cells = {(c["metric"], c["n"]) for c in data["table"]}
    assert cells == {(m, 16) for m in ("rfid", "kid", "paired")}
    assert "Kendall tau" in p.stdout
    # Rows measured by another run (a parallel --reverse one) are merged, not measured again.
    merged = tmp_path / "merged.json"
    q = subprocess.run([*args[:-2], "--rows-from", str(out), "--out", str(merged)],
                       capture_output=True, text=True, timeout=900)
    assert q.returncode == 0, q.stdout + q.stderr
    assert "2 schedules (2 measured before)" in q.stdout and "Kendall tau" in q.stdout
    assert json.loads(merged.read_text())["rows"] == data["rows"]


def test_search_benchmark_on_a_tiny_model(tmp_path, inception_weights, monkeypatch):
    """Benchmark (2): the same candidates with and without prefix reuse, same rFID, fewer calls."""
    import importlib.util

    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=8, blocks=2, channels=8)),
                      tmp_path / "m")
    config = tmp_path / "study.toml"
    config.write_text('model = "unused"\nsampler = "plms"\nt_ref = 12\nbudget = "1.5x"\n'
                      "[space]\nsegments = [4]\nbranches = [1, 2, 3]\nintervals = [1, 2, 3]\n"
                      "[rfid]\nnum_images = 2\nseed = 0\n"
                      "[evolution]\npopulation = 3\nn_p = 2\nn_c = 2\nn_u = 10\nn_m = 1\n")
    spec = importlib.util.spec_from_file_location("bench_search",
                                                  ROOT / "benchmarks" / "bench_search.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_search", bench)  # its dataclass needs the module
    spec.loader.exec_module(bench)
    out = tmp_path / "bs.json"
    data = bench.main(["--model", str(model), "--config", str(config), "--candidates", "8",
                       "--batch-size", "2", "--cache-dir", str(tmp_path / "cache"),
                       "--inception-weights", inception_weights, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert data["identical_rfid"] and len(data["candidates"]) == 8
    reuse, scratch = data["rows"]
    assert (reuse["mode"], scratch["mode"]) == ("prefix reuse", "no reuse")
    assert scratch["unet_calls_skipped"] == 0 < reuse["unet_calls_skipped"]
    assert reuse["unet_calls"] + reuse["unet_calls_skipped"] == scratch["unet_calls"]
    assert set(reuse["seconds_per_candidate"]) == {"generate", "features", "metric"}
    assert {"machine", "date", "args"} <= set(data) and data["args"]["candidates"] == 8


def test_executor_benchmark_on_tiny_configs(tmp_path):
    """Benchmark (1) runs both configs side by side with DeepCache's helper; flexopt's outputs
    equal the helper's and the stock loop's (the benchmark compares like with like)."""
    pytest.importorskip("DeepCache")
    out = tmp_path / "be.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_executor.py"), "--tiny", "--steps", "4",
         "--interval", "2", "--branches", "1,3", "--batch-size", "2", "--sd-batch-size", "1",
         "--repeats", "1", "--warmup", "0", "--device", "cpu", "--ops", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert {"machine", "date", "args", "rows"} <= set(data)
    cases = [(r["config"], r["case"]) for r in data["rows"]]
    assert cases == [(c, k) for c in ("ddpm-cifar10", "sd15") for k in (
        "stock", "flexopt full", "helper b=1", "flexopt b=1", "helper b=3", "flexopt b=3")]
    for r in data["rows"]:
        assert r.get("max_abs_diff_vs_helper", 0) <= 1e-5
        assert r.get("max_abs_diff_vs_stock", 0) == 0
        assert r["macs_speedup"] >= 1 and r["seconds"] > 0
        if r["case"].startswith("flexopt"):  # --ops: no more arithmetic than its counterpart
            assert r["heavy_no_more"], r["heavy_ops"]
            assert any("conv" in op for op in r["heavy_ops"])
    assert "vs helper" in p.stdout and "runs no heavy op more often: True" in p.stdout


def test_executor_benchmark_runs_compared_pairs_back_to_back():
    """Each round runs every case once, each compared pair adjacent, in an order that varies by
    round in both the pairs and which side of a pair goes first."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_executor",
                                                  ROOT / "benchmarks" / "bench_executor.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cases = ["stock", "flexopt full", "helper b=1", "flexopt b=1", "helper b=2", "flexopt b=2"]
    orders = [bench.round_order(cases, r, shuffle=True) for r in range(12)]
    for order in orders:
        assert sorted(order) == sorted(cases)
        pairs = {frozenset(order[i:i + 2]) for i in range(0, len(order), 2)}
        assert pairs == {frozenset(cases[i:i + 2]) for i in range(0, len(cases), 2)}
    assert len({tuple(o) for o in orders}) > 4
    assert {o.index("flexopt b=1") - o.index("helper b=1") for o in orders} == {-1, 1}
    assert bench.round_order(cases, 3, shuffle=False) == cases


def test_gpu_suite_tiny_mode(tmp_path, inception_weights):
    """The GPU suite's plumbing on CPU at toy sizes: every part runs (host syncs only on CUDA),
    and a missing benchmark (2) script is reported, not fatal."""
    pytest.importorskip("DeepCache")
    out = tmp_path / "suite.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--tiny", "--device", "cpu",
         "--no-sd",  # the SD config's executor rows: test_executor_benchmark_on_tiny_configs
         "--inception-weights", inception_weights, "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert {"machine", "date", "args", "floor", "executor", "features", "search"} <= set(data)
    assert data["floor"]["image_steps_per_s"] > 0
    assert {r["config"] for r in data["executor"]["rows"]} == {"ddpm-cifar10"}
    assert data["host_syncs"] is None  # CUDA only
    f = data["features"]
    assert f["float32"]["rfid"] > 0 and "rfid_diff" in f and f["max_abs_feature_diff"] > 0
    if (ROOT / "benchmarks" / "bench_search.py").exists():
        assert data["search"]["returncode"] == 0
    else:
        assert "MISSING" in p.stdout and "missing" in data["search"]
    assert "total" in p.stdout


def test_ddim_convergence_script_on_a_tiny_model(tmp_path):
    """Both clip settings measured on the same noises; unclipped DDIM converges as steps grow."""
    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=8, seed=0)), tmp_path / "m")
    out = tmp_path / "conv.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ddim_convergence.py"),
                        "--model", str(model), "--steps", "5,10,40", "--clip", "on,off",
                        "--num-images", "3", "--batch-size", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["clip_sample"], r["steps"]) for r in rows] == [
        (c, k) for c in (True, False) for k in (5, 10, 40)]
    off = {r["steps"]: r["distance_to_finest"] for r in rows if not r["clip_sample"]}
    assert off[40] == 0 and 0 < off[10] < off[5]
    assert "| false (off) | 10 |" in p.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ddim_convergence.py"),
                          "--model", str(model), "--clip", "maybe"], capture_output=True, text=True)
    assert bad.returncode == 2 and "'maybe'; allowed: config, on, off" in bad.stderr


def _search_benchmark(script: str, tmp_path, weights: str, *args: str):
    """Run `benchmarks/<script>` on a tiny DDIM model: (the finished process, its JSON)."""
    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), tmp_path / "m")
    out = tmp_path / "out.json"
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--model", str(model), *args,
         "--cache-dir", str(tmp_path / "cache"), "--inception-weights", weights,
         "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    return p, json.loads(out.read_text())


def test_sampler_quality_script_on_a_tiny_model(tmp_path, inception_weights):
    p, data = _search_benchmark(
        "sampler_quality.py", tmp_path, inception_weights, "--minutes", "0.25", "--seeds", "0",
        "--variants", "evo,evo+population", "--held-out", "4", "--images", "16",
        "--batch-size", "8")
    assert [r["variant"] for r in data["rows"]] == ["evo", "evo+population"]
    # (a loaded machine may run only the baselines in the time: then there is no winner)
    assert all(len(r["held_out_rfid"]) == (r["searched"][0] > 0) for r in data["rows"])
    assert "winner held-out rFID" in p.stdout and data["best_baseline"]


def test_sampler_quality_reuses_earlier_held_out_scores(tmp_path):
    """`--held-out-from`: a schedule an earlier run scored on the same model and held-out images
    keeps that score; another model or image count is refused, not mixed in."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_sq", ROOT / "benchmarks" /
                                                  "sampler_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    win, base = {"steps": "FPN", "t": [1]}, {"steps": "FFF", "t": [2]}
    earlier = {"args": {"model": "m", "held_out": 500},
               "runs": [{"variant": "evo", "seed": 0, "winner": {"schedule": win},
                         "baselines_under_budget": {"teacher T=19": base}},
                        {"variant": "tpe", "seed": 0, "winner": None,
                         "baselines_under_budget": {}}],
               "held_out_rfid": {"evo-0": 21.5, "baseline teacher T=19": 29.9}}
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    args = argparse.Namespace(model="m", held_out=500, held_out_from=[str(path)])
    assert bench.earlier_scores(args) == {json.dumps(win, sort_keys=True): 21.5,
                                          json.dumps(base, sort_keys=True): 29.9}
    assert bench.held_out(args, {}) == {}  # nothing left to score loads nothing
    with pytest.raises(SystemExit, match="scored m on 500 images; this run: m on 250"):
        bench.earlier_scores(argparse.Namespace(model="m", held_out=250,
                                                held_out_from=[str(path)]))


def test_rung_fidelity_script_on_a_tiny_model(tmp_path, inception_weights):
    p, data = _search_benchmark(
        "rung_fidelity.py", tmp_path, inception_weights, "--candidates", "4", "--images", "8",
        "--rungs", "2,4", "--batch-size", "4")
    assert [r["rung"] for r in data["table"]] == [2, 4] and len(data["rows"]) == 4
    assert all(set(r["rfid"]) == {"2", "4", "8"} for r in data["rows"])
    assert all(-1 <= r["tau"] <= 1 for r in data["table"]) and "Kendall tau" in p.stdout
    # half random, half children of them: the parent rule's counts are over the children
    parents = [r["parent"] for r in data["rows"]]
    assert parents[:2] == [None, None] and all(p in (0, 1) for p in parents[2:])
    rows, full = data["rows"], [r["rfid"]["8"] for r in data["rows"]]
    for t in data["table"]:
        at = [r["rfid"][str(t["rung"])] for r in rows]
        stopped = [(c, p) for c, p in enumerate(parents) if p is not None and at[c] > at[p]]
        assert t["children"] == 2 and t["children_stopped"] == len(stopped)
        assert t["stopped_wrongly"] == sum(full[c] < full[p] for c, p in stopped)


def test_latency_model_script_on_a_tiny_model(tmp_path):
    """Predicted vs measured for 20+ schedules (and a schedule file), with the summary line;
    no timing assertion: only that every schedule was predicted and measured."""
    from flexopt.space.schedule import Schedule

    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=8, seed=0)), tmp_path / "m")
    Schedule.uniform(20, 4, 2).save(tmp_path / "winner.json")
    out = tmp_path / "lat.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency_model.py"),
                        "--model", str(model), "--t-ref", "20", "--batch-size", "2",
                        "--repeats", "1", "--profile-rounds", "1", "--random", "4",
                        "--schedule", str(tmp_path / "winner.json"), "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(out.read_text())
    assert len(data["rows"]) >= 20 and data["rows"][-1]["schedule"] == "winner"
    assert all(r["predicted_s"] > 0 and r["measured_s"] > 0 and r["paired_speedup"] > 0
               and r["paired_ratio"] > 0 for r in data["rows"])
    assert "median |pred/meas - 1|" in p.stdout and data["profile"]["branches"] == [1, 2, 3]


def test_latency_context_script_on_a_tiny_model(tmp_path, monkeypatch):
    """Every transition the schedules contain is timed (no timing assertion)."""
    import importlib.util

    model = tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=8, seed=0)), tmp_path / "m")
    spec = importlib.util.spec_from_file_location("latency_context",
                                                  ROOT / "benchmarks" / "latency_context.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "ctx.json"
    data = bench.main(["--model", str(model), "--steps", "10", "--batch-size", "2",
                       "--rounds", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    overall = {r["transition"]: r for r in data["rows"] if " in " not in r["transition"]}
    assert {"full <- full", "partial_1 <- full", "partial_1 <- partial_1", "full <- partial_3",
            "partial_3 <- partial_1", "partial_2 <- partial_3"} <= set(overall)
    assert all(r["n"] > 0 and r["mean_ms"] > 0 for r in data["rows"])
    with pytest.raises(SystemExit):
        bench.main(["--rounds", "1"])


def _validation(searched_rfid: float, trial: int) -> dict:
    """A `flexopt validate --json` file's shape: teacher, searched, two baselines, differences."""
    def row(label, name, kind, rfid, fid, search=None):
        return {"label": label, "name": name, "kind": kind, "steps": "F", "speedup": 2.5,
                "nfe": 19, "rfid": rfid, "fid": fid, "search_value": search}
    diffs = [{"metric": m, "baseline": b, "value": v, "se": 0.1, "low": v - 0.3, "high": v + 0.3,
              "level": 0.95, "verdict": "beats" if v + 0.3 < 0 else "loses"}
             for m, b, v in (("rfid", f"trial {trial + 1} (teacher T=19)", searched_rfid - 8.0),
                             ("rfid", f"trial {trial + 2} (ddim-quad T=19)", searched_rfid - 20),
                             ("fid", f"trial {trial + 1} (teacher T=19)", 1.0),
                             ("fid", f"trial {trial + 2} (ddim-quad T=19)", -4.0))]
    return {"rows": [row("teacher", "ddim 50 steps", "teacher", 0.0, 42.6),
                     row("best searched", f"trial {trial}", "searched", searched_rfid, 44.0, 23.1),
                     row("fewer-step teacher", f"trial {trial + 1} (teacher T=19)", "baseline",
                         8.0, 43.0, 25.2),
                     row("DDIM-quadratic", f"trial {trial + 2} (ddim-quad T=19)", "baseline",
                         20.0, 48.0, 74.6)],
            "differences": diffs}


def test_validation_table_picks_the_best_baseline_by_each_metric(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_validation(7.5, 30)))
    b.write_text(json.dumps(_validation(9.0, 40)))
    out = tmp_path / "t.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "validation_table.py"),
                        f"hybrid={a}", f"segments={b}", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = json.loads(out.read_text())["rows"]
    # the best baseline by rFID and by FID is the fewer-step teacher (lowest of both)
    assert [r["rfid_difference"]["value"] for r in rows] == [-0.5, 1.0]
    assert [r["fid_difference"]["value"] for r in rows] == [1.0, 1.0]
    assert "| hybrid | trial 30 | 2.50× | 19 | 23.10 | 7.50 | 44.00 | -0.50 ([-0.80, -0.20]) " \
           "| +1.00 ([+0.70, +1.30]) | beats by rFID, loses by FID |" in p.stdout
    # the same baseline of two studies (another trial number) is one row
    assert p.stdout.count("teacher T=19 (fewer-step teacher)") == 1
    assert "| rFID-32 in the search |" in p.stdout  # the default header
    fid = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "validation_table.py"),
                          f"hybrid={a}", "--search-metric", "FID-128"],
                         capture_output=True, text=True, timeout=60)
    assert fid.returncode == 0 and "| FID-128 in the search |" in fid.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "validation_table.py"),
                          str(a)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "allowed: SPACE=VAL.json" in bad.stderr
