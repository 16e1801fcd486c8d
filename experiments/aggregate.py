"""Aggregation: a manifest's rows filled from the run records, beside the paper's numbers.

A row's results are every record whose config is the row's (same identity apart from the seed), so
runs with seeds beyond the manifest's add to the table instead of being ignored; the manifest's
seeds (or --seeds) only decide which are reported missing. Values are the mean and the sample
standard deviation (n - 1) over seeds.
"""

from __future__ import annotations

import math
import statistics

from experiments.layout import PAPER_JSON, Paths
from experiments.manifest import Manifest, Row
from experiments.plan import Pending, resolve, row_seeds, train_command
from experiments.records import Record, read_json
from losses import method_class
from tasks import METRICS

STD = "sample standard deviation over seeds (n - 1)"


def load_paper(path=PAPER_JSON) -> dict:
    """The paper's numbers (a copy of the authors' tables, see results/paper/)."""
    return read_json(path)


def summarize(values: list[float]) -> dict:
    """mean, sample standard deviation (n - 1; None for one value), n and the values themselves."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values), "values": list(values)}


# Why a run's metric can be NaN (null in its JSON): see evaluation/accumulators.py.
MISSING_REASONS = {
    "semantic/miou": "no class in the ground truth or the predictions of the val split",
    "semantic/pixel_acc": "no labelled pixel in the val split",
}
MISSING_REGRESSION = "no valid pixel of the task in the val split"


def missing_reason(metric: str) -> str:
    """Why `metric` is NaN in a run's metrics (null in its JSON)."""
    if metric in MISSING_REASONS:
        return MISSING_REASONS[metric]
    if metric.startswith("semantic/iou/"):
        return "class in neither the ground truth nor the predictions of the val split"
    return MISSING_REGRESSION if metric in METRICS and METRICS[metric].unit == "px" else "NaN in the run's metrics"


def summarize_with_missing(values: list[float], metric: str, missing_seeds: list[int]) -> dict | None:
    """`summarize(values)` plus, when some seeds measured NaN, {"missing": {"seeds", "reason"}}; a summary
    with mean None and n 0 when every seed did; None when nothing was run."""
    if not missing_seeds:
        return summarize(values) if values else None
    out = summarize(values) if values else {"mean": None, "std": None, "n": 0, "values": []}
    return out | {"missing": {"seeds": sorted(missing_seeds), "reason": missing_reason(metric)}}


def paper_values(paper: dict, manifest: Manifest, row: Row) -> dict[str, float | None]:
    """{metric: the paper's value} for the row's paper reference ({} without one)."""
    section = paper.get(manifest.paper) if manifest.paper else None
    if section is None or row.paper is None:
        return {}
    ref, where = row.paper, f"{manifest.path}: row {row.name}: paper reference {row.paper}"
    match = None
    if "row" in ref:
        match = next((r for r in section.get("rows", []) if isinstance(r, dict) and r.get("name") == ref["row"]), None)
    elif "where" in ref:
        cols = section.get("row_columns", [])
        for values in section.get("rows", []):
            candidate = dict(zip(cols, values))
            if all(k in candidate and abs(candidate[k] - v) < 1e-9 for k, v in ref["where"].items()):
                match = candidate
                break
    elif "key" in ref:
        match = section.get(ref["key"])
    if not isinstance(match, dict):
        raise ValueError(f"{where} matches nothing in the paper's {manifest.paper!r}")
    return {c.metric: match.get(c.paper) for c in manifest.columns if c.paper}


def unit_factor(size, paper_size) -> float | None:
    """What a pixel error measured on frames of `size` (H, W) is multiplied by to be in pixels of the paper's
    frames `paper_size` (H, W): paper width / our width (a length in pixels scales with the frame). None when
    either is unknown: `size` None is the files' own resolution, whose width the run records do not hold."""
    if size is None or paper_size is None:
        return None
    return paper_size[1] / size[1]


def in_paper_units(ours: dict[str, dict | None], factor: float | None) -> dict[str, dict | None]:
    """`ours` ({metric: summary}) with the pixel metrics multiplied by `factor` (unchanged without one)."""
    def convert(metric: str, s: dict | None) -> dict | None:
        if s is None or factor is None or METRICS[metric].unit != "px" or not s["values"]:
            return s
        return summarize([v * factor for v in s["values"]]) | ({"missing": s["missing"]} if "missing" in s else {})

    return {m: convert(m, s) for m, s in ours.items()}


def units_of(paper_size, rows: list[dict]) -> dict:
    """The table's units: the paper's frame size its pixel errors are shown at (None: shown as measured),
    the sizes our rows were measured at and their factors, and the pixel metrics converted."""
    sizes = sorted({(tuple(r["units"]["size"]) if r["units"]["size"] else None, r["units"]["factor"]) for r in rows},
                   key=lambda sf: (sf[0] is None, sf[0] or (0, 0)))
    return {"paper_size": list(paper_size) if paper_size else None,
            "measured": [{"size": list(size) if size else None, "factor": factor} for size, factor in sizes],
            "pixel_metrics": [m for m in METRICS if METRICS[m].unit == "px"]}


def final_weights(records: list[Record]) -> dict[str, float] | None:
    """Mean over seeds of the last logged effective weight of each task."""
    per_task: dict[str, list[float]] = {}
    for rec in records:
        for task, w in rec.final_weights().items():
            if isinstance(w, (int, float)) and math.isfinite(w):
                per_task.setdefault(task, []).append(w)
    return {t: statistics.fmean(v) for t, v in per_task.items()} or None


def learns_weights(records: list[Record]) -> bool:
    """Whether any effective task weight changed during training (learned or scheduled weights)."""
    return any(key.startswith("weight/") and len(set(series)) > 1
               for rec in records for key, series in (rec.data.get("curves") or {}).items())


def aggregate(manifest: Manifest, preset: str, records: dict[str, Record], paper: dict,
              seeds: tuple[int, ...] | None = None, paths: Paths = Paths()) -> dict:
    """The table of `manifest` on `preset` from `records` (identity -> Record): the common table, then what each
    analysis the manifest declares adds (experiments/analyses/)."""
    from experiments.analyses import Context, RowContext, declared

    plugins = declared(manifest)
    ctx = Context(manifest, preset, records, paper, seeds, paths)
    by_row: dict[str, list[Record]] = {}
    for rec in records.values():
        by_row.setdefault(rec.row_identity, []).append(rec)
    rows, found_by_row = [], ctx.found
    section = (paper.get(manifest.paper) if manifest.paper else None) or {}
    paper_size = section.get("size")  # (H, W) the paper's errors are measured at (Table 1, Figure 2: 128x256)
    for row in manifest.rows:
        planned, waiting = [], []
        for seed in row_seeds(manifest, row, seeds):
            try:
                planned.append(resolve(manifest, row, seed, preset, paths, records=records))
            except Pending:
                waiting.append(seed)
        if row.weights_from:  # one config per seed (each seed's own final weights): its records by identity
            found = sorted((records[p.identity] for p in planned if p.identity in records), key=lambda r: r.seed)
            source = next(r for r in manifest.rows if r.name == row.weights_from)
            cfg = planned[0].config if planned else resolve(manifest, source, waiting[0], preset, paths,
                                                            records=records, lr=None).config
        else:  # an lr-grid row waiting for its grid: its config at the preset's lr gives its tasks, and no values
            # (runs of that config may exist, e.g. the schedule pilot's, but no lr has been chosen for the row yet)
            cfg = planned[0].config if planned else resolve(manifest, row, waiting[0], preset, paths,
                                                            records=records, lr=None).config
            found = sorted(by_row.get(cfg.identity(seed=False), []), key=lambda r: r.seed) if planned else []
        seen = {r.seed for r in found}
        found_by_row[row.name] = found
        ours = {}
        for col in manifest.columns:
            if METRICS[col.metric].task in cfg.tasks:
                values = [r.data["metrics"][col.metric] for r in found if col.metric in r.data["metrics"]]
                na = [r.seed for r in found if col.metric in r.missing]  # measured NaN: n/a, with the reason
                ours[col.metric] = summarize_with_missing(values, col.metric, na)
        weights = final_weights(found)
        method = (f"fixed: {row.weights_from}'s final weights of the same seed" if row.weights_from else
                  method_class(cfg.method.name).describe(cfg.method.name, cfg.method.selected, cfg.tasks))
        if row.weights_scale not in (None, "as-learned"):
            method += f", rescaled {row.weights_scale}"
        entry = {
            "name": row.name, "label": row.label, "tasks": list(cfg.tasks), "method": method,
            "seeds": [r.seed for r in found],
            "missing_seeds": sorted([r.seed for r in planned if r.seed not in seen] + waiting),
            "identity": {str(r.seed): r.identity for r in found} | {str(r.seed): r.identity for r in planned
                                                                     if r.seed not in seen},
            "git_commit": {str(r.seed): r.data.get("git_commit") for r in found},
            "command": {str(r.seed): r.data.get("command") for r in found},
            "planned_command": train_command(planned[0]) if planned else None,
            "ours": ours,  # as measured, at the row's training resolution
            # pixel errors in the paper's units (pixels of its frames), as the table shows them
            "ours_paper_units": in_paper_units(ours, unit_factor(cfg.data.size, paper_size)),
            "units": {"size": list(cfg.data.size) if cfg.data.size else None,
                      "factor": unit_factor(cfg.data.size, paper_size)},
            "paper": paper_values(paper, manifest, row), "final_weights": weights,
            "learns_weights": learns_weights(found),
            "kind": method_class("fixed" if row.weights_from else cfg.method.name).kind,
        }
        for analysis in plugins:
            entry |= analysis.row(ctx, RowContext(row, cfg, planned, found, weights), entry)
        rows.append(entry)
    extra = {}
    for analysis in plugins:
        extra |= analysis.columns(ctx, rows)
    return {
        "manifest": manifest.name, "preset": preset, "title": manifest.title, "description": manifest.description,
        "generated_by": f"python reproduce.py aggregate --preset {preset}",
        "columns": [{"metric": c.metric, "title": METRICS[c.metric].title, "digits": METRICS[c.metric].digits,
                     "higher_is_better": METRICS[c.metric].higher_is_better, "paper": c.paper}
                    for c in manifest.columns],
        "x": manifest.x, "std": STD, "paper_caption": section.get("caption"), "units": units_of(paper_size, rows),
        "results": sum(len(r["seeds"]) for r in rows), "rows": rows,
    } | extra


def results_of(table: dict) -> dict[tuple[str, int], str | None]:
    """{(row, seed): identity} of the results a table holds. Tables of the first runner (rows, or sweep
    "points" and a "learned" entry, named by "experiment" with a "config_hash" per seed) count too."""
    entries = [*table.get("rows", []), *table.get("points", []), *([table["learned"]] if table.get("learned") else [])]
    out = {}
    for row in entries:
        ids = row.get("identity") or row.get("config_hash") or {}
        for seed in row.get("seeds", []):
            out[row.get("name") or row.get("experiment"), seed] = ids.get(str(seed))
    return out


def __getattr__(name: str):
    """Names that moved to their analysis module (experiments/analyses/), still importable from here."""
    moved = {"settle_step": "settle", "settle_columns": "settle", "benchmark_columns": "benchmark"}
    if name in moved:
        import importlib

        return getattr(importlib.import_module(f"experiments.analyses.{moved[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
