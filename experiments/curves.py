"""Training curves: the training losses and the validation metrics over training, per run and per row.

    python -m experiments.curves runs/demo [--out runs/demo/curves.png]        # one run
    python reproduce.py curves table1 --preset synthetic-cpu [--out DIR]        # every run and row

Read from each run's metrics.jsonl (the training losses are not kept in the run records; validation
curves fall back to the record's `val_curves` when the run directory is not on this machine). A row's
figure draws the mean over its seeds at the steps every seed logged, with a band of one sample standard
deviation (no band for one seed). Missing values (a metric logged as null, e.g. the IoU of a class the
validation frames lack) leave a gap. Figures go to runs/<preset>/curves/ (not committed) unless --out.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from matplotlib.figure import Figure

from experiments.layout import ROOT, Paths
from experiments.plots import _save
from tasks import METRICS, TASK_SPECS, TASKS

LOSS_PREFIX = "loss/"
VAL_PREFIX = "val/"


def read_log(path: Path) -> dict[str, dict[int, float]]:
    """{key: {step: value}} of every number in a metrics.jsonl; null -> NaN. A last line cut short by a
    crash is skipped; another broken line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    lines = path.read_text().splitlines()
    series: dict[str, dict[int, float]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):
                continue
            raise ValueError(f"{path}:{i}: not a JSON line ({e})") from e
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{i}: expected a JSON object with an integer 'step'")
        for k, v in row.items():
            if k != "step" and (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))):
                series.setdefault(k, {})[row["step"]] = math.nan if v is None else float(v)
    return series


def from_record(record: dict) -> dict[str, dict[int, float]]:
    """The series a run record keeps (validation curves and learned weights), keyed as in metrics.jsonl."""
    out: dict[str, dict[int, float]] = {}
    for name, prefix in (("val_curves", VAL_PREFIX), ("curves", "")):
        curves = record.get(name) or {}
        steps = curves.get("step") or []
        for k, values in curves.items():
            if k != "step":
                out[prefix + k] = {s: math.nan if v is None else float(v) for s, v in zip(steps, values)}
    for k, v in (record.get("metrics") or {}).items():  # the final validation
        if k in METRICS and record.get("step"):
            out.setdefault(VAL_PREFIX + k, {})[int(record["step"])] = math.nan if v is None else float(v)
    return out


def _panels(runs: list[dict[str, dict[int, float]]]) -> list[tuple[str, list[str]]]:
    """(y label, keys) per panel: the training losses (one panel), then each headline validation metric."""
    losses = sorted({k for r in runs for k in r if k.startswith(LOSS_PREFIX)},
                    key=lambda k: (k == "loss/total", TASKS.index(k[5:]) if k[5:] in TASKS else 0, k))
    panels = [("training loss (mean per logging interval)", losses)] if losses else []
    for key, spec in METRICS.items():
        if any(VAL_PREFIX + key in r for r in runs):
            panels.append((f"validation {spec.title}", [VAL_PREFIX + key]))
    return panels


def _label(key: str) -> str:
    name = key.split("/", 1)[1]
    if key.startswith(LOSS_PREFIX):
        if name not in TASK_SPECS:
            return "total (weighted sum)" if name == "total" else name
        unit = "cross-entropy, nats" if TASK_SPECS[name].kind == "classification" else "L1, px"
        return f"{TASK_SPECS[name].display} ({unit})"
    return METRICS[name].label if name in METRICS else name


def mean_band(runs: list[dict[int, float]]) -> tuple[list[int], list[float], list[float]]:
    """(steps every run logged, mean, sample sd (0 for one run)) over the runs; NaN where any run is NaN."""
    steps = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    means, sds = [], []
    for s in steps:
        values = [r[s] for r in runs]
        if any(math.isnan(v) for v in values):
            means.append(math.nan)
            sds.append(math.nan)
            continue
        means.append(statistics.fmean(values))
        sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return steps, means, sds


def plot_curves(runs: dict[str, dict[str, dict[int, float]]], out: Path, title: str, band: bool = False) -> Path:
    """One panel of training losses and one per validation metric, against the iteration.

    `runs` maps a label (a seed) to a run's series (read_log). band=False: one line per run (line styles)
    and key (colours). band=True: the mean over runs with a one-sd band (a manifest row over its seeds).
    """
    series = list(runs.values())
    panels = _panels(series)
    if not panels:
        raise ValueError(f"{title}: no training loss or validation metric logged")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    styles = ("-", "--", ":", "-.")
    for ax, (ylabel, keys) in zip(axes, panels):
        for c, key in enumerate(keys):
            colour = f"C{c}"
            have = [r[key] for r in series if key in r]
            if band:
                steps, mean, sd = mean_band(have)
                marker = "o" if len(steps) < 3 else None
                ax.plot(steps, mean, "-", color=colour, marker=marker,
                        label=f"{_label(key)}: mean of {len(have)} seed{'s' * (len(have) > 1)}")
                if len(have) > 1:
                    ax.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                    color=colour, alpha=0.2, linewidth=0, label="± 1 sd over seeds" if c == 0 else None)
            else:
                for r, (name, run) in enumerate(runs.items()):
                    if key in run:
                        steps = sorted(run[key])
                        ax.plot(steps, [run[key][s] for s in steps], styles[r % len(styles)], color=colour,
                                marker="o" if len(steps) < 3 else None,
                                label=_label(key) + (f" ({name})" if len(runs) > 1 else ""))
        if keys and keys[0].startswith(LOSS_PREFIX):
            positive = all(v > 0 for r in series for k in keys for v in r.get(k, {}).values() if not math.isnan(v))
            if positive:
                ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out, dpi=100)


def write_curves(preset: str, manifests, paths: Paths = Paths(), seeds=None, out: Path | None = None) -> list[Path]:
    """A figure per run (<out>/runs/<identity>.png) and per manifest row (<out>/<manifest>/<row>.png) of
    every run found on this machine (or in a record); rows without any are named and skipped."""
    from experiments.plan import runs_of
    from experiments.records import load_records

    out = Path(out) if out else paths.runs / preset / "curves"
    records = load_records(paths, preset)
    written, missing = [], []
    for manifest in manifests:
        by_row: dict[str, list] = {}
        for run in runs_of(manifest, preset, seeds, paths, records=records, pending=[]):
            by_row.setdefault(run.row.name, []).append(run)
        for row in manifest.rows:
            found = {}
            for run in by_row.get(row.name, []):
                log = (run.run_dir if run.run_dir.is_absolute() else ROOT / run.run_dir) / "metrics.jsonl"
                if log.is_file():
                    found[f"seed {run.seed}"] = read_log(log)
                elif run.identity in records:
                    found[f"seed {run.seed}"] = from_record(records[run.identity].data)
                else:
                    continue
                if not _panels([found[f"seed {run.seed}"]]):
                    found.pop(f"seed {run.seed}")  # logged neither a training loss nor a validation metric
                    continue
                target = out / "runs" / f"{run.identity}.png"
                if target not in written:
                    written.append(plot_curves({f"seed {run.seed}": found[f"seed {run.seed}"]}, target,
                                               f"{manifest.name}/{row.name} seed {run.seed} [{run.identity}]"))
            if not found:
                missing.append(f"{manifest.name}/{row.name}")
                continue
            written.append(plot_curves(found, out / manifest.name / f"{row.name}.png",
                                       f"{row.label} ({manifest.name}, {preset})", band=True))
    if missing:
        print(f"note: {len(missing)} row(s) have no run with a training loss or validation metric on this machine "
              f"or in a record: {', '.join(missing)}")
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run directories (or metrics.jsonl files); several: one "
                                                         "figure with the mean and band over them")
    p.add_argument("--out", type=Path, help="PNG to write (default: curves.png in the first run directory)")
    args = p.parse_args(argv)
    logs = [r / "metrics.jsonl" if r.is_dir() else r for r in args.runs]
    try:
        runs = {log.parent.name: read_log(log) for log in logs}
        out = args.out or logs[0].parent / "curves.png"
        print(plot_curves(runs, out, ", ".join(runs), band=len(runs) > 1))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
