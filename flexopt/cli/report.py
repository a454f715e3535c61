"""`flexopt report`, `flexopt trials`, `flexopt dashboard`: look at what a search found.

Each command is one call into `flexopt.report.commands`, which imports the heavy packages
(plotly, pandas, optuna-dashboard) only when it runs, so `flexopt --help` stays fast.
"""

from __future__ import annotations

import click

from flexopt.cli.report_options import storage_options, trial_numbers
from flexopt.report.commands import list_trials, serve_dashboard, write_report


@click.command()
@storage_options(several=True)
@click.option("--out", "-o", default="report.html", show_default=True,
              type=click.Path(dir_okay=False), help="HTML file to write.")
@click.option("--cdn", is_flag=True,
              help="Link plotly.js from its CDN (small file, needs a network to view) instead "
                   "of embedding it (opens offline).")
@click.option("--highlight", callback=trial_numbers, metavar="LIST",
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
    write_report(storage, study_name, out, echo=click.echo, cdn=cdn, artifacts=artifacts,
                 use_artifacts=not no_artifacts, highlight=highlight, png=png,
                 png_backend=png_backend)


@click.command()
@storage_options(artifacts=False)
@click.option("--pareto", is_flag=True, help="Only the Pareto trials (feasible, searched).")
@click.option("--csv", "csv_path", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write CSV to FILE ('-' for standard output) instead of a text table.")
def trials(storage, study_name, pareto, csv_path):
    """List a search's finished trials: schedule, avg MACs, NFE, speedup, rFID.

    \b
    Example:
      flexopt trials --storage sqlite:///cifar.db --pareto --csv pareto.csv
    """
    click.echo(list_trials(storage, study_name, pareto, csv_path), nl=False)


@click.command()
@storage_options(study=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def dashboard(storage, artifacts, no_artifacts, host, port):
    """Open optuna-dashboard on a search's storage, with its sample grids as artifacts.

    \b
    Example:
      flexopt dashboard --storage sqlite:///cifar.db    # then browse http://127.0.0.1:8080
    """
    serve_dashboard(storage, artifacts, use_artifacts=not no_artifacts, host=host, port=port,
                    echo=click.echo)
