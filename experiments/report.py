"""Reports: an aggregated table as JSON and Markdown, plus the figures of the analyses its manifest declares.

Everything written depends only on the run records and the manifests, never on the machine or the
time, so `reproduce.py aggregate` on a fresh clone rewrites the committed files byte for byte. A
table is never overwritten by one that holds fewer results: the missing runs are named instead.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from experiments.aggregate import aggregate, load_paper, results_of
from experiments.layout import Paths
from experiments.manifest import Manifest
from experiments.records import Record, load_records, read_json
from infra.atomic import atomic_write_bytes, write_json
from tasks import METRICS


class FewerResultsError(ValueError):
    """Aggregation would replace a table with one holding fewer results."""


def fmt_cell(summary: dict | None, digits: int, applicable: bool = True, seeds: int | None = None) -> str:
    """'mean ± std' (std only over several seeds), 'missing' without results, '—' where not applicable,
    'n/a (why)' where every seed measured NaN. ' (n=k)' follows a mean taken over fewer than the row's
    `seeds` (the others measured NaN)."""
    if not applicable:
        return "—"
    if summary is None:
        return "missing"
    if summary["mean"] is None:
        return f"n/a ({summary['missing']['reason']})" if summary.get("missing") else "n/a"
    text = f"{summary['mean']:.{digits}f}"
    text += f" ± {summary['std']:.{digits}f}" if summary["std"] is not None else ""
    n = summary.get("n")
    return text + (f" (n={n})" if seeds is not None and n is not None and n < seeds else "")


def missing_lines(t: dict) -> list[str]:
    """Below a table: every mean taken over fewer seeds than its row has, with the seeds and the reason."""
    lines = []
    for row in t["rows"]:
        for col in t["columns"]:
            s = (row.get("ours") or {}).get(col["metric"])
            if s and s.get("missing"):
                m = s["missing"]
                seeds = ",".join(map(str, m["seeds"]))
                lines.append(f"- **{row['name']}**, {col['title']}: n/a on seed{'s' if len(m['seeds']) > 1 else ''} "
                             f"{seeds} ({m['reason']}); shown over n={s['n']} seed{'' if s['n'] == 1 else 's'}")
    if not lines:
        return []
    return ["", "Values not measured (NaN in the run's metrics, shown as n/a; each mean is over the other seeds):",
            "", *lines]


def fmt_paper(value, applicable: bool = True) -> str:
    return "—" if not applicable or value is None else f"{value:g}"


def seeds_cell(row: dict) -> str:
    text = ",".join(map(str, row["seeds"])) or "none"
    return text + (f" (missing {','.join(map(str, row['missing_seeds']))})" if row["missing_seeds"] else "")


def _size(size) -> str:
    return f"{size[0]}x{size[1]}"


def column_title(t: dict, col: dict) -> str:
    """The column's title; a pixel error shown in the paper's units says at which frame size."""
    spec, paper_size = METRICS[col["metric"]], (t.get("units") or {}).get("paper_size")
    return f"{spec.label} (px at {_size(paper_size)})" if paper_size and spec.unit == "px" else col["title"]


def units_sentence(t: dict) -> str | None:
    """Which units the table's pixel errors are in and which conversion was applied (None: no pixel column)."""
    u = t.get("units")
    px = [METRICS[c["metric"]] for c in t["columns"] if METRICS[c["metric"]].unit == "px"]
    if not u or not px:
        return None
    labels = [m.label for m in px]
    names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
    sky = (" Sky pixels count in the depth errors, at disparity 0 (the paper's zero inverse depth for the sky)."
           if any(m.task == "depth" for m in px) else "")
    if u["paper_size"] is None:
        sizes = ", ".join(_size(m["size"]) if m["size"] else "the files' resolution" for m in u["measured"])
        return f"Units: {names} in pixels at the training resolution ({sizes}), as measured (not converted).{sky}"
    paper_w = u["paper_size"][1]
    parts = []
    for m in u["measured"]:
        if m["factor"] == 1:
            parts.append(f"measured at {_size(m['size'])}, no conversion")
        elif m["factor"] is not None:
            parts.append(f"measured at {_size(m['size'])} and multiplied by {paper_w} / {m['size'][1]} = "
                         f"{m['factor']:g}")
    text = (f"Units: {names} in pixels at {_size(u['paper_size'])}, the paper's resolution for this table, so ours "
            "and the paper's compare directly")
    if parts:
        text += f"; ours were {'; '.join(parts)}"
    text += (" (a length in pixels scales with the frame width; the JSON keeps the measured values under `ours`, "
             "the shown ones under `ours_paper_units`).")
    if any(m["factor"] is None for m in u["measured"]):
        text += (" Rows marked † were measured at the files' own resolution, whose width the run records do not "
                 "hold, and are shown as measured.")
    return text + sky


def cell_or_dash(summary: dict | None, digits: int = 2) -> str:
    """`fmt_cell`, or '—' without a summary."""
    return fmt_cell(summary, digits) if summary is not None else "—"


def markdown(t: dict, analyses=()) -> str:
    """The table as Markdown: our mean ± std beside the paper's number for each metric, then each analysis's
    section, then provenance; or the document of an analysis whose table is its own (experiments/analyses/)."""
    sections = [line for a in analyses for line in a.markdown(t)]
    for a in analyses:
        text = a.document(t, sections)
        if text is not None:
            return text
    second = next((c for c in (a.method_column(t) for a in analyses) if c is not None),
                  ("Method", lambda row: row["method"]))
    head = ["Row", second[0]]
    for col in t["columns"]:
        head += [f"{column_title(t, col)} ours"] + (["paper"] if col["paper"] else [])
    head.append("Seeds")
    paper = f" Paper: {t['paper_caption'].rstrip('.')}." if t["paper_caption"] else ""
    lines = [f"## {t['title']} on preset {t['preset']}", ""]
    if t["description"]:
        lines += [t["description"], ""]
    lines += [f"Generated by `{t['generated_by']}` from the run records in results/{t['preset']}/runs/. "
              f"Ours: mean ± {t['std']}; 'missing': not run yet; '—': task not trained.{paper}", ""]
    if units_sentence(t):
        lines += [units_sentence(t), ""]
    if t.get("image"):
        lines += [f"![{t['manifest']}]({t['image']})", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t["rows"]:
        cells = [row["label"], second[1](row)]
        shown = row.get("ours_paper_units", row["ours"])
        unconverted = t.get("units", {}).get("paper_size") and row.get("units", {}).get("factor") is None
        for col in t["columns"]:
            ok = col["metric"] in row["ours"]
            cell = fmt_cell(shown.get(col["metric"]), col["digits"], ok, len(row["seeds"]))
            if unconverted and ok and METRICS[col["metric"]].unit == "px":
                cell += " †"
            cells.append(cell)
            if col["paper"]:
                cells.append(fmt_paper(row["paper"].get(col["metric"]), ok))
        cells.append(seeds_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + missing_lines(t) + sections + provenance_lines(t["rows"])) + "\n"


def provenance_lines(rows: list[dict]) -> list[str]:
    """One line per row: seeds, identities, git commits and the exact command."""
    lines = ["", "### Provenance", ""]
    for row in rows:
        commits = sorted({c for c in row["git_commit"].values() if c})
        seed = next(iter(row["command"]), None)
        if seed is not None:
            cmd = shlex.join(row["command"][seed])
        elif row["planned_command"]:
            cmd = shlex.join(row["planned_command"]) + "  (not run yet)"
        else:
            cmd = "(waits for other runs' records: its lr grid on val, or the run it takes its weights from)"
        ids = ", ".join(f"seed{s}: {h}" for s, h in row["identity"].items()) or "—"
        lines.append(f"- **{row['name']}**: seeds {seeds_cell(row)}; identity {ids}; git commit "
                     f"{', '.join(commits) or '—'}; command (seed {seed if seed is not None else 0}): `{cmd}`")
    return lines


def check_not_fewer(t: dict, path: Path) -> None:
    """Refuse to replace `path` by `t` when `t` holds fewer results; name the runs it would lose."""
    if not path.exists():
        return
    old, new = results_of(read_json(path)), results_of(t)
    if len(new) < len(old):
        lost = sorted(f"{row} seed {seed} [{identity}]" for (row, seed), identity in old.items()
                      if new.get((row, seed)) != identity)
        raise FewerResultsError(
            f"{path} holds {len(old)} results but the records give {len(new)}; not overwritten. Missing: "
            f"{'; '.join(lost)}. Their records (results/{t['preset']}/runs/<identity>.json) are absent or no "
            "longer match the manifest and preset; restore or retrain them, or pass --allow-fewer")


def write_report(manifest: Manifest, preset: str, paths: Paths = Paths(), seeds: tuple[int, ...] | None = None,
                 records: dict[str, Record] | None = None, paper: dict | None = None,
                 allow_fewer: bool = False) -> list[Path]:
    """Aggregate `manifest` on `preset` and write results/<preset>/<manifest>.{json,md} (+ .png, curves)."""
    from experiments.analyses import Context, declared

    records = load_records(paths, preset) if records is None else records
    paper = load_paper() if paper is None else paper
    t = aggregate(manifest, preset, records, paper, seeds, paths)
    plugins = declared(manifest)
    ctx = Context(manifest, preset, records, paper, seeds, paths)
    out_dir = paths.results / preset
    json_path = out_dir / f"{manifest.name}.json"
    if not allow_fewer:
        check_not_fewer(t, json_path)
    written = []
    for analysis in plugins:
        written += analysis.figures(ctx, t, out_dir)
        written += analysis.outputs(ctx, t, out_dir)
    write_json(json_path, t)
    md = out_dir / f"{manifest.name}.md"
    atomic_write_bytes(md, lambda f: f.write(markdown(t, plugins).encode()))
    return [*written, json_path, md]
