"""`flexopt report`, `flexopt trials`, `flexopt dashboard`: look at what a search found.

Heavy imports (plotly, pandas, optuna-dashboard) happen inside the commands so `flexopt --help`
stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

NO_PARETO = "no Pareto trial yet: nothing was evaluated under the budget"


def _storage_options(study: bool = True, artifacts: bool = True, several: bool = False
                     ) -> Callable[[Any], Any]:
    """--storage (and --study-name, --artifacts/--no-artifacts) as every command here takes them;
    `several`: each may be repeated (and --study-name take a comma list) to compare studies."""

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        opts = [click.option(
            "--storage", required=True, metavar="URL", multiple=several,
            help="Optuna storage URL of the search, e.g. sqlite:///study.db"
                 + (" (repeat it to compare studies of several storages)." if several else "."))]
        if study:
            opts.append(click.option(
                "--study-name", metavar="NAME" + (",..." if several else ""), multiple=several,
                help="Study in the storage (may be left out when it holds only one)"
                     + ("; several (a comma list, or repeated) compare the studies in one "
                        "report." if several else ".")))
        if artifacts:
            opts += [
                click.option("--artifacts", metavar="DIR", type=click.Path(file_okay=False),
                             multiple=several,
                             help="Artifact directory of the search (default for sqlite:///x.db: "
                                  "x-artifacts/ beside it; required for other storages)"
                                  + ("; one per --storage, in the same order, when comparing."
                                     if several else ".")),
                click.option("--no-artifacts", "no_artifacts", is_flag=True,
                             help="Do not read sample grids."),
            ]
        for opt in reversed(opts):
            func = opt(func)
        return func

    return wrap


def _trial_numbers(_ctx: click.Context, _param: click.Parameter, value: str | None
                   ) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected trial numbers such as 3,17") from None


def _names(values: tuple[str, ...]) -> list[str]:
    """--study-name values, each possibly a comma list, in order."""
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


@click.command()
@_storage_options(several=True)
@click.option("--out", "-o", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--cdn", is_flag=True,
              help="Link plotly.js from its CDN (small file, needs a network to view) instead "
                   "of embedding it (opens offline).")
@click.option("--highlight", callback=_trial_numbers, metavar="LIST",
              help="Trial numbers to highlight as chosen, e.g. 12,40 (one study only).")
@click.option("--png", type=click.Path(dir_okay=False),
              help="Also write the Pareto plot (the comparison plot, for several studies) as a "
                   "static PNG (for papers).")
@click.option("--png-backend", type=click.Choice(["auto", "matplotlib", "browser"]),
              default="auto", show_default=True,
              help="matplotlib, or the plotly figure shot by a headless Chromium/Chrome.")
def report(storage, study_name, artifacts, no_artifacts, out, cdn, highlight, png, png_backend):
    """Write one self-contained HTML report of a search, or compare several searches.

    It shows rFID against avg MACs (speedup on the top axis) with the Pareto front, the
    baselines (DeepCache uniform, fewer-step teacher) and over-budget trials in grey; a table of
    the Pareto trials; each selected schedule as a strip of full / partial / null steps; the
    sample grids of the teacher and the selected trials on the same noises; and the search's
    progress.

    Several studies (--study-name a,b,c, or --storage repeated) make one comparison page: one
    plot with each study's searched trials and front in its colour and the baselines once, a
    table of each study's best trial, then each study's own sections. The studies must share
    model, t_ref, metric, rFID images and seed; budgets may differ.

    \b
    Example:
      flexopt report --storage sqlite:///cifar.db --out cifar.html --png pareto.png
      flexopt report --storage sqlite:///cifar.db --study-name seg-2x,ts-2x,hyb-2x -o cmp.html
    """
    from flexopt.errors import FlexoptError
    from flexopt.report.html import build_comparison, build_report
    from flexopt.report.png import export_comparison_png, export_pareto_png, pick_backend, png_path

    names = _names(study_name)
    if png:
        png_path(png)  # fail before the slow part, not after
        pick_backend(png_backend)
    if len(storage) == 1 and len(names) <= 1 and len(artifacts) <= 1:
        path, rep = build_report(storage[0], names[0] if names else None, out, cdn=cdn,
                                 artifacts=artifacts[0] if artifacts else None,
                                 use_artifacts=not no_artifacts, highlight=highlight)
        size = path.stat().st_size / 1e6
        click.echo(f"wrote {path} ({size:.1f} MB): {len(rep.pareto)} Pareto trials"
                   + (f", best #{rep.best}" if rep.best is not None else ""))
        if png:
            click.echo(f"wrote {export_pareto_png(rep, png, png_backend)}")
        return
    if highlight:
        raise FlexoptError("--highlight names trials of one study; allowed: one study only "
                           "(not with several --study-name or --storage)")
    path, cmp = build_comparison(storage, names, out, cdn=cdn, artifacts=artifacts,
                                 use_artifacts=not no_artifacts)
    size = path.stat().st_size / 1e6
    best = ", ".join(f"{x.name} " + (f"#{x.best.number}" if x.best else "none")
                     for x in cmp.studies)
    click.echo(f"wrote {path} ({size:.1f} MB): {len(cmp.studies)} studies compared "
               f"(best searched: {best})")
    if png:
        click.echo(f"wrote {export_comparison_png(cmp, png, png_backend)}")


@click.command()
@_storage_options(artifacts=False)
@click.option("--pareto", is_flag=True, help="Only the Pareto trials (feasible, searched).")
@click.option("--csv", "csv_path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write CSV to FILE ('-' for standard output) instead of a text table.")
def trials(storage, study_name, pareto, csv_path):
    """List a search's finished trials: schedule, avg MACs, NFE, speedup, rFID.

    \b
    Example:
      flexopt trials --storage sqlite:///cifar.db --pareto --csv pareto.csv
    """
    from flexopt.report.data import collect, trials_frame
    from flexopt.report.files import write_csv
    from flexopt.search.study import load_study

    rep = collect(load_study(storage, study_name))
    frame = trials_frame(rep, rep.pareto if pareto else None)
    if csv_path == "-":
        frame.to_csv(sys.stdout, index=False)
    elif csv_path:
        click.echo(f"wrote {write_csv(frame, csv_path)} ({len(frame)} trials)")
    elif frame.empty:  # pandas would print "Empty DataFrame" and the column names
        click.echo(NO_PARETO if pareto else "no finished trial yet")
    else:
        text = frame.drop(columns=["steps"]).to_string(
            index=False, na_rep="", float_format=lambda v: f"{v:.4g}"
        )
        click.echo(text)


@click.command()
@_storage_options(study=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def dashboard(storage, artifacts, no_artifacts, host, port):
    """Open optuna-dashboard on a search's storage, with its sample grids as artifacts.

    \b
    Example:
      flexopt dashboard --storage sqlite:///cifar.db    # then browse http://127.0.0.1:8080
    """
    from flexopt.report.dashboard import check_listen, checked_store, run_dashboard
    from flexopt.search.artifacts import artifact_dir

    store = checked_store(storage, artifacts, use_artifacts=not no_artifacts)
    check_listen(host, port)  # a taken port is one line, not a traceback after the banner
    where = f"artifacts in {artifact_dir(storage, artifacts)}" if store else "no artifacts"
    click.echo(f"optuna-dashboard on http://{host}:{port}/ ({where}; Ctrl-C to stop)")
    run_dashboard(storage, host, port, store)
