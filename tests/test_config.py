"""Study configs and budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexopt.errors import FlexoptError
from flexopt.run.budget import Budget, format_macs
from flexopt.search.config import StudyConfig

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.toml"))


def test_every_shipped_study_config_loads():
    assert len(STUDIES) >= 20  # Table 8 rows (19) + demo
    for path in STUDIES:
        cfg = StudyConfig.load(path)
        assert cfg.budget is not None and cfg.study_name


def test_cifar_config_is_table8_row():
    cfg = StudyConfig.load(Path("studies/ddpm-cifar10-3.0G.toml"))
    assert cfg.space.segments == (19, 20, 21)
    assert cfg.space.branches == (1, 2, 3) and cfg.space.intervals == (1, 2, 3)
    assert cfg.budget.macs == pytest.approx(3.0e9)
    assert (cfg.sampler, cfg.space.t_ref, cfg.num_images) == ("ddim", 100, 1000)
    assert (cfg.evolution.n_p, cfg.evolution.n_c, cfg.evolution.n_u) == (25, 5, 300)


@pytest.mark.parametrize(
    "text, macs, speedup",
    [
        ("3G", 3e9, None),
        ("250M", 250e6, None),
        ("6.1e9", 6.1e9, None),
        ("2.5x", None, 2.5),
        (3000000000, 3e9, None),
        (" 90 g ", 90e9, None),
    ],
)
def test_budget_parse(text, macs, speedup):
    b = Budget.parse(text)
    assert b.macs == (pytest.approx(macs) if macs else None)
    assert b.speedup == speedup


def test_budget_ceiling():
    assert Budget.parse("2x").max_avg_macs(6.1e9) == pytest.approx(3.05e9)
    assert Budget.parse("3G").max_avg_macs(6.1e9) == pytest.approx(3e9)
    assert format_macs(6.1e9) == "6.10G" and format_macs(2.5e8) == "250.00M"


@pytest.mark.parametrize("text", ["", "fast", "-3G", "3Q", "0", "1x", "0.5x"])
def test_bad_budget(text):
    with pytest.raises(FlexoptError, match="budget"):
        Budget.parse(text)


def test_bad_configs(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("budget = \n")
    with pytest.raises(FlexoptError, match="not valid TOML"):
        StudyConfig.load(p)
    p.write_text('budgett = "3G"\n[space]\nsegments=[1]\nbranches=[1]\nintervals=[1]\n')
    with pytest.raises(FlexoptError, match=r"unknown key.*budgett"):
        StudyConfig.load(p)
    p.write_text("[space]\nsegments=[2,1]\nbranches=[1]\nintervals=[1]\n")
    with pytest.raises(FlexoptError, match="N-segment choices 2,1 must be sorted"):
        StudyConfig.load(p)
    p.write_text("[space]\nsegments=[1]\nbranches=[1]\n")
    with pytest.raises(FlexoptError, match="missing key 'intervals'"):
        StudyConfig.load(p)
    p.write_text('sampler="euler"\n[space]\nsegments=[1]\nbranches=[1]\nintervals=[1]\n')
    with pytest.raises(FlexoptError, match="sampler 'euler' is not supported"):
        StudyConfig.load(p)
    with pytest.raises(FlexoptError, match="does not exist"):
        StudyConfig.load(tmp_path / "missing.toml")
