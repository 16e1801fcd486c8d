"""Figures: learned sigma^2 and effective task weights over training (the paper's Appendix B), and Figure 2.

    python -m experiments.plots curves runs/demo/metrics.jsonl [--out curves.png]

Drawn with matplotlib's object API (no pyplot), so importing or calling this never touches a display.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from experiments import statistics as st
from infra.atomic import atomic_write_bytes
from tasks import TASK_SPECS, TASKS

CURVE_PREFIXES = ("sigma2/", "weight/")
RUN_STYLES = ("-", "--", ":", "-.")


def read_curves(path: Path, prefixes: tuple[str, ...] = CURVE_PREFIXES) -> dict[str, list[float]]:
    """Series from a run's metrics.jsonl: {"step": [...], "sigma2/<task>": [...], "weight/<task>": [...]}.

    Only lines holding at least one key with a wanted prefix count (validation lines do not). A last
    line cut short by a crash is skipped; a broken line anywhere else is an error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                continue
            raise ValueError(f"{path}:{i}: not a JSON line ({e})") from e
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{i}: expected a JSON object with a 'step' key")
        rows.append(row)
    keys = sorted({k for r in rows for k in r if k.startswith(prefixes)})
    rows = [r for r in rows if any(k in r for k in keys)]
    curves = {"step": [r["step"] for r in rows]}
    for k in keys:
        curves[k] = [math.nan if r.get(k) is None else float(r[k]) for r in rows]  # null: a NaN metric
    return curves


def thin(curves: dict[str, list], max_points: int = 200) -> dict[str, list]:
    """Keep at most `max_points` evenly spaced entries of every series, always the first and the last."""
    n = len(curves.get("step", []))
    if n <= max_points:
        return {k: list(v) for k, v in curves.items()}
    keep = sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})
    return {k: [v[i] for i in keep] for k, v in curves.items()}


def plot_uncertainty(runs: dict[str, dict[str, list]], out: Path, title: str = "") -> Path:
    """Appendix B figure: sigma^2 and effective weight per task against the iteration, log y axes.

    `runs` maps a label (e.g. "seed0") to the curves of one run (see `read_curves`); runs share
    colours per task and differ in line style.
    """
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    panels = (("sigma2/", "task uncertainty $\\sigma^2$"), ("weight/", "effective task weight"))
    for ax, (prefix, label) in zip(axes, panels):
        drawn = False
        for r, (run, curves) in enumerate(runs.items()):
            style = RUN_STYLES[r % len(RUN_STYLES)]
            for task in TASKS:
                key = prefix + task
                if key not in curves:
                    continue
                ax.plot(curves["step"], curves[key], style, color=f"C{TASKS.index(task)}", linewidth=1.2,
                        label=TASK_SPECS[task].display if r == 0 else None)  # colours: tasks; styles: runs
                drawn = True
            if len(runs) > 1:
                ax.plot([], [], style, color="grey", label=run)
        if drawn:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {prefix}* values logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, out, dpi=110)


def plot_sweep(table: dict, out: Path) -> Path:
    """A sweep (Figure 2): each metric against x, ours (left) beside the paper's (right).

    `table` is an aggregated sweep (experiments.aggregate.aggregate): "columns", "rows" (each with
    "x", "x_learned", "ours" {metric: summary or None}, optionally "ours_paper_units" (drawn instead:
    pixel errors in the paper's units) and "paper" {metric: value or None}), "x" and "title". A learned
    row is a star at its learned x (ours) and a dotted line at its value (both sides; the paper does
    not report its learned weights).
    """
    columns = table["columns"]
    points = [r for r in table["rows"] if not r["x_learned"]]
    learned = [r for r in table["rows"] if r["x_learned"]]
    fig = Figure(figsize=(10, 3.4 * len(columns)), layout="constrained")
    axes = fig.subplots(len(columns), 2, squeeze=False)
    missing = sum(not p["seeds"] for p in points)  # gaps are runs not made yet, not values
    for i, col in enumerate(columns):
        metric = col["metric"]
        paper_size = (table.get("units") or {}).get("paper_size")
        ylabel = col["title"]
        if paper_size and "(px)" in ylabel:
            ylabel = ylabel.replace("(px)", f"(px at {paper_size[0]}x{paper_size[1]})")
        for side, ax in zip(("ours", "paper"), axes[i]):
            key = "ours_paper_units" if side == "ours" and all("ours_paper_units" in r for r in table["rows"]) \
                else side
            # A missing point is NaN, which breaks the line there: nothing is drawn across a gap.
            pts = sorted((p["x"], *_value(p[key].get(metric))) for p in points)
            pts = [(x, math.nan if m is None else m, s or 0.0) for x, m, s in pts]
            found = [pt for pt in pts if not math.isnan(pt[1])]
            if found:
                ax.plot([x for x, _, _ in pts], [m for _, m, _ in pts], "-", color="tab:blue")
                bars = any(h for _, _, h in found)
                ax.errorbar(*zip(*found), fmt="o", color="tab:blue", capsize=3,
                            label="fixed weights: mean, 95 % CI over seeds" if bars else "fixed weights")
            drawn = False
            for r in learned:
                lm, _ = _value(r[key].get(metric))
                if lm is not None:
                    ax.axhline(lm, color="tab:red", linestyle=":", linewidth=1.2, label=r["label"])
                    if side == "ours" and r["x"] is not None:
                        ax.plot([r["x"]], [lm], "*", color="tab:red", markersize=14)
                    drawn = True
            if not found and not drawn:
                ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.legend(fontsize=7)
            ax.set_xlim(-0.03, 1.03)
            ax.set_xlabel(table["x"]["label"])
            ax.set_ylabel(ylabel)
            title = f"ours ({table['preset']})" if side == "ours" else "paper"
            if side == "ours" and missing:
                title += f": {missing} of {len(points)} points not run yet"
            ax.set_title(title, fontsize=9)
            ax.grid(True, alpha=0.3)
    fig.suptitle(table["title"])
    return _save(fig, out, dpi=100)


def plot_delta_m(table: dict, out: Path) -> Path:
    """The benchmark's Delta_m (pooled, positive = worse) per method with its 95 % interval, best first."""
    return _save(delta_m_figure(table), out, 100)


def delta_m_figure(table: dict) -> Figure:
    """plot_delta_m's figure."""
    rows = [r for r in table["rows"] if r.get("delta_m")]
    rows.sort(key=lambda r: r["delta_m"]["pooled"]["mean"])
    # constrained layout sizes the margins to the labels: the title and axis labels are never cut off
    fig = Figure(figsize=(7.2, 2.0 + 0.28 * len(rows)), layout="constrained")
    ax = fig.add_subplot()
    kinds = {"loss": ("C0", "loss-space method"), "gradient": ("C1", "gradient-space method")}
    shown = set()
    for i, r in enumerate(rows):
        d = r["delta_m"]["pooled"]
        err = None if d["low"] is None else [[d["mean"] - d["low"]], [d["high"] - d["mean"]]]
        colour, label = kinds["loss" if r["kind"] == "loss" else "gradient"]
        ax.errorbar(d["mean"], i, xerr=err, fmt="o", color=colour, capsize=3,
                    label=None if label in shown else f"{label}: mean, 95 % CI over paired seeds")
        shown.add(label)
    ax.axvline(0.0, color="0.5", lw=0.8, label="single-task baselines (0 %)")
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("Delta_m (%) against the single-task baselines,\npooled over metrics (lower is better)")
    ax.set_ylabel("method")
    ax.grid(True, axis="x", alpha=0.3)
    if rows:  # below the axes, where it hides no method
        fig.legend(loc="outside lower center", fontsize=8)
    ax.set_title(f"{table['title']} on {table['preset']}", fontsize=10)
    return fig


def plot_pairwise(table: dict, out: Path) -> Path:
    """The protocol benchmark's pairwise matrix: mean per-task Delta_p difference (row minus column, pp), a dot
    where the difference survives Holm across every pair."""
    pw = table["pairwise"]
    names = [r["name"] for r in table["rows"] if r.get("delta_m")]
    index = {n: i for i, n in enumerate(names)}
    matrix = np.full((len(names), len(names)), np.nan)
    fig = Figure(figsize=(2.0 + 0.32 * len(names), 1.6 + 0.32 * len(names)))
    ax = fig.add_subplot()
    if len(names) < 2:  # nothing to pair yet (an empty matrix would make a singular axis)
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no two rows with a Δm yet", ha="center", va="center", fontsize=8)
        return _save(fig, out, 100)
    for p in pw["pairs"]:
        if p["difference"] is None:
            continue
        i, j, m = index[p["a"]], index[p["b"]], p["difference"]["mean"]
        matrix[i, j], matrix[j, i] = m, -m
        if p["verdict"] in ("supported", "worse at this budget"):
            ax.plot([j, i], [i, j], "k.", ms=4)
    bound = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
    image = ax.imshow(matrix, cmap="RdBu", vmin=-bound, vmax=bound)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(image, ax=ax, label="Δp row − column (pp; + = row better)")
    ax.set_title(f"{table['title']}: pairwise Δp, dots = Holm-significant ({pw['significant']}/{len(pw['pairs'])})",
                 fontsize=8)
    fig.tight_layout()
    return _save(fig, out, 100)


def plot_weight_diagnostic(table: dict, out: Path) -> Path:
    """Per-task Delta_p against each loss-space row's total final loss weight (the step-size diagnostic)."""
    d = table["weight_diagnostic"]
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.add_subplot()
    for p in d["points"]:
        ax.plot(p["total_weight"], p["delta_p"], "o", color="C0")
        ax.annotate(p["name"], (p["total_weight"], p["delta_p"]), fontsize=6, xytext=(3, 2),
                    textcoords="offset points")
    rho = "—" if d["spearman_rho"] is None else f"{d['spearman_rho']:+.2f}"
    ax.set_xlabel("total final loss weight Σw")
    ax.set_ylabel("per-task Δp % vs single-task (+ = better)")
    ax.set_title(f"{table['title']}: Δp vs total weight (Spearman ρ {rho})", fontsize=8)
    fig.tight_layout()
    return _save(fig, out, 100)


def _save(fig: Figure, out: Path, dpi: int) -> Path:
    """Write the PNG atomically; no software version in its metadata, so the bytes depend only on the data."""
    out = Path(out)
    atomic_write_bytes(out, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata={"Software": None}))
    return out


def _value(v) -> tuple[float | None, float | None]:
    """(mean, half-width of its 95 % Student-t interval over seeds) of an aggregated summary dict (None with
    fewer than two seeds), or (value, None) for a plain paper number, or (None, None)."""
    if v is None:
        return None, None
    if isinstance(v, dict):
        return v["mean"], st.t_half_width(v.get("std"), v.get("n", 0))
    return float(v), None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curves", help="sigma^2 and effective weights over training from a metrics.jsonl")
    c.add_argument("log", type=Path, help="metrics.jsonl, or a run directory holding one")
    c.add_argument("--out", type=Path, help="PNG to write (default: uncertainty.png beside the log)")
    args = p.parse_args(argv)
    log = args.log / "metrics.jsonl" if args.log.is_dir() else args.log
    out = args.out or log.parent / "uncertainty.png"
    try:
        curves = read_curves(log)
    except (OSError, ValueError) as e:  # missing or broken log: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(plot_uncertainty({"run": curves}, out, title=str(log.parent)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
