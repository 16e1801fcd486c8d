"""The comparison protocol's step-size record of each row (declared by `lr_grid:` or `primary:`): the learning
rate it trained at and how the grid chose it (experiments/protocol.py, select_lr), its optimiser and the total
of its final task weights; below the table, how many rows chose an end of their grid.
"""

from __future__ import annotations

from experiments.analyses import Analysis, Context, RowContext, register
from experiments.plan import Pending, lr_selection, uses_grid
from experiments.protocol import grid_edges_sentence, total_weight


@register("lr-grid", order=15)
class LrGrid(Analysis):
    def declared(self, manifest) -> bool:
        return manifest.lr_grid is not None or bool(manifest.primary)

    def row(self, ctx: Context, rc: RowContext, entry: dict) -> dict:
        selection = None
        if uses_grid(ctx.manifest, rc.row):
            try:
                selection = lr_selection(ctx.manifest, rc.row, ctx.preset, ctx.paths, ctx.records)
            except Pending:
                pass
        return {"lr": rc.config.optim.lr if rc.planned else None, "lr_selection": selection,
                "optimizer": rc.config.optim.optimizer, "total_weight": total_weight(rc.weights)}

    def markdown(self, t: dict) -> list[str]:
        edges = grid_edges_sentence(t.get("rows", []))
        return ["", "### Learning rates chosen on val", "", edges[0].upper() + edges[1:]] if edges else []
