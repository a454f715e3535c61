"""`flexopt report`: one self-contained HTML page showing what a search found.

The page holds the Pareto plot (with the baselines), a table of the front, each selected
schedule as a strip of step types, the sample grids of teacher and selected trials on the same
noises (when the search uploaded them), and the search's progress. plotly.js is embedded by
default so the file opens offline (about 5 MB); `cdn=True` links it instead (small file).

`build_report` draws one study; `build_comparison` several (one plot of all of them, a table of
each study's best trial, then each study's own sections).
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import plotly.graph_objects as go
import plotly.io as pio
from optuna.artifacts import FileSystemArtifactStore

from flexopt._version import __version__
from flexopt.errors import FlexoptError
from flexopt.files import make_parent, write_error
from flexopt.report.compare import Comparison, compare, find_studies, space_kind
from flexopt.report.data import StudyReport, TrialRow, collect, trials_frame
from flexopt.report.figures import (
    comparison_figure,
    latency_figure,
    pareto_figure,
    progress_figure,
    strip_figure,
    strip_label,
)
from flexopt.report.series import metric_label
from flexopt.run.budget import format_macs
from flexopt.search.artifacts import artifact_dir, find_sample_grid, find_teacher_grid, open_store
from flexopt.search.storage import mask_url
from flexopt.search.study import load_study

FIGURE_IDS = ("pareto", "strips", "progress")
_PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em} td,th{padding:3px 8px;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6} td.steps,td.mono{font-family:monospace}
.summary td:first-child{color:#666} .note{color:#666;font-size:.9em}
.grid img{image-rendering:pixelated;display:block;height:72px} .grid td{vertical-align:middle}
"""


@dataclass(frozen=True)
class SampleRow:
    """One row of the sample-grid section: whose images, and the PNG bytes."""

    label: str
    png: bytes


def sample_rows(
    study: optuna.Study, report: StudyReport, store: FileSystemArtifactStore | None
) -> list[SampleRow]:
    """Teacher first, then the selected trials that have a grid (same noises, column by column)."""
    if store is None:
        return []
    rows: list[SampleRow] = []
    teacher = find_teacher_grid(study, store)
    if teacher is not None:
        rows.append(SampleRow(f"teacher (T={report.settings.get('t_ref')})", teacher))
    trials = study.get_trials(deepcopy=False)
    metric = metric_label(report)
    for n in report.selected():
        png = find_sample_grid(study, trials[n], store, trials)
        if png is not None:
            rows.append(SampleRow(strip_label(report.row(n), metric), png))
    return rows


def _figure_html(fig: go.Figure, div_id: str, plotlyjs: bool | str) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=plotlyjs, div_id=div_id,
                       config=_PLOT_CONFIG)


_KNOWN_SETTINGS = {"segments", "branches", "intervals", "t_ref", "sampler", "budget",
                   "multi_objective", "metric", "model", "num_images", "seed", "conditioning",
                   "space"}


def _space_text(s: dict) -> str:
    """The search space in a few words: segment choices, or a placement space's own settings."""
    kind = space_kind(s)
    if kind == "segments":
        return (f"N-segment {s.get('segments')}, branch {s.get('branches')}, "
                f"interval {s.get('intervals')}")
    extra = [f"{k} {v}" for k, v in s.items() if k not in _KNOWN_SETTINGS]
    if kind == "hybrid" and s.get("branches") is not None:
        extra.append(f"branch {s.get('branches')}")
    return f"{kind} (placed steps{': ' + ', '.join(extra) if extra else ''})"


def _budget_summary(report: StudyReport, budget: dict) -> str:
    """The study's budget in its own unit: avg MACs, or wall-clock (a latency study)."""
    if report.max_batch_seconds is not None:
        speedup = f"{budget['speedup']:g}× wall-clock speedup, " if budget.get("speedup") else ""
        return f"{speedup}{report.max_batch_seconds:.3g} s per batch (latency profile)"
    if report.max_avg_macs is None:
        return "none"
    return (f"{format_macs(report.max_avg_macs)} avg MACs"
            + (f" ({budget['speedup']:g}× speedup)" if budget.get("speedup") else ""))


def _summary(report: StudyReport) -> str:
    s = report.settings
    rows = report.rows
    rejected = sum(r.state == "PRUNED" and r.pruned_at is None for r in rows)
    at_rung = sum(r.pruned_at is not None for r in rows)
    baselines = sum(r.kind != "searched" for r in rows)
    dups = sum(r.duplicate_of is not None for r in rows)
    evaluated = len(rows) - rejected - at_rung - baselines - dups
    budget = s.get("budget") or {}
    items = [
        ("model", s.get("model")), ("sampler", f"{s.get('sampler')}, t_ref {s.get('t_ref')}"),
        ("search space", _space_text(s)),
        ("budget", _budget_summary(report, budget)),
        ("objectives", f"{metric_label(report)}" + (" and avg MACs" if report.multi_objective
                                                    else "") + f" ({s.get('num_images')} images"
                       + (f"; against {s['reference']}" if s.get("reference") else "") + ")"),
        ("trials", f"{evaluated} candidates evaluated"
                   + (f", {at_rung} stopped at a rung by the pruner" if at_rung else "")
                   + f", {dups} duplicates reused, {rejected} over budget (pruned, never "
                   f"evaluated), {baselines} baselines"),
    ]
    if s.get("clip_guard") is not None:
        failed = sum(r.guard_failed for r in rows)
        items.append(("CLIP guard", f"CLIP score at least the teacher's minus "
                                    f"{s['clip_guard']:g} ({s.get('clip_model')}): {failed} "
                                    "evaluated trials under it (infeasible)"))
    for key, number in (("best", report.best), ("best searched", report.best_searched)):
        if number is None or (key != "best" and number == report.best):
            continue
        b = report.row(number)
        what = f" (baseline: {b.label})" if b.kind != "searched" else ""
        items.append((key, f"trial #{b.number}{what}: {metric_label(report)} {b.rfid:.4g}, "
                           f"{format_macs(b.avg_macs)} avg MACs, {b.speedup:.2f}× faster, "
                           f"NFE {b.nfe}"))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in items)
    return f'<table class="summary">{body}</table>'


def _pareto_table(report: StudyReport) -> str:
    frame = trials_frame(report, report.pareto)
    frame["avg_macs"] = frame["avg_macs"].map(format_macs)
    frame["speedup"] = frame["speedup"].map(lambda v: f"{v:.2f}×")
    frame["origin"] = [r.label if r.kind != "searched" else r.origin
                       for r in (report.row(n) for n in report.pareto)]
    frame = frame[["trial", "kind", "origin", "n_segments", "segments", "steps", "avg_macs",
                   "nfe", "speedup", report.metric]]
    frame = frame.rename(columns={"segments": "segments (branch/interval)", "avg_macs": "avg MACs",
                                  "nfe": "NFE", report.metric: metric_label(report)})
    text = frame.to_html(index=False, border=0, float_format=lambda v: f"{v:.4g}", na_rep="")
    text = text.replace("<td>F", '<td class="steps">F')
    return re.sub(r"<td>(\d+F)", r'<td class="steps">\1', text)  # placed: "987F 901P2 …"


def _validation(v: dict, best_searched: int | None) -> str:
    """The held-out check `flexopt validate` kept on the study: its table, each difference
    (best searched − baseline) with its interval, and the verdict; a note when the search has
    found a better candidate since."""
    fid = v.get("reference") is not None
    head = ("<tr><th></th><th>schedule</th><th>avg MACs</th><th>speedup</th><th>NFE</th>"
            "<th>rFID</th>" + ("<th>FID</th>" if fid else "") + "<th>search</th></tr>")
    rows = "".join(
        f"<tr><td>{html.escape(r['label'])}</td><td>{html.escape(r['name'])}</td>"
        f"<td>{format_macs(r['avg_macs'])}</td><td>{r['speedup']:.2f}×</td><td>{r['nfe']}</td>"
        f"<td>{r['rfid']:.4g}</td>" + (f"<td>{_num(r.get('fid'))}</td>" if fid else "")
        + f"<td>{_num(r.get('search_value'))}</td></tr>" for r in v["rows"])
    diffs = "".join(
        f"<tr><td>{'rFID' if d['metric'] == 'rfid' else 'FID'}</td>"
        f"<td>{html.escape(d['baseline'])}</td><td>{d['value']:+.4g}</td>"
        f"<td>{_num(d.get('se'))}</td><td>"
        + ("" if d.get("low") is None else f"[{d['low']:.4g}, {d['high']:.4g}]")
        + f"</td><td>{html.escape(d['verdict'])}</td></tr>" for d in v.get("differences", []))
    seeds = (f"{v['num_images']} held-out images from seed {v['seed']}"
             + (f" ({v['overlap']} of them also the search's)" if v.get("overlap") else "")
             + (f"; FID against {v.get('reference_images')} {v['reference']} images" if fid
                else "")
             + (f"; paired bootstrap, {v['resamples']} resamples" if v.get("resamples") else
                "; point estimates (no --bootstrap)"))
    table = f'<table class="summary">{head}{rows}</table>'
    levels = {d["level"] for d in v.get("differences", []) if d.get("level")}
    level = f"{levels.pop() * 100:g}%" if len(levels) == 1 else "95%"
    if diffs:
        table += ('<table class="summary"><tr><th>metric</th><th>best searched minus</th>'
                  f'<th>difference</th><th>SE</th><th>{level} interval</th><th>verdict</th></tr>'
                  f"{diffs}</table>")
    validated = next((r["name"] for r in v["rows"] if r["label"] == "best searched"), None)
    stale = ""
    if best_searched is not None and validated not in (None, f"trial {best_searched}"):
        stale = (f'<p class="note">The search has continued: its best searched is now trial '
                 f"{best_searched}, not the validated {html.escape(validated)}; run "
                 "`flexopt validate` again.</p>")
    return (f'{stale}<p class="note">{html.escape(seeds)}. Scored by `flexopt validate`: a '
            "schedule counts when it beats the best baseline on seeds the search never used.</p>"
            f'{table}<p class="verdict">{html.escape(v.get("verdict", ""))}</p>')


def _num(value: object) -> str:
    return "" if value is None else f"{value:.4g}"


def _samples(rows: list[SampleRow], note: str) -> str:
    if not rows:
        return f'<p class="note">{html.escape(note)}</p>'
    cells = "".join(
        f"<tr><td>{html.escape(r.label)}</td><td><img alt=\"{html.escape(r.label)}\" "
        f"src=\"data:image/png;base64,{base64.b64encode(r.png).decode()}\"></td></tr>"
        for r in rows
    )
    return (f'<p class="note">Same initial noises in each column: compare a row with the '
            f'teacher\'s.</p><table class="grid">{cells}</table>')


def _study_body(
    report: StudyReport, samples: list[SampleRow], first_js: bool | str, samples_note: str,
    ids: tuple[str, ...] = FIGURE_IDS, h: str = "h2",
) -> str:
    """One study's sections (summary to progress); `first_js` embeds/links plotly.js with the
    first figure (False: the page already has it); `ids` are the figures' div ids."""
    figs = {"pareto": pareto_figure(report), "strips": strip_figure(report),
            "progress": progress_figure(report)}
    if report.timed:
        figs["latency"] = latency_figure(report)
        ids = (*ids, f"{ids[0]}-latency")
    parts = {k: _figure_html(f, div, first_js if i == 0 else False)
             for i, ((k, f), div) in enumerate(zip(figs.items(), ids, strict=True))}
    no_front = "<p class='note'>No feasible evaluated candidate yet.</p>"
    return f"""{_summary(report)}
<{h}>Pareto front</{h}>
<p class="note">Searched candidates under the budget in blue, the front in red; baselines as
their own series; grey points are over the budget. Hover a point for its schedule.</p>
{parts["pareto"]}
<{h}>Pareto trials</{h}>
{_pareto_table(report) if report.pareto else no_front}
{_latency_section(report, parts.get("latency"), h)}
<{h}>Schedules</{h}>
{parts["strips"]}
<{h}>Samples</{h}>
{_samples(samples, samples_note)}
{f"<{h}>Held-out validation</{h}>" + _validation(report.validation, report.best_searched)
 if report.validation else ""}
<{h}>Search progress</{h}>
{parts["progress"]}
"""


def _latency_section(report: StudyReport, figure: str | None, h: str) -> str:
    """A latency study's second view: its profile and rFID against measured wall-clock."""
    if figure is None or report.latency is None:
        return ""
    p = report.latency
    key = p.get("key", {})
    parts = ", ".join(f"b={b} {float(v) * 1e3:.3g} ms"
                      for b, v in zip(p.get("branches", []), p.get("partial", []), strict=False))
    ratios = [r.predicted_seconds / r.measured_seconds for r in report.timed
              if r.predicted_seconds and r.measured_seconds]
    fit = (f" Predicted / measured over {len(ratios)} trials: median "
           f"{sorted(ratios)[len(ratios) // 2]:.3f}, range {min(ratios):.3f}–{max(ratios):.3f}."
           if ratios else "")
    return f"""<{h}>Wall-clock (latency budget)</{h}>
<p class="note">The budget prices schedules by the model's latency profile on
{html.escape(str(key.get("device_name", "?")))} ({html.escape(str(key.get("dtype", "?")))}, batch
{p.get("batch_size")}, {key.get("threads", "?")} threads): full step {float(p["full"]) * 1e3:.3g}
ms, partial {html.escape(parts)}, fixed {float(p["fixed"]) * 1e3:.3g} ms per call. Each trial's
generation time is measured too (scaled to one batch).{fit}</p>
{figure}"""


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
{body}<p class="note">flexopt {__version__}</p>
</body></html>
"""


def render_html(
    report: StudyReport, samples: list[SampleRow], *, cdn: bool = False, samples_note: str = ""
) -> str:
    """The whole page as a string."""
    title = f"flexopt report: {report.study_name}"
    return _page(title, _study_body(report, samples, "cdn" if cdn else True, samples_note))


def _cell(v: object, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{html.escape('' if v is None else str(v))}</td>"


def _shared_summary(c: Comparison) -> str:
    s = c.settings
    samplers = sorted({str(x.report.settings.get("sampler")) for x in c.studies})
    items = [
        ("model", s.get("model")), ("t_ref", s.get("t_ref")),
        ("sampler", ", ".join(samplers)),
        ("objective", f"{c.metric} ({s.get('num_images')} images, seed {s.get('seed')})"),
        ("studies", ", ".join(x.label for x in c.studies)),
    ]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in items)
    return f'<table class="summary">{body}</table>'


def _budget_text(limit: float | None) -> str:
    return "none" if limit is None else format_macs(limit)


def _studies_table(c: Comparison) -> str:
    head = "".join(f"<th>{h}</th>" for h in ("study", "space", "sampler", "budget (avg MACs)",
                                             "evaluated", "over budget", "storage"))
    rows = []
    for i, x in enumerate(c.studies, 1):
        r = x.report
        searched = [t for t in r.rows if t.kind == "searched"]
        evaluated = sum(t.rfid is not None and t.duplicate_of is None for t in searched)
        pruned = sum(t.state == "PRUNED" and t.pruned_at is None for t in searched)
        link = f'<td><a href="#study-{i}">{html.escape(x.name)}</a></td>'
        rows.append("<tr>" + link + _cell(x.space) + _cell(r.settings.get("sampler"))
                    + _cell(_budget_text(r.max_avg_macs)) + _cell(evaluated) + _cell(pruned)
                    + _cell(mask_url(x.storage), "mono") + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _best_row(study: str, space: str, budget: str, r: TrialRow | None, metric: str) -> str:
    if r is None:
        return ("<tr>" + _cell(study) + _cell(space) + _cell(budget)
                + '<td colspan="6" class="note">no feasible evaluated trial</td></tr>')
    trial = f"#{r.number}" if r.kind == "searched" else r.label
    return ("<tr>" + _cell(study) + _cell(space) + _cell(budget) + _cell(trial)
            + _cell(format_macs(r.avg_macs)) + _cell(f"{r.speedup:.2f}×" if r.speedup else "")
            + _cell(r.nfe) + _cell(f"{r.rfid:.4g}") + _cell(r.steps, "steps") + "</tr>")


def best_table(c: Comparison) -> str:
    """Each study's best feasible searched trial, then the best baseline under each budget."""
    cols = ("study", "space", "budget", "trial", "avg MACs", "speedup", "NFE", c.metric, "steps")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in cols)
    rows = [_best_row(x.label, x.space, _budget_text(x.report.max_avg_macs), x.best, c.metric)
            for x in c.studies]
    budgets = c.budgets() or [(None, [])]
    for limit, _ in budgets:
        rows.append(_best_row("best baseline", "", _budget_text(limit), c.best_baseline(limit),
                              c.metric))
    return f'<table class="best"><tr>{head}</tr>{"".join(rows)}</table>'


def render_comparison_html(
    c: Comparison, samples: list[tuple[list[SampleRow], str]], *, cdn: bool = False
) -> str:
    """The comparison page: shared settings, the studies, the joint plot, the best trials, then
    each study's own sections (`samples`: each study's sample rows and note, in order)."""
    title = f"flexopt comparison: {', '.join(x.name for x in c.studies)}"
    fig = _figure_html(comparison_figure(c), "compare", "cdn" if cdn else True)
    parts = [f"""{_shared_summary(c)}
<h2>Studies</h2>
{_studies_table(c)}
<h2>{html.escape(c.metric)} against avg MACs</h2>
<p class="note">Each study's searched candidates in its colour (grey: over its budget) and the
front of its searched candidates as a line; the baselines once, as their own series (grey: over
every budget); each budget a dashed line. Hover a point for its schedule.</p>
{fig}
<h2>Best trial of each study</h2>
{best_table(c)}
"""]
    for i, (x, (rows, note)) in enumerate(zip(c.studies, samples, strict=True), 1):
        ids = tuple(f"s{i}-{k}" for k in FIGURE_IDS)
        parts.append(f'<h2 id="study-{i}">{html.escape(x.label)}</h2>\n'
                     + _study_body(x.report, rows, False, note, ids, h="h3"))
    return _page(title, "".join(parts))


def build_comparison(
    storages: str | Sequence[str],
    study_names: Sequence[str],
    out: str | os.PathLike[str],
    *,
    cdn: bool = False,
    artifacts: Sequence[str | None] = (),
    use_artifacts: bool = True,
) -> tuple[Path, Comparison]:
    """Compare several studies in one HTML page; returns the path and what was drawn.

    `storages`: one storage URL or several; `study_names`: the studies (may be empty when each
    storage holds one; see `flexopt.report.compare.find_studies` for how names meet storages).
    The studies must share model, `t_ref`, metric, rFID images and seed (else one clear
    `FlexoptError` naming the setting and the values); budgets may differ. The page holds one
    plot of every study (searched trials and front per study, baselines once), a table of each
    study's best trial, and each study's own report sections. `artifacts`: the artifact
    directory of each storage, in the order of `storages` (empty: each storage's default).
    """
    urls = [storages] if isinstance(storages, str) else list(dict.fromkeys(storages))
    if artifacts and len(artifacts) != len(urls):
        raise FlexoptError(f"--artifacts given {len(artifacts)} times for {len(urls)} storages; "
                           "allowed: none, or one per --storage in the same order")
    dirs = dict(zip(urls, artifacts or [None] * len(urls), strict=True))
    pairs = [(url, load_study(url, name)) for url, name in find_studies(urls, study_names)]
    c = compare(pairs)
    samples = []
    for x, (url, study) in zip(c.studies, pairs, strict=True):
        store, note = open_samples_store(url, dirs[url], use_artifacts)
        samples.append((sample_rows(study, x.report, store), note))
    page = render_comparison_html(c, samples, cdn=cdn)
    return write_text_atomic(out, page), c


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write via a temp file + rename, so a browser never shows half a report.

    The temp file is opened normally (not `mkstemp`, which makes it private) so the report gets
    the usual permissions and can be shared or served.
    """
    p = make_parent(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise write_error(p, err) from None
    return p


def open_samples_store(
    storage: str, artifacts: str | None, use_artifacts: bool
) -> tuple[FileSystemArtifactStore | None, str]:
    """(store or None, note for the page): a missing default directory just means no grids."""
    if not use_artifacts:
        return None, "Sample grids were not requested (--no-artifacts)."
    path = artifact_dir(storage, artifacts)
    if artifacts is None and not path.is_dir():
        return None, f"No sample grids: the artifact directory {path} does not exist."
    return open_store(storage, artifacts), f"No sample grids were uploaded to {path}."


def build_report(
    storage: str,
    study_name: str | None,
    out: str | os.PathLike[str],
    *,
    cdn: bool = False,
    artifacts: str | None = None,
    use_artifacts: bool = True,
    highlight: tuple[int, ...] = (),
) -> tuple[Path, StudyReport]:
    """Read the study, draw everything, write `out`; returns the path and what was drawn."""
    study = load_study(storage, study_name)
    report = collect(study, highlight)
    if not report.evaluated:
        raise FlexoptError(f"study {study.study_name!r} has no evaluated trials yet")
    store, note = open_samples_store(storage, artifacts, use_artifacts)
    page = render_html(report, sample_rows(study, report, store), cdn=cdn, samples_note=note)
    return write_text_atomic(out, page), report
