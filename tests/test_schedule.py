"""Schedule files: constructors, step types, round trip, validation."""

from __future__ import annotations

import json
import random

import pytest

from flexopt import Schedule
from flexopt.errors import FlexoptError
from flexopt.space.segment import SearchSpace
from flexopt.space.steps import Candidate, Segment


def test_full_schedule_is_plain_teacher():
    s = Schedule.full(100)
    assert (s.n_segments, s.segment_length, s.grid_length, s.nfe) == (100, 1, 100, 100)
    assert s.step_string() == "|".join(["F"] * 100)


def test_uniform_schedule_is_deepcache():
    s = Schedule.uniform(100, interval=5, branch=3, sampler="plms")
    assert (s.n_segments, s.segment_length, s.nfe) == (20, 5, 100)
    assert "".join(s.step_types()) == "FPPPP" * 20
    assert s.slot_branches()[:6] == [None, 3, 3, 3, 3, None]


def test_uniform_interval_must_divide():
    with pytest.raises(
        FlexoptError, match="interval 3 does not divide t_ref 100; allowed: 1,2,4,5"
    ):
        Schedule.uniform(100, interval=3, branch=1)


def test_round_trip(tmp_path):
    sp = SearchSpace((19, 20, 21), (1, 2, 3), (1, 2, 3))
    rng = random.Random(3)
    for i in range(20):
        c = sp.sample(rng)
        s = Schedule.from_candidate(c, sp, sampler="ddim", rfid=1.5)
        path = s.save(tmp_path / f"s{i}.json")
        back = Schedule.load(path)
        assert back == s and back.candidate == c and back.meta == {"rfid": 1.5}
        assert back.step_types() == c.step_types(3)


def test_file_format_matches_spec(tmp_path):
    path = Schedule.uniform(100, 5, 3).save(tmp_path / "s.json")
    data = json.loads(path.read_text())
    assert data["format"] == "flexopt.schedule/1"
    assert data["sampler"] == "ddim" and data["t_ref"] == 100 and data["segment_length"] == 5
    assert data["segments"][0] == {"branch": 3, "interval": 5}


def _write(tmp_path, data):
    p = tmp_path / "bad.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


GOOD = {
    "format": "flexopt.schedule/1",
    "sampler": "ddim",
    "t_ref": 10,
    "segment_length": 2,
    "segments": [{"branch": 1, "interval": 2}],
}


@pytest.mark.parametrize(
    "data, match",
    [
        (GOOD | {"format": "flexopt.schedule/0"}, "format 'flexopt.schedule/0' is not supported"),
        (GOOD | {"sampler": "euler"}, "sampler 'euler' is not supported; allowed: ddim, plms"),
        (
            GOOD | {"segments": [{"branch": 1, "interval": 3}]},
            "interval 3 exceeds the segment length 2; allowed: 1..2",
        ),
        (GOOD | {"segments": [{"branch": 0, "interval": 1}]}, "segment 0 branch 0 is invalid"),
        (GOOD | {"segments": [{"branch": 1, "interval": 0}]}, "segment 0 interval 0 is invalid"),
        (GOOD | {"segments": []}, "no segments"),
        (GOOD | {"t_ref": "100"}, "t_ref '100' is invalid"),
        (GOOD | {"extra": 1}, "unknown key"),
        ({k: v for k, v in GOOD.items() if k != "t_ref"}, "missing key 't_ref'"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_schedule_files(tmp_path, data, match):
    with pytest.raises(FlexoptError, match=match):
        Schedule.load(_write(tmp_path, data))


def test_missing_file(tmp_path):
    with pytest.raises(FlexoptError, match="does not exist"):
        Schedule.load(tmp_path / "nope.json")


def test_from_candidate_checks_space():
    sp = SearchSpace((2,), (1,), (1, 2))
    with pytest.raises(FlexoptError, match="branch 3 is not a choice"):
        Schedule.from_candidate(Candidate((Segment(3, 1), Segment(1, 1))), sp)
