"""Options shared by the sub-commands: a missing required one is a usage error, not a traceback
(click >= 8.3 counts an explicit `default=None` as a value, which silently disabled `required`)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from flexopt.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "flexopt:fashion-mnist", "--schedule", "s.json", "--out", "o"],
        ["teacher", "flexopt:fashion-mnist"],
        ["rfid", "flexopt:fashion-mnist", "--schedule", "s.json"],
        ["fid", "flexopt:fashion-mnist", "--schedule", "s.json"],
    ],
)
def test_missing_num_images_is_a_usage_error(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "Missing option '--num-images'" in r.output and "Traceback" not in r.output


def test_search_num_images_is_optional():
    # the config's [rfid] num_images, else 1000, as the help says
    opt = next(p for p in main.commands["search"].params if p.name == "num_images")
    assert not opt.required and "else 1000" in opt.help
