"""What `flexopt report`, `flexopt trials` and `flexopt dashboard` do, one call per command.

The command line only parses flags and prints. Heavy imports (plotly, pandas, optuna-dashboard)
happen inside the functions, so importing this module keeps `flexopt --help` fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from flexopt.errors import FlexoptError

NO_PARETO = "no Pareto trial yet: nothing was evaluated under the budget"

Echo = Callable[[str], None]


def split_study_names(values: Sequence[str]) -> list[str]:
    """--study-name values, each possibly a comma list, in order."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def write_report(storages: Sequence[str], study_names: Sequence[str], out: str, *,
                 echo: Echo = print, cdn: bool = False, artifacts: Sequence[str] = (),
                 use_artifacts: bool = True, highlight: Sequence[int] = (),
                 png: str | None = None, png_backend: str = "auto") -> None:
    """Write one study's HTML report, or one page comparing several studies, and the PNG plot.

    Each "wrote ..." line goes to `echo` as soon as its file exists, so a PNG export that fails
    still says where the page went. `study_names` may hold comma lists.
    """
    from flexopt.report.html import build_comparison, build_report
    from flexopt.report.png import export_comparison_png, export_pareto_png, pick_backend, png_path

    names = split_study_names(study_names)
    if png:
        png_path(png)  # fail before the slow part, not after
        pick_backend(png_backend)
    if len(storages) == 1 and len(names) <= 1 and len(artifacts) <= 1:
        path, rep = build_report(storages[0], names[0] if names else None, out, cdn=cdn,
                                 artifacts=artifacts[0] if artifacts else None,
                                 use_artifacts=use_artifacts, highlight=tuple(highlight))
        echo(f"wrote {path} ({_megabytes(path)}): {len(rep.pareto)} Pareto trials"
             + (f", best #{rep.best}" if rep.best is not None else ""))
        if png:
            echo(f"wrote {export_pareto_png(rep, png, png_backend)}")
        return
    if highlight:
        raise FlexoptError("--highlight names trials of one study; allowed: one study only "
                           "(not with several --study-name or --storage)")
    path, cmp = build_comparison(storages, names, out, cdn=cdn, artifacts=artifacts,
                                 use_artifacts=use_artifacts)
    best = ", ".join(f"{x.name} " + (f"#{x.best.number}" if x.best else "none")
                     for x in cmp.studies)
    echo(f"wrote {path} ({_megabytes(path)}): {len(cmp.studies)} studies compared "
         f"(best searched: {best})")
    if png:
        echo(f"wrote {export_comparison_png(cmp, png, png_backend)}")


def list_trials(storage: str, study_name: str | None = None, pareto: bool = False,
                csv_path: str | None = None) -> str:
    """A search's finished trials as the text `flexopt trials` prints (newline-terminated).

    `csv_path` "-" makes the text CSV; another path writes the CSV there and the text says so.
    Without rows the text is one line, not pandas' "Empty DataFrame" and column names.
    """
    from flexopt.files import write_csv
    from flexopt.report.data import collect, trials_frame
    from flexopt.search.study import load_study

    rep = collect(load_study(storage, study_name))
    frame = trials_frame(rep, rep.pareto if pareto else None)
    if csv_path == "-":
        return frame.to_csv(index=False)
    if csv_path:
        return f"wrote {write_csv(frame, csv_path)} ({len(frame)} trials)\n"
    if frame.empty:
        return (NO_PARETO if pareto else "no finished trial yet") + "\n"
    text = frame.drop(columns=["steps"]).to_string(
        index=False, na_rep="", float_format=lambda v: f"{v:.4g}")
    return text + "\n"


def serve_dashboard(storage: str, artifacts: str | None = None, use_artifacts: bool = True,
                    host: str = "127.0.0.1", port: int = 8080, echo: Echo = print) -> None:
    """Run optuna-dashboard on a search's storage, with its sample grids as artifacts.

    The store and the port are checked first: a taken port is one line, not a traceback after
    the banner. The banner goes to `echo` before the server blocks.
    """
    from flexopt.report.dashboard import check_listen, checked_store, run_dashboard
    from flexopt.search.artifacts import artifact_dir

    store = checked_store(storage, artifacts, use_artifacts=use_artifacts)
    check_listen(host, port)
    where = f"artifacts in {artifact_dir(storage, artifacts)}" if store else "no artifacts"
    echo(f"optuna-dashboard on http://{host}:{port}/ ({where}; Ctrl-C to stop)")
    run_dashboard(storage, host, port, store)
