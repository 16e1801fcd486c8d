"""Learned-weight curves (declared by `curves: true`): one figure per row whose effective task weights changed
over training (the paper's Appendix B), linked below the table."""

from __future__ import annotations

from pathlib import Path

from experiments import plots
from experiments.analyses import Analysis, Context, register
from experiments.layout import link
from experiments.records import Record


def curve_figures(t: dict, records: dict[str, Record], out_dir: Path) -> dict[str, str]:
    """Learned-weight curves of every row whose effective weights changed over training: {row: link}."""
    written = {}
    for row in t["rows"]:
        if not row["learns_weights"]:
            continue
        curves = {f"seed{seed}": records[row["identity"][str(seed)]].data["curves"] for seed in row["seeds"]
                  if "curves" in records[row["identity"][str(seed)]].data}
        out = out_dir / "curves" / f"{row['name']}.png"
        written[row["name"]] = link(plots.plot_uncertainty(curves, out, title=f"{row['name']} on {t['preset']}"))
    return written


@register("curves", order=80)
class Curves(Analysis):
    def declared(self, manifest) -> bool:
        return manifest.curves

    def figures(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        t["curves"] = curve_figures(t, ctx.records, out_dir)
        return [out_dir / "curves" / f"{name}.png" for name in t["curves"]]

    def markdown(self, t: dict) -> list[str]:
        if not t.get("curves"):
            return []
        links = ", ".join(f"[{name}]({target})" for name, target in t["curves"].items())
        return ["", f"Effective task weights (and sigma^2) over training (the paper's Appendix B): {links}."]
