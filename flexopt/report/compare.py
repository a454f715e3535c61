"""Several studies in one report: which studies, whether they compare, and what is drawn.

A comparison puts the searches of one model side by side, typically one per search space
(`segments`, `timesteps`, `hybrid`) or per budget. Each study's searched trials are their own
series (labelled `name · space`), each study's front of searched trials a line in its colour; the
baselines (trials with user attr `baseline`) are drawn once. Studies compare only when their
scores do: same model, `t_ref`, metric, rFID images, seed (and conditioning); budgets and samplers
may differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from flexopt.errors import FlexoptError
from flexopt.report.data import StudyReport, TrialRow, collect, pareto_indices
from flexopt.report.series import _STYLE, GREY, Series, metric_label
from flexopt.search.storage import mask_url, study_names
from flexopt.search.study import load_study

# settings two studies must share to be compared: (key in `flexopt:settings`, name for the user)
SHARED_SETTINGS = (("model", "model"), ("t_ref", "t_ref"), ("metric", "metric"),
                   ("num_images", "rFID images"), ("seed", "seed"),
                   ("conditioning", "conditioning"))
# distinct from the baselines' orange / green / mauve
STUDY_COLOURS = ("#1f77b4", "#d62728", "#9467bd", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
                 "#393b79")


def space_kind(settings: dict[str, Any]) -> str:
    """The study's search space kind: `segments` (also for studies made before the key),
    `timesteps` or `hybrid`."""
    return str(settings.get("space", "segments"))


@dataclass(frozen=True)
class ComparedStudy:
    """One study of a comparison: what its own report draws, where it lives, how it is drawn."""

    report: StudyReport
    storage: str
    label: str  # "budget-2x · timesteps"
    colour: str

    @property
    def name(self) -> str:
        return self.report.study_name

    @property
    def space(self) -> str:
        return space_kind(self.report.settings)

    @property
    def searched(self) -> list[TrialRow]:
        """Evaluated searched trials (feasible or not; duplicates left out)."""
        return [r for r in self.report.evaluated
                if r.kind == "searched" and r.duplicate_of is None]

    @property
    def front(self) -> list[TrialRow]:
        """The front of the feasible searched trials (baselines left out), by avg MACs."""
        ok = [r for r in self.searched if r.feasible]
        return [ok[i] for i in pareto_indices([(r.avg_macs, r.rfid) for r in ok])]

    @property
    def best(self) -> TrialRow | None:
        """The lowest-scoring feasible searched trial (the search's winner)."""
        n = self.report.best_searched
        return None if n is None else self.report.row(n)


@dataclass(frozen=True)
class Comparison:
    """Studies that can be compared, and the baselines of all of them, each once."""

    studies: tuple[ComparedStudy, ...]
    baselines: tuple[TrialRow, ...]  # deduplicated by name and avg MACs, by avg MACs

    @property
    def metric(self) -> str:
        return metric_label(self.studies[0].report)

    @property
    def settings(self) -> dict[str, Any]:
        return self.studies[0].report.settings

    @property
    def full_macs(self) -> float | None:
        return next((s.report.full_macs for s in self.studies if s.report.full_macs), None)

    @property
    def points(self) -> list[TrialRow]:
        """Every drawn point: searched trials of every study and the baselines."""
        return [r for s in self.studies for r in s.searched] + list(self.baselines)

    def budgets(self) -> list[tuple[float, list[ComparedStudy]]]:
        """Each distinct budget (avg MACs) and the studies searched under it, by avg MACs."""
        out: dict[str, tuple[float, list[ComparedStudy]]] = {}
        for s in self.studies:
            limit = s.report.max_avg_macs
            if limit is not None:
                out.setdefault(f"{limit:.12g}", (limit, []))[1].append(s)
        return sorted(out.values(), key=lambda b: b[0])

    def best_baseline(self, limit: float | None) -> TrialRow | None:
        """The lowest-scoring baseline under `limit` avg MACs (any, without a limit)."""
        ok = [r for r in self.baselines if limit is None or r.avg_macs < limit]
        return min(ok, key=lambda r: (r.rfid, r.avg_macs)) if ok else None


def find_studies(storages: Sequence[str], names: Sequence[str]) -> list[tuple[str, str]]:
    """(storage, study name) of each study to compare, in the order given.

    `names` may be empty (each storage holds one study), or name studies of one storage, or of
    several: each name is looked up in every storage; a name held by several storages is the one
    in the storage at its own position when as many names as storages are given. A storage none
    of the names points at contributes its one study. Mistakes (unknown or ambiguous name, a
    storage holding several unnamed studies) are one clear error naming the studies present.
    """
    if not storages:
        raise FlexoptError("no storage given; allowed: one or more --storage URL")
    storages, names = list(dict.fromkeys(storages)), list(dict.fromkeys(names))
    held = {url: study_names(url) for url in storages}
    for url, there in held.items():
        if not there:
            raise FlexoptError(f"storage {mask_url(url)!r} holds no study; run a search first")
    out: list[tuple[str, str]] = []
    for i, name in enumerate(names):
        where = [url for url in storages if name in held[url]]
        if len(storages) == 1 and not where:
            load_study(storages[0], name)  # raises: "study 'x' is not in ...; studies there: ..."
        if not where:
            present = "; ".join(f"{', '.join(sorted(held[u]))} (in {mask_url(u)!r})"
                                for u in storages)
            raise FlexoptError(f"study {name!r} is in none of the storages; studies there: "
                               f"{present}")
        if len(where) > 1:
            if len(names) == len(storages) and storages[i] in where:
                where = [storages[i]]
            else:
                raise FlexoptError(
                    f"study {name!r} is in several storages ({', '.join(map(mask_url, where))}); "
                    "give as many --study-name as --storage, in the same order")
        out.append((where[0], name))
    named = {url for url, _ in out}
    for url in storages:
        if url in named:
            continue
        if len(held[url]) > 1:
            raise FlexoptError(
                f"storage {mask_url(url)!r} holds several studies; pick with --study-name: "
                f"{', '.join(sorted(held[url]))}")
        out.append((url, held[url][0]))
    return out


def check_comparable(reports: Sequence[StudyReport]) -> None:
    """Raise one clear error when the studies' scores do not compare (SHARED_SETTINGS differ)."""
    for key, what in SHARED_SETTINGS:
        values = [r.settings.get(key) for r in reports]
        if len({repr(v) for v in values}) > 1:
            got = ", ".join(f"{r.study_name}: {v!r}" for r, v in zip(reports, values, strict=True))
            raise FlexoptError(
                f"studies cannot be compared: their {what} differs ({got}); allowed: studies of "
                "the same model, t_ref, metric, rFID images and seed (budgets may differ)")


def _study_label(report: StudyReport, storage: str, clash: bool) -> str:
    where = f" ({mask_url(storage).rsplit('/', 1)[-1]})" if clash else ""
    return f"{report.study_name}{where} · {space_kind(report.settings)}"


def compare(studies: Sequence[tuple[str, optuna.Study]]) -> Comparison:
    """Read (storage, study) pairs into a `Comparison`, refusing studies that do not compare."""
    reports = [(url, collect(study)) for url, study in studies]
    check_comparable([r for _, r in reports])
    for _, r in reports:
        if not r.evaluated:
            raise FlexoptError(f"study {r.study_name!r} has no evaluated trials yet")
    names = [r.study_name for _, r in reports]
    compared = tuple(
        ComparedStudy(r, url, _study_label(r, url, names.count(r.study_name) > 1),
                      STUDY_COLOURS[i % len(STUDY_COLOURS)])
        for i, (url, r) in enumerate(reports)
    )
    seen: dict[tuple[str, str], TrialRow] = {}
    for s in compared:
        for r in s.report.evaluated:
            if r.kind != "searched" and r.duplicate_of is None:
                seen.setdefault((r.label, f"{r.avg_macs:.12g}"), r)
    baselines = tuple(sorted(seen.values(), key=lambda r: (r.avg_macs, r.label)))
    return Comparison(compared, baselines)


def comparison_series(c: Comparison) -> list[Series]:
    """Per study: its searched points (grey when over its budget) and its front; then the
    baselines by kind (grey when over every study's budget)."""
    out: list[Series] = []
    for s in c.studies:
        ok = tuple(r for r in s.searched if r.feasible)
        over = tuple(r for r in s.searched if not r.feasible)
        if ok:
            out.append(Series(s.label, ok, s.colour, "circle", "o", 6))
        if over:
            out.append(Series(f"{s.label} (over budget)", over, GREY, "circle", "o", 6))
        if s.front:
            out.append(Series(f"{s.label} front", tuple(s.front), s.colour, "circle", "o", 9,
                              line=True))
    limits = [s.report.max_avg_macs for s in c.studies]
    top = math.inf if any(v is None for v in limits) else max(limits)
    for kind, (name, colour, symbol, marker) in _STYLE.items():
        if kind == "searched":
            continue
        rows = [r for r in c.baselines if r.kind == kind]
        ok = tuple(r for r in rows if r.avg_macs < top)
        over = tuple(r for r in rows if r.avg_macs >= top)
        if ok:
            out.append(Series(name, ok, colour, symbol, marker, 9))
        if over:
            out.append(Series(f"{name} (over every budget)", over, GREY, symbol, marker, 7))
    return out
