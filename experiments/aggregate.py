"""Aggregation: a manifest's rows filled from the run records, beside the paper's numbers.

A row's results are every record whose config is the row's (same identity apart from the seed), so
runs with seeds beyond the manifest's add to the table instead of being ignored; the manifest's
seeds (or --seeds) only decide which are reported missing. Values are the mean and the sample
standard deviation (n - 1) over seeds.
"""

from __future__ import annotations

import math
import statistics

from experiments.claims import RULE as CLAIMS_RULE
from experiments.claims import claims_columns, pilot_columns
from experiments.delta_m import CONVENTIONS, paired_delta_m
from experiments.layout import PAPER_JSON, Paths
from experiments.manifest import Manifest, Row
from experiments.plan import Pending, lr_selection, resolve, row_seeds, train_command, uses_grid
from experiments.protocol import (
    SCHEDULE_RULE,
    SELECTION_RULE,
    claims_protocol,
    pairwise,
    schedule_columns,
    total_weight,
    weight_diagnostic,
)
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
    """The table of `manifest` on `preset` from `records` (identity -> Record)."""
    by_row: dict[str, list[Record]] = {}
    for rec in records.values():
        by_row.setdefault(rec.row_identity, []).append(rec)
    rows, found_by_row = [], {}
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
        else:  # (an lr-grid row waiting for its grid: its own lr, for its tasks; no record matches it)
            cfg = planned[0].config if planned else resolve(manifest, row, waiting[0], preset, paths,
                                                            records=records, lr=None).config
            found = sorted(by_row.get(cfg.identity(seed=False), []), key=lambda r: r.seed)
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
        if manifest.lr_grid is not None or manifest.primary:  # the protocol's step-size record of each row
            entry |= protocol_row(manifest, row, preset, paths, records, planned, cfg, weights)
        if manifest.is_sweep:
            entry["x"] = _learned_x(weights, manifest.x["task"], cfg.tasks) if row.x == "learned" else row.x
            entry["x_learned"] = row.x == "learned"
        rows.append(entry)
    extra = benchmark_columns(manifest, preset, rows, found_by_row, paths) if manifest.baselines else {}
    if manifest.baselines and manifest.lr_grid is not None:  # the protocol benchmark
        extra |= {"pairwise": pairwise(rows), "weight_diagnostic": weight_diagnostic(rows)}
    if manifest.settle:
        for row in rows:
            row["settle"] = settle_columns(found_by_row[row["name"]], manifest.settle)
        extra["settle"] = {"tolerance": manifest.settle}
    if manifest.pilot:
        extra["pilot"] = pilot_columns(manifest, rows, found_by_row)
    if manifest.schedule:
        extra["schedule"] = schedule_columns(manifest, found_by_row, {r["name"]: r["tasks"] for r in rows})
    if manifest.primary and not manifest.schedule:  # protocol claims: two Holm families, TOST, fixed vocabulary
        extra |= protocol_claims(manifest, preset, records, paper, seeds, paths, rows, found_by_row)
    elif manifest.claims:
        extra["claims"] = claims_columns(manifest, rows, found_by_row)
        extra["claims_rule"] = CLAIMS_RULE
    if manifest.official:
        for row in rows:
            row["official"] = official_columns(found_by_row[row["name"]], manifest.official["grouping"])
        extra["official"] = {"grouping": manifest.official["grouping"], "paper": section,
                             "reference_width": REFERENCE_WIDTH}
    return {
        "manifest": manifest.name, "preset": preset, "title": manifest.title, "description": manifest.description,
        "generated_by": f"python reproduce.py aggregate --preset {preset}",
        "columns": [{"metric": c.metric, "title": METRICS[c.metric].title, "digits": METRICS[c.metric].digits,
                     "higher_is_better": METRICS[c.metric].higher_is_better, "paper": c.paper}
                    for c in manifest.columns],
        "x": manifest.x, "std": STD, "paper_caption": section.get("caption"), "units": units_of(paper_size, rows),
        "results": sum(len(r["seeds"]) for r in rows), "rows": rows,
    } | extra


def benchmark_columns(manifest: Manifest, preset: str, rows: list[dict], found: dict[str, list[Record]],
                      paths: Paths) -> dict:
    """Delta_m of every multi-task row against the single-task baselines (paired seeds), and the
    measured overheads from results/<preset>/<manifest>-overheads.json when it exists."""
    metrics = [c.metric for c in manifest.columns]
    baselines: dict[int, dict[str, float]] = {}
    for i, (task, row_name) in enumerate(manifest.baselines.items()):
        by_seed = {r.seed: {m: r.data["metrics"][m] for m in metrics
                            if METRICS[m].task == task and m in r.data["metrics"]} for r in found[row_name]}
        baselines = by_seed if i == 0 else {s: baselines[s] | by_seed[s] for s in baselines if s in by_seed}
    tasks = set(manifest.baselines)
    overheads_path = paths.results / preset / f"{manifest.name}-overheads.json"
    overheads = read_json(overheads_path) if overheads_path.exists() else None
    for row in rows:
        row["baseline"] = row["name"] in manifest.baselines.values()
        row["delta_m"] = None
        if not row["baseline"] and set(row["tasks"]) >= tasks:
            method = {r.seed: r.data["metrics"] for r in found[row["name"]]}
            row["delta_m"] = paired_delta_m(method, baselines, [m for m in metrics if METRICS[m].task in tasks])
        row["overheads"] = (overheads or {}).get("rows", {}).get(row["name"])
    meta = None if overheads is None else {k: v for k, v in overheads.items() if k != "rows"}
    return {"baselines": dict(manifest.baselines), "delta_m_conventions": CONVENTIONS, "overheads": meta}


def protocol_row(manifest: Manifest, row: Row, preset: str, paths: Paths, records: dict[str, Record],
                 planned: list, cfg, weights: dict[str, float] | None) -> dict:
    """A protocol row's learning rate (and how the grid chose it), optimiser and total loss weight."""
    selection = None
    if uses_grid(manifest, row):
        try:
            selection = lr_selection(manifest, row, preset, paths, records)
        except Pending:
            pass
    return {"lr": cfg.optim.lr if planned else None, "lr_selection": selection, "optimizer": cfg.optim.optimizer,
            "total_weight": total_weight(weights)}


def protocol_claims(manifest: Manifest, preset: str, records: dict[str, Record], paper: dict, seeds, paths: Paths,
                    rows: list[dict], found_by_row: dict[str, list[Record]]) -> dict:
    """The `protocol` object of a protocol table (claims.json schema, docs/comparisons.md) and its comparisons."""
    from experiments.manifest import find_manifests

    iterations = sorted({r.data.get("iterations") for found in found_by_row.values() for r in found} - {None})
    pilot = None
    if manifest.settled_by:
        pilot_manifest = find_manifests(manifest.path.parent, [manifest.settled_by])[0]
        pilot = aggregate(pilot_manifest, preset, records, paper, None, paths).get("schedule")
    settled = bool(pilot and pilot["settled_iterations"] and iterations == [pilot["settled_iterations"]])
    splits = {(r.data.get("selection_split"), r.data.get("score_split")) for f in found_by_row.values() for r in f}
    selection_split, score_split = sorted(splits, key=str)[0] if len(splits) == 1 else (None, None)
    grid = manifest.lr_grid
    protocol = {
        "iterations": iterations[0] if len(iterations) == 1 else iterations or None,
        "schedule_rule": SCHEDULE_RULE, "settled": settled, "pilot": pilot,
        "selection_split": selection_split, "score_split": score_split,
        "selection_rule": SELECTION_RULE,
        "lr_grid": {"values": list(grid.values), "seeds": list(grid.seeds)} if grid else None,
        "seeds": sorted({s for r in rows for s in r["seeds"]}),
    }
    tasks = {r["name"]: r["tasks"] for r in rows}
    return {"protocol": protocol,
            "comparisons": claims_protocol(manifest, found_by_row, tasks, settled, protocol["iterations"]
                                           if isinstance(protocol["iterations"], int) else None)}


def settle_step(steps: list[int], values: list[float], tolerance: float) -> int | None:
    """The first logged step from which `values` stay within `tolerance` (relative) of the last value."""
    final = values[-1] if values else math.nan
    if not math.isfinite(final) or final == 0:
        return None
    settled = None
    for step, v in zip(steps, values):
        if math.isfinite(v) and abs(v - final) <= tolerance * abs(final):
            settled = step if settled is None else settled
        else:
            settled = None
    return settled


def settle_columns(found: list[Record], tolerance: float) -> dict:
    """Per task: the iteration from which sigma^2 stays within `tolerance` of its final value and the final
    sigma^2 (each summarised over seeds), with the logging interval that bounds the step's resolution."""
    out: dict = {"tasks": {}, "log_every": sorted({r.config.log_every for r in found})}
    tasks = sorted({k.split("/", 1)[1] for r in found for k in (r.data.get("curves") or {}) if k.startswith("sigma2/")})
    for task in tasks:
        steps, finals = [], []
        for r in found:
            curves = r.data.get("curves") or {}
            series = curves.get(f"sigma2/{task}")
            if not series:
                continue
            step = settle_step(curves["step"], series, tolerance)
            if step is not None:
                steps.append(float(step))
            if math.isfinite(series[-1]):
                finals.append(series[-1])
        out["tasks"][task] = {"settle_step": summarize(steps) if steps else None,
                              "final_sigma2": summarize(finals) if finals else None}
    return out


PIXEL_SCORES = ("iou_class", "iiou_class", "iou_category", "iiou_category")
INSTANCE_SCORES = ("ap", "ap50", "ap100m", "ap50m")
REFERENCE_WIDTH = 2048  # the paper's full resolution: Table 2's disparity errors are pixels of a 2048-wide frame


def official_columns(found: list[Record], grouping: list[str]) -> dict:
    """Table 2's numbers of one row over its seeds: official pixel-level scores, official instance AP per
    grouping method (and per class), grouping time, and the full-resolution disparity errors, also
    converted to pixels of a 2048-wide frame (x 2048 / the files' width)."""
    recs = [r for r in found if r.data.get("official")]

    def summary(get) -> dict | None:
        values = [v for v in (get(r.data["official"]) for r in recs) if v is not None and math.isfinite(v)]
        return summarize(values) if values else None

    out = {"seeds": [r.seed for r in recs], "file_size": recs[0].data["official"].get("file_size") if recs else None,
           "commands": {str(r.seed): r.data["official"].get("command") for r in recs},
           "git_commit": {str(r.seed): r.data["official"].get("git_commit") for r in recs},
           "pixel": {k: summary(lambda o, k=k: (o.get("official") or {}).get(k)) for k in PIXEL_SCORES},
           "instance": {}, "depth": {}}
    for method in grouping:
        def ap(o, key, method=method):
            return ((o.get("instance_ap") or {}).get(method) or {}).get(key)

        classes = sorted({c for r in recs for c in
                          (((r.data["official"].get("instance_ap") or {}).get(method) or {}).get("class_ap") or {})})
        out["instance"][method] = {k: summary(lambda o, k=k: ap(o, k)) for k in INSTANCE_SCORES} | {
            "class_ap": {c: summary(lambda o, c=c: (ap(o, "class_ap") or {}).get(c)) for c in classes},
            "s_per_frame": summary(lambda o, method=method: (o.get("grouping_s_per_frame") or {}).get(method))}
    width = out["file_size"][1] if out["file_size"] else None
    for key in ("depth/mean_error_px", "depth/rmse_px"):
        out["depth"][key] = summary(lambda o, key=key: (o.get("full_resolution") or {}).get(key))
        out["depth"][key + "@2048"] = summary(
            lambda o, key=key: _times((o.get("full_resolution") or {}).get(key), REFERENCE_WIDTH / width)
            if width else None)
    return out


def _times(value: float | None, factor: float) -> float | None:
    """value x factor; None (a NaN that strict JSON wrote as null) stays None."""
    return None if value is None else value * factor


def _learned_x(weights: dict[str, float] | None, task: str, tasks) -> float | None:
    """The x task's share of the final effective weights of the row's tasks."""
    if not weights or not set(tasks) <= set(weights):
        return None
    return weights[task] / sum(weights[t] for t in tasks)


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
