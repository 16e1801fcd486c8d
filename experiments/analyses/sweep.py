"""Figure 2's kind: a sweep of rows drawn against x (declared by the manifest's `x:`).

Each row gives its x value, or `learned`: the x task's share of the effective weights uncertainty weighting
reaches at the end of training. The common table's "Method" column becomes the x column; the figure plots
every column against x.
"""

from __future__ import annotations

from pathlib import Path

from experiments import plots
from experiments.analyses import Analysis, Context, RowContext, register
from experiments.layout import link


def _learned_x(weights: dict[str, float] | None, task: str, tasks) -> float | None:
    """The x task's share of the final effective weights of the row's tasks."""
    if not weights or not set(tasks) <= set(weights):
        return None
    return weights[task] / sum(weights[t] for t in tasks)


def _x_cell(row: dict) -> str:
    if row["x_learned"]:
        return f"learned {row['x']:.3g}" if row["x"] is not None else "learned"
    return f"{row['x']:g}"


@register("sweep", order=10)
class Sweep(Analysis):
    def declared(self, manifest) -> bool:
        return manifest.x is not None

    def row(self, ctx: Context, rc: RowContext, entry: dict) -> dict:
        x = ctx.manifest.x
        learned = rc.row.x == "learned"
        return {"x": _learned_x(rc.weights, x["task"], rc.config.tasks) if learned else rc.row.x,
                "x_learned": learned}

    def figures(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        image = plots.plot_sweep(t, out_dir / f"{ctx.manifest.name}.png")
        t["image"] = link(image)
        return [image]

    def method_column(self, t: dict):
        return t["x"]["label"], _x_cell

    def markdown(self, t: dict) -> list[str]:
        if not any(r["x_learned"] for r in t["rows"]):
            return []
        return ["", f"'learned': the {t['x']['task']} task's share of the effective task weights uncertainty "
                "weighting reaches at the end of training (mean over seeds)."]
