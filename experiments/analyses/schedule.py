"""The comparison protocol's schedule pilot (declared by `schedule:`): every row at each length, and the
doubling rule read on the primary claims (experiments/protocol.py)."""

from __future__ import annotations

from experiments import protocol
from experiments.analyses import Analysis, Context, register


@register("schedule", order=60)
class Schedule(Analysis):
    def declared(self, manifest) -> bool:
        return bool(manifest.schedule)

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"schedule": protocol.schedule_columns(ctx.manifest, ctx.found, {r["name"]: r["tasks"] for r in rows})}

    def markdown(self, t: dict) -> list[str]:
        return protocol.schedule_markdown(t["schedule"]) if t.get("schedule") else []
