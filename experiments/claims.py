"""Testing the paper's claims on our runs: a schedule-length pilot and paired comparisons with intervals.

**Pilot** (a manifest with `pilot: true`): rows that differ in `optim.iterations` and validate during
training (`val_every`), several seeds each. A row's schedule has settled on a metric when the metric's
change over the last third of training (value at the end minus value at the validation nearest two thirds
of the way, mean over seeds) is smaller in magnitude than one seed standard deviation of the final value.
The chosen length is the shortest row that has settled on every metric (None when none has); the experiment
then trains the chosen length, or the pilot's longest when none settled (the budget's limit, said in the table).

**Claims** (a manifest with `claims:`): each claim compares row `better` with row `than` (or, per task,
with that task's row) on the columns of the tasks both train. Seeds are paired (seed s with seed s: same
data order and initial encoder). Per metric: the differences better - than, signed so that positive means
`better` is better, their mean and Student-t 95 % interval (experiments.delta_m.confidence_interval).
Verdict per metric: "supported" when the interval lies above 0, "contradicted" when it lies below 0,
otherwise "not resolved". A claim is supported when every metric supports it, contradicted when any
metric contradicts it, and not resolved otherwise. Pixel errors are compared in the table's units (the
paper's, when the table converts them).
"""

from __future__ import annotations

import math
import statistics

from experiments.delta_m import confidence_interval
from experiments.manifest import Manifest
from experiments.records import Record
from tasks import METRICS

SUPPORTED, CONTRADICTED, UNRESOLVED = "supported", "contradicted", "not resolved"
RULE = ("paired seeds; difference = better - than, signed so that positive means the claimed-better row is "
        "better; mean and Student-t 95 % interval over seeds (n - 1 degrees of freedom); 'supported': the "
        "interval lies above 0, 'contradicted': below 0, 'not resolved': it contains 0 (or fewer than 2 seeds)")
PILOT_RULE = ("settled: |value at the end - value at the validation nearest 2/3 of the schedule| (mean over "
              "seeds) < the sample standard deviation of the final value over seeds; the chosen length is the "
              "shortest schedule settled on every metric")


def verdict(ci: dict) -> str:
    if ci["low"] is None:
        return UNRESOLVED
    if ci["low"] > 0:
        return SUPPORTED
    if ci["high"] < 0:
        return CONTRADICTED
    return UNRESOLVED


def claim_verdict(verdicts: list[str]) -> str:
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return UNRESOLVED


def _values(records: list[Record], metric: str, factor: float | None) -> dict[int, float]:
    scale = factor if factor is not None and METRICS[metric].unit == "px" else 1.0
    return {r.seed: r.data["metrics"][metric] * scale for r in records if metric in r.data["metrics"]}


def claims_columns(manifest: Manifest, rows: list[dict], found: dict[str, list[Record]]) -> list[dict]:
    """Every claim of the manifest with its per-metric paired differences, intervals and verdicts."""
    by_name = {r["name"]: r for r in rows}
    out = []
    for claim in manifest.claims:
        better = by_name[claim.better]
        metrics = []
        for col in manifest.columns:
            task = METRICS[col.metric].task
            other_name = claim.than.get(task, claim.than.get("*"))
            if other_name is None or task not in better["tasks"] or task not in by_name[other_name]["tasks"]:
                continue
            other = by_name[other_name]
            a = _values(found[claim.better], col.metric, better["units"]["factor"])
            b = _values(found[other_name], col.metric, other["units"]["factor"])
            seeds = sorted(set(a) & set(b))
            sign = 1.0 if METRICS[col.metric].higher_is_better else -1.0
            entry = {"metric": col.metric, "than": other_name, "unit": METRICS[col.metric].unit, "seeds": seeds,
                     "better_mean": statistics.fmean(a[s] for s in seeds) if seeds else None,
                     "than_mean": statistics.fmean(b[s] for s in seeds) if seeds else None}
            if seeds:
                diff = confidence_interval([sign * (a[s] - b[s]) for s in seeds])
                rel = confidence_interval([100.0 * sign * (a[s] - b[s]) / abs(b[s]) for s in seeds if b[s]])
                entry |= {"difference": diff, "relative_pct": rel, "verdict": verdict(diff)}
            else:
                entry |= {"difference": None, "relative_pct": None, "verdict": UNRESOLVED}
            metrics.append(entry)
        out.append({"name": claim.name, "claim": claim.claim, "better": claim.better, "than": claim.than,
                    "metrics": metrics, "verdict": claim_verdict([m["verdict"] for m in metrics])})
    return out


def _at(steps: list[int], values: list[float], target: float) -> tuple[int, float] | None:
    """(step, value) of the logged step nearest `target` (the earlier one on a tie)."""
    best = min(((abs(s - target), s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)),
               default=None)
    return None if best is None else (best[1], best[2])


def pilot_columns(manifest: Manifest, rows: list[dict], found: dict[str, list[Record]]) -> dict:
    """Per pilot row and metric: the change over the last third of training and the seeds' spread; the
    shortest schedule settled on every metric."""
    out_rows = []
    for row in rows:
        recs = found[row["name"]]
        iterations = recs[0].data.get("iterations") if recs else None
        metrics = {}
        for col in manifest.columns:
            if METRICS[col.metric].task not in row["tasks"]:
                continue
            finals, changes, at_steps = [], [], set()
            for r in recs:
                curve = r.data.get("val_curves") or {}
                final = r.data["metrics"].get(col.metric)
                point = _at(curve.get("step", []), curve.get(col.metric, []), 2 * r.data["iterations"] / 3)
                if final is None or point is None or point[0] >= r.data["iterations"]:
                    continue
                finals.append(final)
                changes.append(final - point[1])
                at_steps.add(point[0])
            sd = statistics.stdev(finals) if len(finals) > 1 else None
            change = statistics.fmean(changes) if changes else None
            settled = None if sd is None or change is None else abs(change) < sd
            metrics[col.metric] = {"from_step": sorted(at_steps), "change": change, "changes": changes,
                                   "final_std": sd, "final_mean": statistics.fmean(finals) if finals else None,
                                   "seeds": len(finals), "settled": settled}
        out_rows.append({"name": row["name"], "iterations": iterations, "metrics": metrics,
                         "settled": bool(metrics) and all(m["settled"] for m in metrics.values())})
    settled = sorted(r["iterations"] for r in out_rows if r["settled"] and r["iterations"])
    lengths = sorted(r["iterations"] for r in out_rows if r["iterations"])
    return {"rule": PILOT_RULE, "rows": out_rows, "chosen_iterations": settled[0] if settled else None,
            # what the experiment trains: the chosen schedule, or (none settled) the longest the pilot could afford
            "used_iterations": settled[0] if settled else (lengths[-1] if lengths else None)}


def _num(x: float | None, digits: int) -> str:
    return "—" if x is None else f"{x:+.{digits}f}"


def claims_markdown(t: dict) -> list[str]:
    """The claims section of a table's Markdown: one line per claim and a table of its metrics."""
    digits = {c["metric"]: c["digits"] for c in t["columns"]}
    lines = ["", "### Claims", "", f"Rule: {t['claims_rule']}.", "",
             "| Claim | Verdict | Metric | vs row | Difference (95 % CI) | Relative % (95 % CI) | Seeds |",
             "|---|---|---|---|---|---|---|"]
    for c in t["claims"]:
        for i, m in enumerate(c["metrics"]):
            d, r = m["difference"], m["relative_pct"]
            k = digits.get(m["metric"], 2) + 1
            diff = "—" if d is None else f"{_num(d['mean'], k)} [{_num(d['low'], k)}, {_num(d['high'], k)}] {m['unit']}"
            rel = "—" if r is None else f"{_num(r['mean'], 1)} [{_num(r['low'], 1)}, {_num(r['high'], 1)}]"
            head = [f"**{c['name']}**: {c['claim']}", f"**{c['verdict']}**"] if i == 0 else ["", ""]
            lines.append("| " + " | ".join(head + [f"{METRICS[m['metric']].label}: {m['verdict']}", m["than"], diff,
                                                    rel, str(len(m["seeds"]))]) + " |")
    return lines


def pilot_markdown(t: dict) -> list[str]:
    p = t["pilot"]
    metrics = [c["metric"] for c in t["columns"]]
    head = ["Row", "Iterations"] + [f"{METRICS[m].label}: change over last third / seed sd" for m in metrics] + \
        ["Settled"]
    lines = ["", "### Schedule length", "", f"Rule: {p['rule']}.", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in p["rows"]:
        cells = [r["name"], str(r["iterations"])]
        for m in metrics:
            s = r["metrics"].get(m)
            if s is None:
                cells.append("—")
                continue
            k = METRICS[m].digits + 1
            sd = "—" if s["final_std"] is None else f"{s['final_std']:.{k}f}"
            mark = {True: " ✓", False: " ✗", None: ""}[s["settled"]]
            cells.append(f"{_num(s['change'], k)} / {sd}{mark}")
        cells.append("yes" if r["settled"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    chosen, used = p["chosen_iterations"], p["used_iterations"]
    lines += ["", f"**Chosen schedule: {chosen} iterations.**" if chosen else
              f"**No pilot schedule settled on every metric**: the metrics still moved by more than the seeds' spread "
              f"over the last third of every schedule tried. The experiment trains the longest one, {used} "
              "iterations, the most its CPU budget allows; its verdicts are for that schedule, not for converged "
              "training."]
    return lines
