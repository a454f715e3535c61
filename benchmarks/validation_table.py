"""The held-out table of docs/search-quality.md from `flexopt validate --json` files.

One row per searched space (its best searched schedule against the best baseline by each metric,
with the paired-bootstrap interval `validate` wrote), then the baselines' rows, so the doc's
tables are made by a command instead of copied by hand:

    python benchmarks/validation_table.py segments=val-segments-2x.json \
        timesteps=val-timesteps-2x.json hybrid=val-hybrid-2x.json --out table-2x.json

Prints a Markdown table; `--out` writes the same rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flexopt.search.validation import is_contender


def _interval(d: dict[str, Any]) -> str:
    return f"{d['value']:+.2f} ([{d['low']:+.2f}, {d['high']:+.2f}])"


def best_baseline(rows: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The baseline with the lowest `metric` on the held-out images, among those `validate`
    judges against (`Validation.best_baseline`'s rule)."""
    baselines = [r for r in rows if is_contender(r["kind"], r["label"])
                 and r.get(metric) is not None]
    if not baselines:
        raise SystemExit(f"no baseline has a {metric} in this validation")
    return min(baselines, key=lambda r: r[metric])


def space_row(space: str, data: dict[str, Any]) -> dict[str, Any]:
    """The searched schedule of one validation against the best baseline by rFID and by FID."""
    searched = next((r for r in data["rows"] if r["label"] == "best searched"), None)
    if searched is None:
        raise SystemExit(f"{space}: the validation has no searched schedule")
    out: dict[str, Any] = {"space": space, "trial": searched["name"], "steps": searched["steps"],
                           "speedup": searched["speedup"], "nfe": searched["nfe"],
                           "search_value": searched["search_value"], "rfid": searched["rfid"],
                           "fid": searched.get("fid")}
    for metric in ("rfid", "fid"):
        if searched.get(metric) is None:
            continue
        base = best_baseline(data["rows"], metric)
        diff = next((d for d in data.get("differences", [])
                     if d["metric"] == metric and d["baseline"] == base["name"]), None)
        if diff is None:
            raise SystemExit(f"{space}: no {metric} difference against {base['name']} "
                             "(run flexopt validate with --bootstrap N)")
        out[f"{metric}_baseline"] = f"{base['label']} ({base['name']})"
        out[f"{metric}_difference"] = {k: diff[k] for k in ("value", "low", "high", "verdict")}
    return out


def verdict(row: dict[str, Any]) -> str:
    parts = [f"{row[f'{m}_difference']['verdict'].removesuffix(' on these images')} by {name}"
             for m, name in (("rfid", "rFID"), ("fid", "FID")) if f"{m}_difference" in row]
    return ", ".join(parts)


def schedule_name(row: dict[str, Any]) -> str:
    """A baseline's schedule without its trial number ("trial 1 (teacher T=12)" -> "teacher
    T=12"): the same baseline is a different trial in each study."""
    name = row["name"]
    if "(" not in name or not name.endswith(")"):
        return name
    return name[name.index("(") + 1:-1]  # keeps a nested "(grid 48)" whole


def markdown(rows: list[dict[str, Any]], baselines: list[dict[str, Any]],
             search_metric: str = "rFID-32") -> str:
    head = (f"| space | best searched | speedup | NFE | {search_metric} in the search | "
            "held-out rFID | "
            "held-out FID | − best baseline, rFID (95 % interval) | − best baseline, FID "
            "(95 % interval) | verdict |")
    lines = [head, "| " + " | ".join(["---"] * 10) + " |"]
    for r in rows:
        fid = "" if r["fid"] is None else f"{r['fid']:.2f}"
        lines.append(
            f"| {r['space']} | {r['trial']} | {r['speedup']:.2f}× | {r['nfe']} | "
            f"{r['search_value']:.2f} | {r['rfid']:.2f} | {fid} | "
            f"{_interval(r['rfid_difference'])} | "
            f"{_interval(r['fid_difference']) if 'fid_difference' in r else ''} | {verdict(r)} |")
    for b in baselines:
        fid = "" if b.get("fid") is None else f"{b['fid']:.2f}"
        search = "" if b.get("search_value") is None else f"{b['search_value']:.2f}"
        lines.append(f"| {schedule_name(b)} ({b['label']}) | – | {b['speedup']:.2f}× | "
                     f"{b['nfe']} | {search} | {b['rfid']:.2f} | {fid} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("validations", nargs="+", metavar="SPACE=VAL.json",
                    help="a space's name and its `flexopt validate --json` file")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    ap.add_argument("--search-metric", default="rFID-32", metavar="LABEL",
                    help="what the searches scored candidates by, for the column's header "
                         "(default rFID-32; e.g. FID-128 for --metric fid --num-images 128)")
    args = ap.parse_args(argv)
    rows, baselines, seen = [], [], set()
    for item in args.validations:
        space, sep, path = item.partition("=")
        if not sep or not path:
            ap.error(f"{item!r} is invalid; allowed: SPACE=VAL.json")
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            ap.error(f"{path}: {err}")
        rows.append(space_row(space, data))
        for b in data["rows"]:
            if b["kind"] == "baseline" and schedule_name(b) not in seen:
                seen.add(schedule_name(b))
                baselines.append(b)
    teacher = next((r for r in data["rows"] if r["kind"] == "teacher"), None)
    print(markdown(rows, sorted(baselines, key=lambda b: b["rfid"]), args.search_metric))
    if teacher is not None and teacher.get("fid") is not None:
        print(f"\n(the teacher, {teacher['name']}: FID {teacher['fid']:.2f} on the same images)")
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "baselines": baselines}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
