"""rFID end to end: teacher cache (hit, miss, corruption), `flexopt teacher` and `flexopt rfid`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import tiny
from click.testing import CliRunner

from flexopt.cli import main
from flexopt.space.schedule import Schedule
from flexopt.space.steps import Segment

T_REF = 20
# rFID from few images is noisy (Fréchet distance of 48 samples in 2048-d); 48 keeps the ordering
# of the interval test clear on this random-weight model (margins > 10%), 8 suffices elsewhere.
N_ORDER = 48
N = 8


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    return str(tiny.save(tiny.ddim_pipeline(tiny.unet2d(sample_size=16, seed=0)), d / "ddim"))


def run(*args):
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r


def common(cache, weights, seed=0, n=N):
    return ["--num-images", n, "--seed", seed, "--batch-size", 24, "--device", "cpu",
            "--cache-dir", cache, "--inception-weights", weights]


def rfid_of(model_dir, tmp_path, schedule, cache, weights, metric="rfid", n=N):
    path = schedule.save(tmp_path / f"s{abs(hash(schedule.segments))}.json")
    r = run("rfid", model_dir, "--schedule", path, "--metric", metric,
            *common(cache, weights, n=n))
    assert r.exit_code == 0, r.output
    return float(re.search(rf"^{metric}: (\S+)$", r.output, re.M).group(1)), r.output


def check_bootstrap(output: str, metric: str, first, second, n: int = 10,
                    resamples: int = 6) -> dict[str, float]:
    """The values `flexopt rfid|fid --bootstrap` printed for two schedule files (by path
    without .json); checks the difference line is second - first, with a positive SE."""
    values = {m[0]: float(m[1]) for m in
              re.findall(rf"(/\S+)\.json: {metric}: (\S+)$", output, re.M)}
    a, b = str(first).removesuffix(".json"), str(second).removesuffix(".json")
    assert set(values) == {a, b}
    assert f"paired bootstrap, {resamples} resamples of the {n} images" in output
    diff = re.search(rf"{metric} \S+{re.escape(Path(b).name)}\.json - {metric} "
                     rf"\S+{re.escape(Path(a).name)}\.json: (\S+) ± (\S+) \(SE\), "
                     r"95% interval \[(\S+), (\S+)\]", output)
    value, se, low, high = map(float, diff.groups())
    assert value == pytest.approx(values[b] - values[a], abs=2e-4)
    assert se > 0 and low <= high
    return values


def test_teacher_scores_zero_and_coarser_caching_scores_worse(model_dir, tmp_path,
                                                              inception_weights):
    cache = tmp_path / "cache"
    r = run("teacher", model_dir, "--steps", T_REF, *common(cache, inception_weights, n=N_ORDER))
    assert r.exit_code == 0, r.output
    assert "teacher cache built" in r.output
    zero, out = rfid_of(model_dir, tmp_path, Schedule.full(T_REF), cache, inception_weights,
                        n=N_ORDER)
    assert "teacher cache reused" in out
    assert abs(zero) < 1e-6
    scores = [rfid_of(model_dir, tmp_path, Schedule.uniform(T_REF, k, 1), cache,
                      inception_weights, n=N_ORDER)[0] for k in (2, 10)]
    assert 0 < scores[0] < scores[1], scores


def test_kid_metric(model_dir, tmp_path, inception_weights):
    cache = tmp_path / "cache"
    value, out = rfid_of(model_dir, tmp_path, Schedule.uniform(T_REF, 10, 1), cache,
                         inception_weights, metric="kid")
    assert value > 0 and "kid:" in out


def test_cache_hit_miss_and_corruption(model_dir, tmp_path, inception_weights):
    cache = tmp_path / "cache"
    args = ["teacher", model_dir, "--steps", T_REF, *common(cache, inception_weights)]
    assert "teacher cache built" in run(*args).output
    assert "teacher cache reused" in run(*args).output
    (npz,) = (cache / "teacher").glob("*.npz")
    # Another seed is another key: a second entry, the first one untouched.
    other = run("teacher", model_dir, "--steps", T_REF, *common(cache, inception_weights, seed=1))
    assert "teacher cache built" in other.output
    assert len(list((cache / "teacher").glob("*.npz"))) == 2
    # Flip bytes in the statistics: the checksum catches it, the entry is rebuilt.
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    r = run(*args)
    assert "checksum mismatch" in r.output and "teacher cache rebuilt" in r.output
    assert "teacher cache reused" in run(*args).output
    # A manifest that is not JSON, then one naming another key.
    manifest = npz.with_suffix(".json")
    manifest.write_text("{oops")
    assert "manifest is not valid JSON" in run(*args).output
    meta = json.loads(manifest.read_text())
    meta["key"]["seed"] = 99
    manifest.write_text(json.dumps(meta))
    r = run(*args)
    assert "for another key" in r.output and "teacher cache rebuilt" in r.output


def test_bad_inputs(model_dir, tmp_path, inception_weights):
    r = run("rfid", tmp_path / "missing", "--schedule", tmp_path / "s.json",
            *common(tmp_path, inception_weights))
    assert r.exit_code == 2 and "does not exist" in r.output
    s = Schedule.uniform(T_REF, 5, 13).save(tmp_path / "deep.json")
    r = run("rfid", model_dir, "--schedule", s, *common(tmp_path, inception_weights))
    assert r.exit_code == 2 and "branch 13 is beyond" in r.output
    r = run("rfid", model_dir, "--schedule", s, "--metric", "fid",
            *common(tmp_path, inception_weights))
    assert r.exit_code == 2 and "'fid' is not one of 'rfid', 'kid', 'paired'" in r.output


def test_real_fid_against_an_image_folder(model_dir, tmp_path, inception_weights):
    import numpy as np

    folder = tiny.image_folder(tmp_path / "real", 10)
    s = Schedule.full(T_REF).save(tmp_path / "teacher.json")
    args = ["fid", model_dir, "--schedule", s, "--reference", folder,
            *common(tmp_path / "cache", inception_weights)]
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert "reference statistics built: " in r.output and "10 images" in r.output
    value = float(re.search(r"\bfid: (\S+)$", r.output, re.M).group(1))
    assert np.isfinite(value) and value > 0
    r = run(*args)
    assert "reference statistics reused" in r.output
    assert float(re.search(r"\bfid: (\S+)$", r.output, re.M).group(1)) == value
    r = run("fid", model_dir, "--schedule", s, "--reference", tmp_path / "none",
            *common(tmp_path / "cache", inception_weights))
    assert r.exit_code == 2 and "neither a known data set" in r.output


def test_rfid_of_several_schedules_with_a_paired_bootstrap(model_dir, tmp_path,
                                                         inception_weights):
    """Several schedules of one teacher on the same seeds: each rFID is that schedule's alone,
    the bootstrap's difference is the difference of the two, and the features are cached by
    what a schedule runs (its `meta` aside: an exported file hits its trial's entry)."""
    cache = tmp_path / "cache"
    fewer = Schedule("ddim", T_REF, 1, (Segment(1, 1),) * (T_REF // 2)).save(
        tmp_path / "fewer.json")
    cached = Schedule.uniform(T_REF, 2, 1).save(tmp_path / "cached.json")
    args = ["rfid", model_dir, "--schedule", fewer, "--schedule", cached,
            *common(cache, inception_weights, n=10)]
    r = run(*args, "--bootstrap", 6)
    assert r.exit_code == 0, r.output
    values = check_bootstrap(r.output, "rfid", fewer, cached)
    alone = run("rfid", model_dir, "--schedule", cached, *common(cache, inception_weights, n=10))
    assert alone.exit_code == 0, alone.output
    one = float(re.search(r"^rfid: (\S+)$", alone.output, re.M).group(1))
    assert one == pytest.approx(values[str(tmp_path / "cached")], abs=1e-4)
    entries = sorted((cache / "features").glob("*.npz"))
    assert len(entries) == 2
    # the same steps with other meta: the cached features, no new entry
    data = json.loads((tmp_path / "cached.json").read_text())
    data["meta"] = {"study": "elsewhere", "trial": 7}
    (tmp_path / "exported.json").write_text(json.dumps(data))
    again = run("rfid", model_dir, "--schedule", fewer, "--schedule", tmp_path / "exported.json",
                *common(cache, inception_weights, n=10))
    assert again.exit_code == 0, again.output
    assert f"exported.json: rfid: {values[str(tmp_path / 'cached')]:.4f}" in again.output
    assert sorted((cache / "features").glob("*.npz")) == entries
    # user mistakes: one line each
    r = run(*args, "--bootstrap", 1)
    assert r.exit_code == 2 and "at least 2" in r.output
    r = run(*args, "--bootstrap", 5, "--metric", "kid")
    assert r.exit_code == 2 and "resamples rFID, not kid" in r.output
    other = Schedule.full(T_REF + 2).save(tmp_path / "other.json")
    r = run("rfid", model_dir, "--schedule", fewer, "--schedule", other,
            *common(cache, inception_weights, n=10))
    assert r.exit_code == 2 and f"ddim {T_REF + 2} steps" in r.output
    assert "schedules of one teacher" in r.output


def test_fid_of_several_schedules_on_the_same_seeds_with_a_paired_bootstrap(
        model_dir, tmp_path, inception_weights):
    real = tiny.image_folder(tmp_path / "real", 12)
    full = Schedule.full(T_REF).save(tmp_path / "full.json")
    fewer = Schedule.full(T_REF // 2).save(tmp_path / "fewer.json")
    args = ["fid", model_dir, "--schedule", full, "--schedule", fewer, "--reference", real,
            *common(tmp_path / "cache", inception_weights, seed=3, n=10)]
    r = run(*args, "--bootstrap", 6)
    assert r.exit_code == 0, r.output
    fids = check_bootstrap(r.output, "fid", full, fewer)
    # each FID is that schedule's alone, on the same seeds, against the same real images
    alone = run("fid", model_dir, "--schedule", fewer, "--reference", real,
                *common(tmp_path / "cache", inception_weights, seed=3, n=10))
    value = float(re.search(r"\bfid: (\S+)$", alone.output, re.M).group(1))
    assert value == pytest.approx(fids[str(tmp_path / "fewer")], abs=1e-4)
    assert re.search(r"^10 images from seed 3; NFE 10, avg MACs \S+$", alone.output, re.M)
    assert "bootstrap" not in alone.output
    r = run(*args, "--bootstrap", 1)
    assert r.exit_code == 2 and "--bootstrap" in r.output and "at least 2" in r.output
