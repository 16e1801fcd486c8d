"""The comparison protocol's claims table (declared by `primary:` without `schedule:`): the pre-registered
primary claims and the secondary family, each Holm-corrected, TOST for equivalence, the fixed verdict
vocabulary, and whether the schedule has settled (claims.json schema, docs/comparisons.md).
"""

from __future__ import annotations

from pathlib import Path

from engine.config import load_config
from experiments import protocol as proto
from experiments.aggregate import aggregate
from experiments.analyses import Analysis, Context, register
from experiments.layout import Paths
from experiments.manifest import Manifest, find_manifests
from experiments.protocol import SCHEDULE_RULE, SELECTION_RULE, claims_protocol
from experiments.records import Record
from infra.atomic import write_text


def protocol_claims(manifest: Manifest, preset: str, records: dict[str, Record], paper: dict, seeds, paths: Paths,
                    rows: list[dict], found_by_row: dict[str, list[Record]]) -> dict:
    """The `protocol` object of a protocol table (claims.json schema, docs/comparisons.md) and its comparisons."""
    iterations = sorted({r.data.get("iterations") for found in found_by_row.values() for r in found} - {None})
    pilot = None
    if manifest.settled_by:
        pilot_manifest = find_manifests(manifest.path.parent, [manifest.settled_by])[0]
        pilot = aggregate(pilot_manifest, preset, records, paper, None, paths).get("schedule")
    settled = bool(pilot and pilot["settled_iterations"] and iterations == [pilot["settled_iterations"]])
    splits = {(r.data.get("selection_split"), r.data.get("score_split")) for f in found_by_row.values() for r in f}
    selection_split, score_split = sorted(splits, key=str)[0] if len(splits) == 1 else (None, None)
    if not splits:  # no run recorded yet: the splits the preset's runs will use
        data = load_config([paths.configs / f"{preset}.yaml"]).data
        selection_split, score_split = data.val_split, data.test_split or data.val_split
    grid = manifest.lr_grid
    protocol = {
        "iterations": iterations[0] if len(iterations) == 1 else iterations or None,
        "schedule_rule": SCHEDULE_RULE, "settled": settled, "pilot": pilot,
        "selection_split": selection_split, "score_split": score_split,
        "selection_rule": SELECTION_RULE,
        "lr_grid": {"values": list(grid.values), "seeds": list(grid.seeds)} if grid else None,
        "seeds": sorted({s for r in rows for s in r["seeds"]}),
    }
    tasks = {r["name"]: r["tasks"] for r in rows}
    return {"protocol": protocol,
            "comparisons": claims_protocol(manifest, found_by_row, tasks, settled, protocol["iterations"]
                                           if isinstance(protocol["iterations"], int) else None)}


@register("protocol-claims", order=70)
class ProtocolClaims(Analysis):
    def declared(self, manifest) -> bool:
        return bool(manifest.primary) and not manifest.schedule

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return protocol_claims(ctx.manifest, ctx.preset, ctx.records, ctx.paper, ctx.seeds, ctx.paths, rows,
                               ctx.found)

    def outputs(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        """`<manifest>-summary.md`: the one-paragraph verdict summary the README includes."""
        out = out_dir / f"{ctx.manifest.name}-summary.md"
        write_text(out, proto.verdict_paragraph(t))
        return [out]

    def markdown(self, t: dict) -> list[str]:
        return proto.claims_markdown(t) if t.get("protocol") else []
