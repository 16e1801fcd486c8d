"""Appendix B's kind (declared by `settle:`): per row and task, the iteration from which the learned sigma^2
stays within the tolerance of its final value, and every row's curves in one figure (first seed).
"""

from __future__ import annotations

import math
from pathlib import Path

from experiments import plots
from experiments.aggregate import summarize
from experiments.analyses import Analysis, Context, RowContext, register
from experiments.layout import link
from experiments.records import Record
from experiments.report import cell_or_dash


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


def settle_curves(t: dict, records: dict[str, Record]) -> dict[str, dict]:
    """{row label: the curves of its first seed} for every row with a recorded run."""
    out = {}
    for row in t["rows"]:
        if row["seeds"]:
            rec = records[row["identity"][str(row["seeds"][0])]]
            out[row["label"]] = rec.data.get("curves") or {"step": []}
    return out


def settle_lines(t: dict) -> list[str]:
    """Per row and task: the iteration from which sigma^2 stays within the tolerance of its final value."""
    tol = t["settle"]["tolerance"]
    tasks = sorted({task for row in t["rows"] for task in row["settle"]["tasks"]})
    every = sorted({n for row in t["rows"] for n in row["settle"]["log_every"]})
    head = ["Row"] + [f"{task}: settled from iteration" for task in tasks] + [f"{task}: final σ²" for task in tasks]
    lines = ["", f"### σ² settling: the first logged iteration from which each task's σ² stays within "
                 f"{tol:.0%} of its final value", "",
             f"Resolution: σ² is logged every {', '.join(map(str, every)) or '?'} iterations. Mean ± std over "
             "seeds; '—': never settled or not learned.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t["rows"]:
        by_task = [row["settle"]["tasks"].get(task) or {} for task in tasks]
        cells = ([row["label"]] + [cell_or_dash(s.get("settle_step"), 0) for s in by_task]
                 + [cell_or_dash(s.get("final_sigma2"), 3) for s in by_task])
        lines.append("| " + " | ".join(cells) + " |")
    return lines


@register("appendix-b", order=30)
class Settle(Analysis):
    def declared(self, manifest) -> bool:
        return bool(manifest.settle)

    def row(self, ctx: Context, rc: RowContext, entry: dict) -> dict:
        return {"settle": settle_columns(rc.found, ctx.manifest.settle)}

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"settle": {"tolerance": ctx.manifest.settle}}

    def figures(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        image = plots.plot_uncertainty(settle_curves(t, ctx.records), out_dir / f"{ctx.manifest.name}.png",
                                       title=f"{ctx.manifest.title} on {ctx.preset}: σ² and weights by row "
                                             "(first seed)")
        t["image"] = link(image)
        return [image]

    def markdown(self, t: dict) -> list[str]:
        return settle_lines(t) if t.get("settle") else []
