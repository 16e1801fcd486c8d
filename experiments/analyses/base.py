"""The analysis protocol: what one kind of table (sweep, benchmark, claims, Table 2 ...) adds to a manifest's table.

aggregate (experiments/aggregate.py) builds the common table of every manifest: one row per manifest row with
its seeds, identities, commands and the mean ± std of each column's metric over seeds. Everything beyond that
is an analysis, one module in experiments/analyses/ registered with `@register("kind")`. A manifest declares
the analyses it wants by the keys it has (`declared`; e.g. `x:` declares the sweep, `baselines:` the
benchmark), or by name in its `analyses:` list. For each declared analysis, in registration order:

- `row(ctx, row, entry)` -> keys added to the row's entry of the table (JSON), while the rows are built;
- `columns(ctx, rows)` -> keys added to the table (JSON), once every row is built;
- `figures(ctx, t, out_dir)` -> the images it draws (written before the JSON, so it may link them in `t`);
- `outputs(ctx, t, out_dir)` -> other files it writes beside the table (e.g. the one-paragraph verdict
  summary the README includes), after the figures;
- `markdown(t)` -> lines of its own section, below the common table, above the provenance;
- `method_column(t)` -> (heading, cell(row)) replacing the common table's "Method" column (the sweep's x);
- `document(t, sections)` -> the whole Markdown file, for a kind whose table is not the common one (the
  benchmark, Table 2); `sections` are the other analyses' lines, to place above its provenance.

Every hook is optional (the defaults add nothing). All output must depend only on the run records and the
manifest, never on the machine or the time: the committed results regenerate byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from experiments.layout import Paths
    from experiments.manifest import Manifest, Row
    from experiments.records import Record


@dataclass
class RowContext:
    """What aggregate knows about one manifest row when its entry is built."""

    row: Row
    config: Any  # the row's resolved config (engine.config.Config) on the preset
    planned: list  # the planned runs (experiments.plan) of its seeds that can be planned now
    found: list[Record]  # its run records, by seed
    weights: dict[str, float] | None  # mean over seeds of the final effective task weights


@dataclass
class Context:
    """What every hook sees: the manifest, the preset, all run records and the paper's numbers."""

    manifest: Manifest
    preset: str
    records: dict[str, Record]  # identity -> Record (every record of the preset)
    paper: dict  # results/paper/kendall2018.json
    seeds: tuple[int, ...] | None  # --seeds, or None: the manifest's
    paths: Paths
    found: dict[str, list[Record]] = field(default_factory=dict)  # row name -> its records (filled as rows are built)


class Analysis:
    """One kind of table. Subclass it in experiments/analyses/<kind>.py and register it with `@register("kind")`."""

    name: str = ""  # set by @register

    def declared(self, manifest: Manifest) -> bool:
        """Whether `manifest` asks for this analysis by its own keys (the `analyses:` list always does)."""
        return False

    def row(self, ctx: Context, rc: RowContext, entry: dict) -> dict:
        return {}

    def columns(self, ctx: Context, rows: list[dict]) -> dict:
        return {}

    def figures(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        return []

    def outputs(self, ctx: Context, t: dict, out_dir: Path) -> list[Path]:
        return []

    def markdown(self, t: dict) -> list[str]:
        return []

    def method_column(self, t: dict) -> tuple[str, Callable[[dict], str]] | None:
        return None

    def document(self, t: dict, sections: list[str]) -> str | None:
        return None
