"""Do two settings give the same verdict? (`analyses: [agreement]` on a protocol manifest with two or more
`primary:` claims, the first at the reference setting: protocol-precision's bf16 + stride 16 against float32 +
stride 8). For the primary endpoint (per-task Delta_p) and each secondary metric: each claim's verdict (from
the claims table, experiments/analyses/protocol_claims.py), whether they agree, and how much the paired
difference itself changes between the settings: per seed, the other claim's signed difference minus the
reference claim's (the same seed's runs share data order and initial encoder at both settings), with its
Student-t interval and p, Holm-corrected across all these rows. A verdict can agree while the size of the
effect does not: both are reported, each from the numbers alone.
"""

from __future__ import annotations

from pathlib import Path

from experiments import protocol as proto
from experiments import statistics as st
from experiments.analyses import Analysis, Context, register
from experiments.protocol import _ci, _p
from infra.atomic import write_text
from tasks import METRICS

PRIMARY = "per-task Δp %"


def _signed(manifest, claim, found, tasks, metric: str) -> dict[int, float]:
    """seed -> the claim's difference on `metric` (claimed-better minus the other, positive = better)."""
    other = proto.references(claim, tasks[claim.better]).get(METRICS[metric].task)
    if other is None or METRICS[metric].task not in tasks[other]:
        return {}
    comp = st.compare(proto._values(found[claim.better], metric, "score"),
                      proto._values(found[other], metric, "score"), metric, margin_pct=None)
    return dict(zip(comp["seeds"], comp["difference"]["values"])) if comp["seeds"] else {}


def agreement(manifest, found: dict[str, list], tasks: dict[str, list[str]]) -> dict:
    """{"reference": claim, "others": [...], "rows": [{endpoint, metric, claim, change, p, p_holm}]}: per other
    primary claim and endpoint, the paired change of the difference from the reference claim's."""
    if len(manifest.primary) < 2:
        raise ValueError(f"{manifest.path}: the agreement analysis compares primary claims; it needs at least two "
                         f"(has {len(manifest.primary)})")
    claims = {c.name: c for c in manifest.claims}
    reference, *others = (claims[n] for n in manifest.primary)
    rows = []
    for claim in others:
        endpoints = [(PRIMARY, None, proto.claim_delta_p(manifest, reference, found, tasks),
                      proto.claim_delta_p(manifest, claim, found, tasks))]
        endpoints += [(METRICS[c.metric].label, c.metric, _signed(manifest, reference, found, tasks, c.metric),
                       _signed(manifest, claim, found, tasks, c.metric)) for c in manifest.columns]
        for endpoint, metric, ref, other in endpoints:
            seeds = sorted(set(ref) & set(other))
            change = st.paired_t([other[s] - ref[s] for s in seeds]) if seeds else None
            rows.append({"claim": claim.name, "endpoint": endpoint, "metric": metric, "seeds": seeds,
                         "change": change, "p": change["p"] if change else None})
    for row, p in zip(rows, st.holm([r["p"] for r in rows])):
        row["p_holm"] = p
        mean = row["change"]["mean"] if row["change"] else None
        significant = p is not None and p < st.ALPHA and len(row["seeds"]) >= st.MIN_SEEDS
        row["size"] = ("more favourable" if mean > 0 else "less favourable") if significant else "not resolved"
    return {"reference": reference.name, "others": [c.name for c in others], "rows": rows}


def _verdicts(t: dict) -> dict[tuple[str, str | None], dict]:
    """(claim, metric or None for the primary endpoint) -> its comparison in the claims table."""
    c = t["comparisons"]
    out = {(e["name"], None): e for e in c["primary"]}
    out |= {(e["claim"], e["metric"]): e for e in c["secondary"]}
    return out


def _with_verdicts(t: dict):
    """(agreement row, the reference claim's comparison, the other claim's) for each row; the comparisons are
    None where a claim has no paired seed yet."""
    a, found = t["agreement"], _verdicts(t)
    for r in a["rows"]:
        e_ref, e = found.get((a["reference"], r["metric"])), found.get((r["claim"], r["metric"]))
        ok = e_ref and e and e_ref["difference"] and e["difference"]
        yield r, (e_ref if ok else None), (e if ok else None)


def agreement_markdown(t: dict) -> list[str]:
    ref = t["agreement"]["reference"]
    lines = ["", "### Same verdict at both settings?", "",
             f"Each claim's difference and verdict (tables above) against the reference claim `{ref}`, and the "
             "change of the paired difference between them: per seed, the other claim's difference minus the "
             "reference's (positive: more favourable to the claimed-better row), 95 % interval, Holm across "
             "these rows; 'more' / 'less favourable' need Holm p < 0.05 and at least "
             f"{st.MIN_SEEDS} paired seeds.", "",
             "| Endpoint | Claim | Reference | This claim | Same verdict | Change of the difference (95 % CI) | "
             "p (Holm) | Size |", "|---|---|---|---|---|---|---|---|"]
    for r, e_ref, e in _with_verdicts(t):
        if e is None:
            lines.append(f"| {r['endpoint']} | {r['claim']} | — | — | — | — | — | not resolved |")
            continue
        digits = 2 if r["metric"] is None else 3
        agree = e_ref["verdict"] == e["verdict"]
        lines.append(f"| {r['endpoint']} | {r['claim']} | {_ci(e_ref['difference'], digits)}, {e_ref['verdict']} | "
                     f"{_ci(e['difference'], digits)}, {e['verdict']} | {'yes' if agree else '**no**'} | "
                     f"{_ci(r['change'], digits)} | {_p(r['p_holm'])} | {r['size']} |")
    sentence = agreement_sentence(t)
    return lines + (["", sentence] if sentence else [])


def agreement_sentence(t: dict) -> str:
    """How many endpoints keep their verdict, and where the size of the effect changed (Holm), from the numbers."""
    a = t["agreement"]
    same, total, changed = 0, 0, []
    for r, e_ref, e in _with_verdicts(t):
        if e is None:
            continue
        total += 1
        same += e_ref["verdict"] == e["verdict"]
        if r["size"] != "not resolved":
            digits = 2 if r["metric"] is None else 3
            changed.append(f"{r['endpoint']} {_ci(e_ref['difference'], digits)} against "
                           f"{_ci(e['difference'], digits)}, change {_ci(r['change'], digits)}, {r['size']} at "
                           f"`{r['claim']}` (Holm p {_p(r['p_holm'])})")
    if not total:
        return ""
    return (f"Same verdict as `{a['reference']}` on {same} of {total} endpoints; the size of the effect changed "
            f"(Holm p < 0.05) on " + ("; ".join(changed) if changed else "none") + ".")


@register("agreement", order=80)
class Agreement(Analysis):
    """Named in a manifest's `analyses:` list; needs the claims table (`primary:` with two or more claims)."""

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"agreement": agreement(ctx.manifest, ctx.found, {r["name"]: r["tasks"] for r in rows})}

    def outputs(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        """`<manifest>-agreement.md`: the agreement sentence, for the README beside the verdict summary."""
        out = out_dir / f"{ctx.manifest.name}-agreement.md"
        sentence = agreement_sentence(t) if t.get("comparisons") else ""
        write_text(out, f"**{t['title']}, agreement of the settings**: {sentence or 'no paired seed yet.'}\n")
        return [out]

    def markdown(self, t: dict) -> list[str]:
        return agreement_markdown(t) if t.get("agreement") and t.get("comparisons") else []
