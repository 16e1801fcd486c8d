"""The protocol benchmark's comparisons (declared by `baselines:` with `lr_grid:`): every pair of rows' per-task
Delta_p, Holm-corrected, and Delta_p against each row's total loss weight (experiments/protocol.py). The
benchmark's table shows their lines (experiments/analyses/benchmark.py); this kind computes and draws them.
"""

from __future__ import annotations

from pathlib import Path

from experiments import plots
from experiments.analyses import Analysis, Context, register
from experiments.layout import link
from experiments.protocol import pairwise, weight_diagnostic


@register("pairwise", order=25)
class Pairwise(Analysis):
    def declared(self, manifest) -> bool:
        return bool(manifest.baselines) and manifest.lr_grid is not None

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"pairwise": pairwise(rows), "weight_diagnostic": weight_diagnostic(rows)}

    def figures(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        written = []
        if t.get("pairwise"):
            for key, draw in (("pairwise", plots.plot_pairwise), ("weight", plots.plot_weight_diagnostic)):
                image = draw(t, out_dir / f"{ctx.manifest.name}-{key}.png")
                t[f"{key}_image"] = link(image)
                written.append(image)
        return written
