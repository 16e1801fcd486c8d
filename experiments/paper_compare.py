"""Our Delta_m beside a published table: `python -m experiments.paper_compare --preset P --manifest M`.

Reads our table results/<preset>/<manifest>.json (written by `reproduce.py aggregate`; before any run is
aggregated, the manifest's rows, every one "not run") and the published tables
results/paper/*.json whose `protocol` is the manifest (or the files given with --paper). Per method (our
manifest's multi-task rows and the paper's methods, matched by our row name): our Delta (mean over paired seeds
and its 95 % interval) in the paper's convention, or "not run"; the published value, or "not stored". Then the
Spearman rank correlation between ours and theirs over the methods both have, with a 95 % interval from the
Fisher z-transform (standard error 1.06 / sqrt(n - 3), Fieller, Hartley & Pearson 1957; needs n >= 4). Nothing is
filled in for a method that was not run or whose published value is not stored.

A published table is JSON: {"paper": ..., "table": ..., "protocol": "<manifest>", "convention": "pooled" |
"per_task", "metrics": [...], "methods": {"<our row name>": {"delta": <published value>, "metrics": {...},
"source": {"where": "<URL or repository + path>", "table": "<the table's name there>", "row": "<the row as
printed>"}}, ...}}. Every value stored under results/paper/ carries its source next to it: the tables found there
are loaded with strict=True, which refuses a value without one (a file given with --paper may omit sources; the
comparison then says so).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from scipy import stats

from experiments.layout import Paths

NOT_RUN, NOT_STORED = "not run", "not stored"


def rank_correlation(ours: list[float], theirs: list[float], level: float = 0.95) -> dict:
    """Spearman's rho with a Fisher-z interval (None below 4 methods; rho None below 2 or for constant lists)."""
    n = len(ours)
    out = {"n": n, "rho": None, "low": None, "high": None}
    if n < 2 or len(set(ours)) < 2 or len(set(theirs)) < 2:
        return out
    rho = float(stats.spearmanr(ours, theirs).statistic)
    out["rho"] = rho
    if n >= 4 and abs(rho) < 1:
        z, half = math.atanh(rho), stats.norm.ppf(0.5 + level / 2) * 1.06 / math.sqrt(n - 3)
        out["low"], out["high"] = math.tanh(z - half), math.tanh(z + half)
    return out


SOURCE_KEYS = ("where", "table", "row")


def source_problem(entry: object) -> str | None:
    """Why a published method entry lacks a usable value or its source (None when it has both)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("delta"), (int, float)) \
            or isinstance(entry.get("delta"), bool):
        return "needs a numeric delta"
    src = entry.get("source")
    if not isinstance(src, dict) or any(not isinstance(src.get(k), str) or not src[k].strip() for k in SOURCE_KEYS):
        return f"has no source beside its value (source needs {', '.join(SOURCE_KEYS)})"
    values = entry.get("metrics", {})
    if not isinstance(values, dict) or not all(isinstance(v, (int, float)) for v in values.values()):
        return "has metrics that are not numbers"
    return None


def load_published(path: Path, strict: bool = False) -> dict:
    """A published table; a ValueError naming the file when it is not one (strict: or a value has no source)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read a published table ({e})") from e
    missing = [k for k in ("paper", "protocol", "convention", "methods") if k not in data]
    if missing or data.get("convention") not in ("pooled", "per_task"):
        raise ValueError(f"{path}: a published table needs paper, protocol, convention (pooled | per_task) and "
                         f"methods; missing or wrong: {missing or ['convention']}")
    if not isinstance(data["methods"], dict):
        raise ValueError(f"{path}: methods must map our row names to published values")
    for name, entry in data["methods"].items():
        problem = source_problem(entry)
        if problem and (strict or problem == "needs a numeric delta"):
            raise ValueError(f"{path}: published method {name!r} {problem}")
        extra = set(entry.get("metrics") or {}) - set(data.get("metrics") or [])
        if extra:
            raise ValueError(f"{path}: published method {name!r} has metrics not in the table's list: {sorted(extra)}")
    return data


def compare(table: dict, paper: dict) -> dict:
    """Rows (method, ours, ci, theirs) for the union of our multi-task rows and the paper's methods, and rho."""
    conv = paper["convention"]
    ours: dict[str, dict] = {}
    baselines = set((table.get("baselines") or {}).values())
    for row in table["rows"]:
        if row["name"] in baselines:  # the single-task reference rows
            continue
        d = (row.get("delta_m") or {}).get(conv)
        ours[row["name"]] = {"label": row.get("label", row["name"]), "delta": d}
    names = list(ours) + [m for m in paper["methods"] if m not in ours]
    rows = []
    for name in names:
        d = (ours.get(name) or {}).get("delta")
        theirs = (paper["methods"].get(name) or {}).get("delta")
        rows.append({"method": name, "label": (ours.get(name) or {}).get("label", name),
                     "ours": d["mean"] if d else None, "low": d["low"] if d else None,
                     "high": d["high"] if d else None, "n": d["n"] if d else 0, "theirs": theirs})
    both = [r for r in rows if r["ours"] is not None and r["theirs"] is not None]
    return {"convention": conv, "rows": rows,
            "rank": rank_correlation([r["ours"] for r in both], [r["theirs"] for r in both])}


def format_comparison(preset: str, manifest: str, paper: dict, result: dict) -> str:
    """The comparison as a Markdown table and one line for the rank correlation."""
    conv = result["convention"]
    sign = "Delta_m %, + worse" if conv == "pooled" else "Delta_p %, + better"
    where = f"table {paper['table']}" if paper.get("table") else "table number not verified"
    lines = [f"Ours (preset {preset}, manifest {manifest}) beside {paper['paper']} ({where}); {sign}.", "",
             *([f"Preset {preset} is not the protocol's real-data preset ({paper['protocol']}): its numbers are not "
                "comparable with the published ones.", ""] if preset != paper["protocol"] else []),
             "| Method | ours | ours 95 % interval | seeds | published |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        ours = f"{r['ours']:+.2f}" if r["ours"] is not None else NOT_RUN
        ci = f"[{r['low']:+.2f}, {r['high']:+.2f}]" if r["low"] is not None else "—"
        theirs = f"{r['theirs']:+.2f}" if r["theirs"] is not None else NOT_STORED
        lines.append(f"| {r['label']} | {ours} | {ci} | {r['n'] or '—'} | {theirs} |")
    k = result["rank"]
    if k["rho"] is None:
        lines.append(f"\nRank correlation: not computed ({k['n']} method(s) with both values; needs 2 or more that "
                     "differ).")
    else:
        ci = f"95 % interval [{k['low']:+.2f}, {k['high']:+.2f}]" if k["low"] is not None else \
            "no interval below 4 methods"
        lines.append(f"\nSpearman rank correlation over {k['n']} methods: {k['rho']:+.2f} ({ci}, Fisher z).")
    if not paper["methods"]:
        lines.append(f"No published value is stored for this paper: {paper.get('verification', '')}".rstrip())
    else:
        lines.append("\nWhere each published value was read: " + _sources_text(paper["methods"]) + ".")
        lines += [f"Note on the published {name}: {entry['note']}" for name, entry in paper["methods"].items()
                  if entry.get("note")]
    return "\n".join(lines) + "\n"


def _sources_text(methods: dict) -> str:
    """'Table 3 of URL: ls = row 'LS', ...; source not given: x' (methods grouped by table and place)."""
    groups: dict[str, list[str]] = {}
    for name, entry in methods.items():
        src = entry.get("source")
        if isinstance(src, dict):
            key = f"{src.get('table', '?')} of {src.get('where', '?')}"
            groups.setdefault(key, []).append(f"{name} = row {src.get('row', '?')!r}")
        else:
            groups.setdefault("source not given", []).append(name)
    return "; ".join(f"{key}: {', '.join(names)}" for key, names in groups.items())


def unrun_table(configs_dir: Path, manifest: str) -> dict:
    """Our table before any run is aggregated: the manifest's rows, none with a Delta (all "not run")."""
    from experiments.manifest import find_manifests

    (m,) = find_manifests(Path(configs_dir) / "experiments", [manifest])
    return {"unrun": True, "baselines": dict(m.baselines or {}),
            "rows": [{"name": r.name, "label": r.label} for r in m.rows]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True)
    p.add_argument("--manifest", required=True, help="e.g. cityscapes2-mtan or cityscapes2-hps")
    p.add_argument("--paper", type=Path, action="append", help="published table(s) (default: results/paper/*.json "
                                                              "whose protocol is the manifest)")
    p.add_argument("--results-dir", type=Path, default=Paths.results)
    p.add_argument("--configs-dir", type=Path, default=Paths.configs, help="the manifests (experiments/)")
    p.add_argument("--out", type=Path, help="also write the comparison(s) as Markdown here")
    args = p.parse_args(argv)
    ours_path = args.results_dir / args.preset / f"{args.manifest}.json"
    try:
        table = json.loads(ours_path.read_text()) if ours_path.is_file() else \
            unrun_table(args.configs_dir, args.manifest)
        if args.paper:
            papers = [load_published(f) for f in args.paper]
        else:
            found = [load_published(f, strict=True) for f in sorted((args.results_dir / "paper").glob("*.json"))
                     if '"protocol"' in f.read_text()]
            papers = [d for d in found if d["protocol"] == args.manifest]
    except (ValueError, json.JSONDecodeError) as e:  # ConfigError (an unknown manifest) is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not papers:
        print(f"error: no published table in {args.results_dir / 'paper'} has protocol {args.manifest!r}",
              file=sys.stderr)
        return 1
    text = "\n".join(format_comparison(args.preset, args.manifest, d, compare(table, d)) for d in papers)
    if table.get("unrun"):
        text = (f"No table of ours at {ours_path} (no run aggregated yet): every row of manifest {args.manifest} "
                f"shows {NOT_RUN!r}.\n\n") + text
    print(text, end="")
    if args.out:
        from infra.atomic import write_text

        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
