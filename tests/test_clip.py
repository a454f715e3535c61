"""CLIP score (issue 29): the metric against transformers' own forward pass, `flexopt clip-score`,
the `--clip-guard` constraint (violators are infeasible: never parents, never the best),
validate's CLIP column, the report's guard, prompt files, and one line for a CLIP id offline."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
import tiny
import torch
from click.testing import CliRunner
from PIL import Image

from flexopt.cli import main
from flexopt.errors import FlexoptError
from flexopt.metrics.clip import DEFAULT_CLIP_MODEL, ClipScorer, clip_scores
from flexopt.run.budget import Budget
from flexopt.search.config import EvolutionConfig
from flexopt.search.objective import Guard, Objective, feasibility
from flexopt.search.study import SearchSettings, feasible_trials, make_sampler
from flexopt.space.schedule import Schedule
from flexopt.space.segment import SearchSpace

pytest.importorskip("transformers")
optuna.logging.set_verbosity(optuna.logging.WARNING)
CAPTIONS = Path(__file__).resolve().parent.parent / "studies" / "prompts" / "captions-sample.jsonl"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(tiny.clip_model(tmp_path_factory.mktemp("clip") / "clip"))


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd")
    pipe = tiny.sd_pipeline(d, scheduler=tiny.ddim_scheduler(**tiny.SD_SCHEDULE))
    return str(tiny.save(pipe, d / "pipe"))


def captions() -> list[str]:
    return [json.loads(line)["caption"] for line in CAPTIONS.read_text().splitlines()]


def reference_clip(clip_dir: str, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
    """The CLIP score the independent way: CLIPModel's own forward pass (its normalised
    image_embeds / text_embeds), not flexopt's get_*_features path."""
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(clip_dir).eval()
    proc = CLIPProcessor.from_pretrained(clip_dir)
    inputs = proc(text=prompts, images=images, return_tensors="pt", padding=True,
                  truncation=True, max_length=77)
    with torch.no_grad():
        out = model(**inputs)
    return np.maximum(100.0 * (out.image_embeds * out.text_embeds).sum(-1).numpy(), 0.0)


# ------------------------------------------------------------------------------------ metric
def test_clip_score_equals_transformers_forward(clip_dir):
    rng = np.random.default_rng(0)
    images = rng.random((7, 16, 16, 3), dtype=np.float32)
    prompts = ["a cat", "a dog on a log", "x", "a cat", "word " * 120, "", "two birds"]
    ours = ClipScorer.load(clip_dir, batch_size=3).scores(images, prompts)
    pil = [Image.fromarray(np.round(i * 255).astype(np.uint8)) for i in images]
    np.testing.assert_allclose(ours, reference_clip(clip_dir, pil, prompts), atol=1e-5)


def test_clip_scores_are_100_cosine_clipped_at_0():
    from scipy.spatial.distance import cosine

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 12)), rng.normal(size=(50, 12))
    expected = [max(100 * (1 - cosine(x, y)), 0.0) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(clip_scores(a, b), expected, atol=1e-9)
    assert (clip_scores(a, b) == 0).any() and (clip_scores(a, a) == pytest.approx(100.0))
    with pytest.raises(FlexoptError, match="same N×d shape"):
        clip_scores(a, b[:3])


def test_real_clip_id_offline_is_one_line(monkeypatch, sd_dir, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FlexoptError) as err:
        ClipScorer.load(DEFAULT_CLIP_MODEL)
    assert str(err.value).startswith(f"CLIP model {DEFAULT_CLIP_MODEL!r} cannot be loaded: it is "
                                     "not in the local Hugging Face cache and HF_HUB_OFFLINE")
    assert "--clip-model DIR" in str(err.value)
    Schedule.full(4).save(tmp_path / "s.json")
    r = run("clip-score", sd_dir, "--schedule", tmp_path / "s.json", "--num-images", 2,
            "--prompt", "a cat", "--device", "cpu", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 2
    errors = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and DEFAULT_CLIP_MODEL in errors[0] and "--clip-model" in errors[0]
    assert "Traceback" not in r.output


def test_clip_needs_a_text_pipeline_and_prompts(sd_dir, clip_dir, tmp_path):
    ddim = tiny.save(tiny.ddim_pipeline(), tmp_path / "ddim")
    Schedule.full(4).save(tmp_path / "s.json")
    r = run("clip-score", ddim, "--schedule", tmp_path / "s.json", "--num-images", 2,
            "--clip-model", clip_dir, "--device", "cpu")
    assert r.exit_code == 2 and "needs a text-to-image pipeline" in r.output
    r = run("clip-score", sd_dir, "--schedule", tmp_path / "s.json", "--num-images", 2,
            "--clip-model", clip_dir, "--device", "cpu")
    assert r.exit_code == 2 and "give --prompt-file" in r.output
    r = run("clip-score", sd_dir, "--schedule", tmp_path / "s.json", "--num-images", 2,
            "--clip-model", tmp_path / "nowhere", "--prompt", "a", "--device", "cpu")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_clip_score_cli_equals_an_independent_computation(sd_dir, clip_dir, tmp_path,
                                                          inception_weights):
    schedule = Schedule.uniform(6, 3, 2)
    schedule.save(tmp_path / "s.json")
    Schedule.full(6).save(tmp_path / "teacher.json")
    common = ("--num-images", 5, "--seed", 7, "--prompt-file", CAPTIONS, "--device", "cpu")
    r = run("clip-score", sd_dir, "--schedule", tmp_path / "s.json", "--clip-model", clip_dir,
            "--batch-size", 2, "--cache-dir", tmp_path / "cache", "--inception-weights",
            inception_weights, *common)
    assert r.exit_code == 0, r.output
    got = {k: float(v) for k, v in re.findall(r"^(clip|teacher clip): ([-0-9.]+)", r.stdout,
                                             re.M)}
    order = list(range(len(captions())))
    random.Random(7).shuffle(order)
    prompts = [captions()[order[i]] for i in range(5)]  # 5 distinct prompts, drawn by the seed
    assert got["clip"] > 0 and got["teacher clip"] > 0  # not all clipped to 0
    for name, key in (("s.json", "clip"), ("teacher.json", "teacher clip")):
        out = tmp_path / name.removesuffix(".json")
        g = run("generate", sd_dir, "--schedule", tmp_path / name, "--out", out, *common)
        assert g.exit_code == 0, g.output
        assert (out / "prompts.txt").read_text().splitlines() == prompts
        pngs = [Image.open(out / f"{i:05d}.png").convert("RGB") for i in range(5)]
        assert got[key] == pytest.approx(reference_clip(clip_dir, pngs, prompts).mean(),
                                         abs=1e-4)  # printed to 4 decimals
    # again: the teacher's CLIP scores come from the cache, not a second teacher pass
    r2 = run("clip-score", sd_dir, "--schedule", tmp_path / "s.json", "--clip-model", clip_dir,
             "--cache-dir", tmp_path / "cache", "--inception-weights", inception_weights, *common)
    assert r2.stdout.splitlines()[:2] == r.stdout.splitlines()[:2]
    assert len(list((tmp_path / "cache" / "clip").glob("*.npz"))) == 1


# -------------------------------------------------------------------------------- the guard
class GuardedEvaluator:
    """A stand-in model: full steps cost 1, partial 0.1·branch; its score is a pseudo-random
    number per schedule, its CLIP score the NFE (the teacher's: t_ref)."""

    full_macs = 1.0

    def __init__(self) -> None:
        self.last_scores: dict[str, float] = {}

    def avg_macs(self, s: Schedule) -> float:
        return sum(1 + (g.interval - 1) * 0.1 * g.branch for g in s.segments) / s.t_ref

    def score(self, s: Schedule) -> float:
        self.last_scores = {"clip_score": float(s.nfe)}
        return random.Random(s.step_string()).random()

    def teacher_scores(self) -> dict[str, float]:
        return {"clip_score": 20.0}


def test_guard_violators_are_infeasible_and_never_parents(tmp_path):
    space = SearchSpace((4, 5, 6), (1, 2, 3), (1, 2, 3), t_ref=20)
    ev = GuardedEvaluator()
    limit = Budget.parse("0.3").max_avg_macs(ev.full_macs)
    guard = Guard("clip_score", 11.0)  # CLIP (= NFE) at least 9
    sampler = make_sampler("evo", space, feasibility(space, "ddim", ev, limit),
                           EvolutionConfig(population=6, n_p=4, n_c=3, n_u=30), 0)
    study = optuna.create_study(sampler=sampler, storage=f"sqlite:///{tmp_path / 's.db'}")
    objective = Objective(space, ev, "ddim", limit, guards=(guard,))
    study.optimize(objective, n_trials=60)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    bad = {t.number for t in done if t.user_attrs["clip_score"] < 9}
    good = [t for t in done if t.number not in bad]
    assert bad and good  # the check below is not vacuous
    for t in done:
        assert t.user_attrs["clip_score_floor"] == 9.0
        assert (t.constraints["clip_score"] > 0) == (t.number in bad)
        named = [t.constraints["avg_macs"], t.constraints["clip_score"]]
        assert t.system_attrs["constraints"] == named  # the list the dashboard reads
    parents = {t.user_attrs["parent"] for t in study.trials if "parent" in t.user_attrs}
    assert parents and not parents & bad
    # violators would have been parents on their scores alone: some beat the best parent
    assert min(study.trials[n].values[0] for n in bad) < max(
        study.trials[p].values[0] for p in parents)
    assert feasible_trials(study) and not {t.number for t in feasible_trials(study)} & bad


def test_a_duplicate_keeps_its_original_guard(tmp_path):
    space = SearchSpace((4,), (1,), (1, 2), t_ref=8)
    ev = GuardedEvaluator()
    ev.teacher_scores = lambda: {"clip_score": 8.0}
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    objective = Objective(space, ev, "ddim", None, guards=(Guard("clip_score", 1.0),))
    cand = space.to_params(space.lightest())
    for _ in range(2):
        study.enqueue_trial(cand)
    study.optimize(objective, n_trials=2)
    first, dup = study.trials
    assert dup.user_attrs["duplicate_of"] == first.number
    assert dup.constraints == first.constraints and first.constraints["clip_score"] > 0


def test_settings_record_the_guard_only_when_set():
    space = SearchSpace((4,), (1,), (1,), t_ref=4)
    plain = SearchSettings(space).identity()
    assert "clip_guard" not in plain and "clip_model" not in plain  # old studies still resume
    guarded = SearchSettings(space, clip_model="m", clip_guard=0.5).identity()
    assert guarded["clip_guard"] == 0.5 and guarded["clip_model"] == "m"


@pytest.fixture(scope="module")
def guarded_study(sd_dir, clip_dir, tmp_path_factory, inception_weights):
    """A --clip-guard search on the tiny SD pipeline, from a study config."""
    d = tmp_path_factory.mktemp("guarded")
    config = d / "study.toml"
    config.write_text(f"""
model = {json.dumps(sd_dir)}
t_ref = 6
budget = "1.3x"
[space]
segments = [2, 3]
branches = [1, 2]
intervals = [1, 2, 3]
[rfid]
num_images = 4
prompt_file = {json.dumps(str(CAPTIONS))}
clip_model = {json.dumps(clip_dir)}
clip_guard = 0.0
[evolution]
population = 4
n_p = 3
n_c = 2
[study]
name = "guarded"
storage = "sqlite:///{d / 'study.db'}"
""")
    r = run("search", config, "--n-trials", 14, "--baselines", "best", "--device", "cpu",
            "--batch-size", 4, "--cache-dir", d / "cache", "--inception-weights",
            inception_weights, "--no-artifacts", "--search-seed", 1)
    assert r.exit_code == 0, r.output
    return d, r.output


def test_clip_guard_search_end_to_end(guarded_study):
    d, output = guarded_study
    assert re.search(r"teacher clip_score [0-9.]+: trials under [0-9.]+ \(the teacher's minus 0\)"
                     " are infeasible", output)
    study = optuna.load_study(study_name="guarded", storage=f"sqlite:///{d / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    floor = done[0].user_attrs["clip_score_floor"]
    bad = {t.number for t in done if t.user_attrs["clip_score"] < floor}
    assert bad and len(bad) < len(done)
    assert all((t.constraints["clip_score"] > 0) == (t.number in bad) for t in done)
    assert all("avg_macs" in t.constraints for t in done)
    parents = {t.user_attrs["parent"] for t in study.trials if "parent" in t.user_attrs}
    assert not parents & bad
    best = feasible_trials(study)[0]
    assert best.number not in bad and best.user_attrs["clip_score"] >= floor
    r = run("export", "--storage", f"sqlite:///{d / 'study.db'}", "--best", "--out",
            d / "best.json")
    assert r.exit_code == 0 and f"wrote trial {best.number} " in r.output


def test_validate_shows_the_clip_column(guarded_study, inception_weights):
    d, _ = guarded_study
    r = run("validate", "--storage", f"sqlite:///{d / 'study.db'}", "--num-images", 3,
            "--prompt-file", CAPTIONS, "--device", "cpu", "--cache-dir", d / "cache",
            "--inception-weights", inception_weights, "--json", d / "v.json")
    assert r.exit_code == 0, r.output
    head = next(line for line in r.output.splitlines() if "rFID" in line and "schedule" in line)
    assert "CLIP" in head.split()
    data = json.loads((d / "v.json").read_text())
    assert data["clip_model"] is not None  # the study's CLIP model, by default
    rows = {row["label"]: row for row in data["rows"]}
    assert all(isinstance(row["clip"], float) for row in rows.values())
    assert "CLIP" in data["verdict"]
    r = run("validate", "--storage", f"sqlite:///{d / 'study.db'}", "--num-images", 3,
            "--prompt-file", CAPTIONS, "--device", "cpu", "--cache-dir", d / "cache",
            "--inception-weights", inception_weights, "--clip-model", "none")
    assert r.exit_code == 0 and "CLIP" not in r.output


def test_report_shows_the_guard(guarded_study):
    from flexopt.report.data import trial_row

    d, _ = guarded_study
    storage = f"sqlite:///{d / 'study.db'}"
    r = run("report", "--storage", storage, "--out", d / "report.html")
    assert r.exit_code == 0, r.output
    page = (d / "report.html").read_text()
    assert "CLIP guard" in page and "under the CLIP guard" in page
    study = optuna.load_study(study_name="guarded", storage=storage)
    rows = [trial_row(study, t) for t in study.trials if t.state.name == "COMPLETE"]
    assert any(r.guard_failed and not r.feasible for r in rows)
    assert all(r.clip_score is not None for r in rows)
    r = run("trials", "--storage", storage, "--csv", d / "t.csv")
    assert "clip_score" in (d / "t.csv").read_text().splitlines()[0]
