"""The paper's claims as paired comparisons of rows (declared by `claims:`, unless the manifest's primary claims
make it a protocol table: experiments/analyses/protocol_claims.py); verdicts from experiments/claims.py."""

from __future__ import annotations

from experiments.analyses import Analysis, Context, register
from experiments.claims import RULE, claims_columns, claims_markdown


@register("claims", order=50)
class Claims(Analysis):
    def declared(self, manifest) -> bool:
        # a manifest with primary endpoints is judged by the protocol (Holm, TOST) or only defines the pilot's
        # endpoints: no uncorrected per-interval verdicts for it
        return bool(manifest.claims) and not manifest.primary

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {"claims": claims_columns(ctx.manifest, rows, ctx.found), "claims_rule": RULE}

    def markdown(self, t: dict) -> list[str]:
        return claims_markdown(t) if t.get("claims") else []
