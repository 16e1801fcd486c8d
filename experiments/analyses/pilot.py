"""The schedule-length pilot's kind (declared by `pilot: true`): rows that differ in optim.iterations and
validate during training; experiments/claims.py picks the length."""

from __future__ import annotations

from experiments.analyses import Analysis, Context, register
from experiments.claims import pilot_columns, pilot_markdown


@register("pilot", order=40)
class Pilot(Analysis):
    def declared(self, manifest) -> bool:
        return manifest.pilot

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"pilot": pilot_columns(ctx.manifest, rows, ctx.found)}

    def markdown(self, t: dict) -> list[str]:
        return pilot_markdown(t) if t.get("pilot") else []
