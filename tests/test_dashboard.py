"""optuna-dashboard on a flexopt study serves its metric names, user attrs and sample grids.

The dashboard's WSGI app runs in-process (wsgiref, 127.0.0.1, a free port, in a thread) and is
queried through its HTTP API like the browser front end does.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from click.testing import CliRunner
from test_report_data import build_study

from flexopt.cli import main
from flexopt.report.dashboard import dashboard_app
from flexopt.search.artifacts import grid_png


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    built = build_study(tmp_path_factory.mktemp("dashboard"), n_trials=24)
    server = make_server("127.0.0.1", 0, dashboard_app(built.storage), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield built, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.headers.get("Content-Type", ""), r.read()


def test_dashboard_serves_study_attrs_and_artifacts(served):
    built, base = served
    studies = json.loads(_get(f"{base}/api/studies")[1])["study_summaries"]
    assert [s["study_name"] for s in studies] == [built.name]
    sid = studies[0]["study_id"]
    detail = json.loads(_get(f"{base}/api/studies/{sid}")[1])
    assert detail["objective_names"] == ["rfid"]
    assert [a["filename"] for a in detail["artifacts"]] == ["teacher-samples.png"]
    kind, body = _get(f"{base}/artifacts/{sid}/{detail['artifacts'][0]['artifact_id']}")
    assert kind == "image/png" and body == grid_png(built.evaluator.teacher_images)

    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    with_grid = [t for t in complete if t["artifacts"]]
    assert len(with_grid) >= len(complete) - 2  # all but duplicates (none scored twice)
    trial = with_grid[-1]
    attrs = {a["key"] for a in trial["user_attrs"]}
    assert {"avg_macs", "nfe", "speedup", "step_types"} <= attrs
    assert trial["constraints"] == [pytest.approx(trial["constraints"][0])]
    art = trial["artifacts"][0]
    assert art["filename"] == "samples.png"
    kind, body = _get(f"{base}/artifacts/{sid}/{trial['trial_id']}/{art['artifact_id']}")
    assert kind == "image/png" and body.startswith(b"\x89PNG")
    assert body == (built.artifacts / art["artifact_id"]).read_bytes()


def test_cli_dashboard_wires_the_store(served, monkeypatch):
    built, _ = served
    seen = {}

    def fake_run_server(storage, host, port, artifact_store):
        seen.update(storage=storage, port=port, store=artifact_store)

    monkeypatch.setattr("optuna_dashboard.run_server", fake_run_server)
    with socket.socket() as probe:  # the command checks the port is free before serving
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    res = CliRunner().invoke(main, ["dashboard", "--storage", built.storage, "--port", str(port)])
    assert res.exit_code == 0, res.output
    assert f"artifacts in {built.artifacts}" in res.output
    assert seen["port"] == port and seen["store"] is not None
    res = CliRunner().invoke(main, ["dashboard", "--storage", built.storage, "--no-artifacts",
                                    "--port", str(port)])
    assert res.exit_code == 0 and seen["store"] is None
