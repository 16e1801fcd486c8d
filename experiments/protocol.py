"""The comparison protocol (docs/comparisons.md): learning-rate selection on val, the doubling rule that sets
the schedule, and the claims' two Holm families with TOST equivalence, scored on test.

- **Selection** reads each run's validation scores (`val_metrics` of a record scored on a held-out split,
  else its `metrics`). select_lr: per grid value, the mean over the grid's seeds of each metric; the score of
  a value is its per-task Delta_p (percent, positive = better) against the mean over the grid's values; the
  best score wins (ties: the smaller lr).
- **Schedule** (a manifest with `schedule: {iterations: [N, 2N, ...]}`, its rows expanded per length as
  `<row>-<N>it`): for each primary claim, the per-seed Delta_p on val at every length; a doubling N -> 2N has
  settled when every primary Delta_p's mean changes by less than its seed standard deviation at 2N. The chosen
  schedule is the first such 2N (already trained), else none: verdicts then say "at N iterations (not settled)".
- **Claims** (a manifest with `primary`): the primary family is each primary claim's per-task Delta_p of the
  claimed-better row against its reference rows; the secondary family is every claim's per-metric difference.
  Each family is Holm-corrected (experiments/statistics.py), verdicts come from statistics.verdict.
"""

from __future__ import annotations

import math
import statistics as pystats

from experiments import statistics as st
from experiments.manifest import Claim, Manifest
from tasks import METRICS

SCHEDULE_RULE = ("double the schedule until every primary paired difference (per-task Delta_p on val, mean over "
                 "seeds) changes by less than its seed standard deviation at the longer schedule; the protocol "
                 "uses that longer schedule (already trained); otherwise verdicts say 'at N iterations (not "
                 "settled)'")
SELECTION_RULE = ("each row's lr: the grid value whose validation metrics (mean over the grid's seeds) have the "
                  "best per-task Delta_p against the mean over the grid's values; ties: the smaller lr")


def selection_metrics(record) -> dict[str, float]:
    """The validation scores of a run record: `val_metrics` when it was scored on a held-out split."""
    data = record.data if hasattr(record, "data") else record
    return data.get("val_metrics") or data["metrics"]


def select_lr(scores: dict[float, list[dict[str, float]]], metrics: list[str]) -> dict:
    """{"lr": the chosen value, "scores": {lr: Delta_p vs the grid mean}, "metrics", "failed"} from lr -> per-seed
    metric dicts. A value whose runs lack a finite value of a metric that another value's runs all have
    (a run that diverged records its NaN metrics as missing) has failed: it scores None and is never chosen; the
    others are scored on the metrics finite at all of them."""
    if not scores:
        raise ValueError("select_lr needs at least one grid value")
    means = {lr: {m: pystats.fmean(r[m] for r in runs) for m in metrics
                  if all(m in r and math.isfinite(r[m]) for r in runs)} for lr, runs in scores.items()}
    measured = [m for m in metrics if any(m in v for v in means.values())]
    failed = sorted(lr for lr, v in means.items() if not v or any(m not in v for m in measured))
    usable = {lr: v for lr, v in means.items() if lr not in failed}
    if not usable:
        raise ValueError(f"no grid value has a finite value of every measured metric of {metrics} (every value's "
                         "runs diverged or lack a metric)")
    shared = [m for m in measured if all(m in v for v in usable.values())]
    reference = {m: pystats.fmean(v[m] for v in usable.values()) for m in shared}
    score = {lr: st.delta_p({m: v[m] for m in shared}, reference) for lr, v in usable.items()}
    best = max(sorted(score), key=lambda lr: (score[lr], -lr))
    return {"lr": best, "scores": {f"{lr:g}": score.get(lr) for lr in sorted(scores)}, "metrics": shared,
            "failed": [f"{lr:g}" for lr in failed]}


def _values(records, metric: str, split: str) -> dict[int, float]:
    """seed -> metric of `records` on the scored split ("score") or the selection split ("val")."""
    out = {}
    for r in records:
        values = selection_metrics(r) if split == "val" else r.data["metrics"]
        if metric in values:
            out[r.seed] = values[metric]
    return out


def references(claim: Claim, tasks: list[str]) -> dict[str, str]:
    """task -> the row `claim.better` is compared with on that task."""
    return {t: claim.than.get(t, claim.than.get("*")) for t in tasks if claim.than.get(t, claim.than.get("*"))}


def claim_delta_p(manifest: Manifest, claim: Claim, found: dict[str, list], tasks: dict[str, list[str]],
                  split: str = "score") -> dict[int, float]:
    """seed -> per-task Delta_p of claim.better against its reference row(s), on the seeds every row holds."""
    metrics = [c.metric for c in manifest.columns if METRICS[c.metric].task in tasks[claim.better]]
    refs = references(claim, tasks[claim.better])
    better = {m: _values(found[claim.better], m, split) for m in metrics}
    against = {m: _values(found[refs[METRICS[m].task]], m, split) for m in metrics
               if refs.get(METRICS[m].task) and METRICS[m].task in tasks[refs[METRICS[m].task]]}
    seeds = sorted(set.intersection(*(set(better[m]) & set(v) for m, v in against.items()))) if against else []
    return {s: st.delta_p({m: better[m][s] for m in against}, {m: v[s] for m, v in against.items()}) for s in seeds}


def schedule_columns(manifest: Manifest, found: dict[str, list], tasks: dict[str, list[str]]) -> dict:
    """The doubling rule over the pilot's lengths: per length and primary claim the Delta_p on val, per doubling
    the changes against the seed sd, the settled schedule (or None) and the schedule to use."""
    lengths = manifest.schedule
    by_length = {}
    for n in lengths:
        entries = {}
        for name in manifest.primary:
            claim = next(c for c in manifest.claims if c.name == f"{name}-{n}it")
            dp = claim_delta_p(manifest, claim, found, tasks, split="val")
            values = list(dp.values())
            entries[name] = {"seeds": sorted(dp), "mean": pystats.fmean(values) if values else None,
                             "std": pystats.stdev(values) if len(values) > 1 else None}
        by_length[str(n)] = entries
    doublings, settled = [], None
    for short, long in zip(lengths, lengths[1:]):
        checks = {}
        for name in manifest.primary:
            a, b = by_length[str(short)][name], by_length[str(long)][name]
            ok = None if None in (a["mean"], b["mean"], b["std"]) else abs(b["mean"] - a["mean"]) < b["std"]
            checks[name] = {"change": None if ok is None else b["mean"] - a["mean"], "std": b["std"], "settled": ok}
        done = bool(checks) and all(c["settled"] for c in checks.values())
        doublings.append({"from": short, "to": long, "primary": checks, "settled": done})
        if done and settled is None:
            settled = long
    return {"rule": SCHEDULE_RULE, "lengths": list(lengths), "delta_p_val": by_length, "doublings": doublings,
            "settled_iterations": settled, "used_iterations": settled or lengths[-1]}


def claims_protocol(manifest: Manifest, found: dict[str, list], tasks: dict[str, list[str]], settled: bool,
                    iterations: int | None) -> dict:
    """The primary and secondary families with Holm-corrected p, TOST and verdicts, on the scored split."""
    margin = manifest.margin_pct or st.MARGIN_PCT
    primary = []
    for name in manifest.primary:
        claim = next(c for c in manifest.claims if c.name == name)
        dp = claim_delta_p(manifest, claim, found, tasks)
        comp = st.compare(dp, {}, None, margin_pct=margin)
        primary.append({"name": name, "claim": claim.claim, "endpoint": "per-task Delta_p (%)",
                        "better": claim.better, "than": references(claim, tasks[claim.better])} | comp)
    secondary = []
    for claim in manifest.claims:
        for col in manifest.columns:
            task = METRICS[col.metric].task
            other = references(claim, tasks[claim.better]).get(task)
            if other is None or task not in tasks[other]:
                continue
            comp = st.compare(_values(found[claim.better], col.metric, "score"),
                              _values(found[other], col.metric, "score"), col.metric, margin_pct=margin)
            secondary.append({"claim": claim.name, "metric": col.metric, "better": claim.better, "than": other}
                             | comp)
    st.apply_holm(primary, settled)
    st.apply_holm(secondary, settled)
    for c in primary + secondary:
        c["seeds_n"] = len(c["seeds"])
        if not settled and iterations:
            c["verdict_text"] = f"{c['verdict']} at {iterations} iterations (not settled)"
        else:
            c["verdict_text"] = c["verdict"]
    by_claim = {}
    for c in secondary:
        by_claim.setdefault(c["claim"], []).append(c["verdict"])
    return {"rule": st.VERDICT_RULE, "margin_pct": margin, "alpha": st.ALPHA, "primary": primary,
            "secondary": secondary, "claims": {name: st.combine(v) for name, v in by_claim.items()}}


def total_weight(weights: dict[str, float] | None) -> float | None:
    """Sum of a row's final effective weights (the step-size scale of a loss-space row)."""
    return None if not weights else sum(weights.values())


def grid_edges(rows: list[dict]) -> dict:
    """Rows whose lr was chosen at an end of their grid (`lr_selection`): {"top": [names], "bottom": [names],
    "rows": how many rows chose from a grid}. Their best lr on val may lie outside the grid."""
    top, bottom, n = [], [], 0
    for r in rows:
        sel, lr = r.get("lr_selection"), r.get("lr")
        values = sorted(float(v) for v in (sel or {}).get("scores", {}))
        if lr is None or len(values) < 2:
            continue
        n += 1
        if math.isclose(lr, values[-1]):
            top.append(r["name"])
        elif math.isclose(lr, values[0]):
            bottom.append(r["name"])
    return {"top": top, "bottom": bottom, "rows": n}


def grid_edges_sentence(rows: list[dict]) -> str:
    """One sentence saying how many rows chose an end of their lr grid ('' when none chose from a grid)."""
    e = grid_edges(rows)
    if not e["rows"]:
        return ""
    ends = [f"{len(e['top'])} of {e['rows']} rows chose the largest lr of their grid"
            + (f" ({', '.join(e['top'])})" if e["top"] else ""),
            f"{len(e['bottom'])} the smallest" + (f" ({', '.join(e['bottom'])})" if e["bottom"] else "")]
    tail = ("; a row at an end may do better outside the grid, so its comparisons hold within the grid only."
            if e["top"] or e["bottom"] else ".")
    return ", ".join(ends) + tail


def _p(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


def _ci(d: dict | None, digits: int = 2) -> str:
    if not d:
        return "—"
    if d["low"] is None:
        return f"{d['mean']:+.{digits}f}"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def schedule_markdown(s: dict) -> list[str]:
    """The pilot table: per doubling and primary claim, the change of the mean Delta_p against its seed sd."""
    names = sorted({n for d in s["doublings"] for n in d["primary"]})
    head = ["Doubling"] + [f"{n}: change of Δp (val) / seed sd" for n in names] + ["Settled"]
    lines = ["", "### Schedule (doubling rule)", "", f"Rule: {s['rule']}.", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for d in s["doublings"]:
        cells = [f"{d['from']} → {d['to']}"]
        for n in names:
            c = d["primary"][n]
            cells.append("—" if c["change"] is None else
                         f"{c['change']:+.2f} / {c['std']:.2f} {'✓' if c['settled'] else '✗'}")
        lines.append("| " + " | ".join(cells + ["yes" if d["settled"] else "no"]) + " |")
    lines += ["", f"**Settled at {s['settled_iterations']} iterations.**" if s["settled_iterations"] else
              f"**Not settled**: the protocol's numbers are at {s['used_iterations']} iterations (not settled)."]
    return lines


def claims_markdown(t: dict) -> list[str]:
    """The protocol section: splits, lr grid, the step-size controls, the pilot, both Holm families."""
    p, c = t["protocol"], t["comparisons"]
    grid = p["lr_grid"]
    lines = ["", "### Protocol", "",
             (f"- Iterations: {p['iterations']} ({'settled' if p['settled'] else 'not settled'}); "
              if p["iterations"] is not None else "- Iterations: no run recorded yet; ")
             + f"selection on `{p['selection_split']}`, every number below scored on `{p['score_split']}`.",
             f"- Learning rate: {p['selection_rule']}; grid "
             f"{', '.join(f'{v:g}' for v in grid['values']) if grid else '—'} "
             f"(seeds {', '.join(map(str, grid['seeds'])) if grid else '—'}).",
             f"- Verdicts: {c['rule']}.", "", "### Step-size controls", "",
             "| Row | Method | Optimiser | lr (chosen on val) | Σ final weights | Seeds |", "|---|---|---|---|---|---|"]
    for r in t["rows"]:
        lr = "waits for its grid" if r.get("lr") is None else f"{r['lr']:g}"
        tw = "—" if r.get("total_weight") is None else f"{r['total_weight']:.3f}"
        lines.append(f"| {r['label']} | {r['method']} | {r.get('optimizer', 'sgd')} | {lr} | {tw} | "
                     f"{len(r['seeds'])} |")
    if p.get("pilot"):
        lines += schedule_markdown(p["pilot"])
    lines += ["", "### Primary endpoints (Holm across them)", "",
              "| Claim | Δp % (95 % CI) | p | p (Holm) | TOST p (Holm), margin | Seeds | Verdict |",
              "|---|---|---|---|---|---|---|"]
    for e in c["primary"]:
        tost = e.get("tost") or {}
        lines.append(f"| {e['name']}: {e['claim']} | {_ci(e['difference'])} | {_p(e['p'])} | {_p(e['p_holm'])} | "
                     f"{_p(tost.get('p_holm'))}, ±{c['margin_pct']:g} % | {len(e['seeds'])} | "
                     f"**{e['verdict_text']}** ({e['strength']}) |")
    lines += ["", "### Secondary comparisons (Holm across them)", "",
              "| Claim | Metric | vs row | Difference (95 % CI) | Relative % | p (Holm) | TOST p (Holm) | Seeds | "
              "Verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for e in c["secondary"]:
        tost = e.get("tost") or {}
        lines.append(f"| {e['claim']} | {METRICS[e['metric']].label} | {e['than']} | {_ci(e['difference'], 3)} | "
                     f"{_ci(e['relative_pct'], 1)} | {_p(e['p_holm'])} | {_p(tost.get('p_holm'))} | "
                     f"{len(e['seeds'])} | {e['verdict_text']} |")
    lines += ["", "Claims over all their metrics: " + "; ".join(f"{k}: **{v}**" for k, v in c["claims"].items())
              + "."]
    return lines


VERDICT_ORDER = ("supported", "equivalent", "worse at this budget", "not resolved")


def verdict_paragraph(t: dict) -> str:
    """One paragraph for the README: which comparisons are supported, equivalent, worse at this budget or
    not resolved, each per metric with its paired difference and 95 % interval, generated from a protocol
    table (its `protocol` and `comparisons`) so the words come from the numbers alone."""
    p, c = t["protocol"], t["comparisons"]
    seeds = max((len(e["seeds"]) for e in c["secondary"]), default=0)
    iterations = p["iterations"] if isinstance(p["iterations"], int) else None
    head = (f"**{t['title']}** ({t['preset']}; "
            + (f"{iterations} iterations, {'settled' if p['settled'] else 'not settled'}" if iterations
               else "no run recorded yet")
            + f"; {seeds} paired seeds at most; scored on `{p['score_split'] or 'test'}`; Holm within each family, "
            f"equivalence by TOST at ±{c['margin_pct']:g} %; each difference is the claimed-better row minus the "
            "other, signed so that positive favours the claimed-better row, with its 95 % interval, not adjusted "
            "for multiplicity: the verdicts use Holm-adjusted p, so an interval that excludes 0 can still be "
            "'not resolved').")
    primary = []
    for e in c.get("primary", []):
        if not e["difference"]:
            primary.append(f"{e['name']}: not resolved (no paired seed yet)")
            continue
        verdict = e["verdict"] + (f" within ±{c['margin_pct']:g} %" if e["verdict"] == "equivalent" else "")
        primary.append(f"{e['name']}: {_ci(e['difference'])}, {verdict} (n = {len(e['seeds'])})")
    groups: dict[str, list[str]] = {v: [] for v in VERDICT_ORDER}
    waiting = 0
    for e in c["secondary"]:
        if not e["difference"]:
            waiting += 1  # not resolved: no paired seed yet
            continue
        m = METRICS[e["metric"]]
        groups[e["verdict"] if e["verdict"] in groups else "not resolved"].append(
            f"{e['claim']}, {m.label} vs {e['than']}: {_ci(e['difference'], 3)} {m.unit} (n = {len(e['seeds'])})")
    parts = [head]
    edges = grid_edges_sentence(t.get("rows", []))
    if edges:
        parts.append("Learning rates: " + edges)
    if primary:
        parts += ["Primary endpoints (per-task Δp %, Holm across them): " + "; ".join(primary) + ".",
                  "Secondary comparisons (per metric, Holm across them):"]
    for verdict in VERDICT_ORDER:
        items = groups[verdict]
        count = len(items) + (waiting if verdict == "not resolved" else 0)
        text = "; ".join(items) if items else ""
        if verdict == "not resolved" and waiting:
            text += ("; " if text else "") + f"{waiting} without a paired seed yet"
        parts.append(f"*{verdict.capitalize()}* ({count}): {text or 'none'}.")
    return " ".join(parts) + "\n"


def pairwise(rows: list[dict]) -> dict:
    """Every pair of benchmark rows with a Delta_m: the paired difference of their per-task Delta_p (percentage
    points, positive = the first row is better), Holm-corrected across all pairs, with verdicts."""
    have = [r for r in rows if r.get("delta_m")]
    per_seed = {r["name"]: dict(zip(r["delta_m"]["seeds"], r["delta_m"]["per_task"]["values"])) for r in have}
    pairs = []
    for i, a in enumerate(have):
        for b in have[i + 1:]:
            seeds = sorted(set(per_seed[a["name"]]) & set(per_seed[b["name"]]))
            diff = {s: per_seed[a["name"]][s] - per_seed[b["name"]][s] for s in seeds}
            pairs.append({"a": a["name"], "b": b["name"]} | st.compare(diff, {}, None, margin_pct=None))
    st.apply_holm(pairs, settled=False)
    return {"rule": "paired per-task Delta_p differences (pp), two-sided t-test, Holm across every pair",
            "pairs": pairs, "significant": sum(p["verdict"] in (st.SUPPORTED, st.WORSE) for p in pairs)}


def weight_diagnostic(rows: list[dict]) -> dict:
    """Delta_m (per task, mean over seeds) against each loss-space row's total final weight, with Spearman's rho:
    a strong rank correlation says step size, not balancing, orders the methods."""
    from scipy.stats import spearmanr

    points = [{"name": r["name"], "total_weight": r["total_weight"], "delta_p": r["delta_m"]["per_task"]["mean"]}
              for r in rows if r.get("delta_m") and r.get("total_weight") is not None]
    rho = spearmanr([p["total_weight"] for p in points], [p["delta_p"] for p in points]) if len(points) > 2 else None
    return {"points": points, "spearman_rho": None if rho is None or math.isnan(rho.statistic) else
            float(rho.statistic), "spearman_p": None if rho is None or math.isnan(rho.pvalue) else float(rho.pvalue)}


def benchmark_markdown(t: dict) -> list[str]:
    """The protocol benchmark's extras: how many pairwise differences survive Holm, and the step-size diagnostic."""
    lines = []
    if t.get("pairwise"):
        pw = t["pairwise"]
        lines += ["", "### Pairwise differences (Holm-corrected)", "",
                  f"{pw['significant']} of {len(pw['pairs'])} pairwise per-task Δp differences are significant "
                  f"after Holm ({pw['rule']})." + (f" ![pairwise]({t['pairwise_image']})"
                                                   if t.get("pairwise_image") else "")]
    if t.get("weight_diagnostic"):
        d = t["weight_diagnostic"]
        rho = "—" if d["spearman_rho"] is None else f"{d['spearman_rho']:+.2f} (p {_p(d['spearman_p'])})"
        lines += ["", "### Δp against total loss weight", "",
                  f"Spearman ρ between each loss-space row's total final weight and its per-task Δp: {rho}; a "
                  "strong correlation means step size, not balancing, orders the rows."
                  + (f" ![weight]({t['weight_image']})" if t.get("weight_image") else "")]
    return lines
