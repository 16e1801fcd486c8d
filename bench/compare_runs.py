"""Compare finished training runs of two variants (e.g. fp32 and bf16 on the CPU) over seeds.

    python -m bench.compare_runs --a fp32 RUN_DIR ... --b bf16 RUN_DIR ... [--json results/perf/X.json]

Reads each run's metrics.json and prints, per headline metric, the mean and sample standard
deviation (n - 1) over seeds of both variants, the difference of the means in units of variant a's
standard deviation (|d| <= 1: "within one seed standard deviation"), and the wall time of each run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from infra.atomic import write_json
from infra.provenance import git_commit

METRICS = ("semantic/miou", "semantic/pixel_acc", "instance/mean_error_px", "depth/mean_error_px", "depth/rmse_px")


def load(run_dirs: list[str]) -> list[dict]:
    runs = []
    for d in run_dirs:
        m = json.loads((Path(d) / "metrics.json").read_text())
        runs.append({"run_dir": d, "seed": m["config"]["seed"], "command": " ".join(m["command"]),
                     "wall_time_s": round(m["wall_time_s"], 1), "metrics": {k: m["metrics"][k] for k in METRICS}})
    return runs


def summary(runs: list[dict]) -> dict:
    out = {}
    for k in METRICS:
        values = [r["metrics"][k] for r in runs]
        out[k] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", nargs="+", required=True, metavar=("NAME", "RUN_DIR"))
    p.add_argument("--b", nargs="+", required=True, metavar=("NAME", "RUN_DIR"))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    (name_a, *dirs_a), (name_b, *dirs_b) = args.a, args.b
    a, b = load(dirs_a), load(dirs_b)
    sa, sb = summary(a), summary(b)
    rows = {}
    print(f"{'metric':<26}{name_a + ' mean':>14}{'sd':>8}{name_b + ' mean':>14}{'sd':>8}{'diff / sd_a':>13}")
    for k in METRICS:
        sd = sa[k]["sd"]
        d = (sb[k]["mean"] - sa[k]["mean"]) / sd if sd else None
        rows[k] = {name_a: sa[k], name_b: sb[k], "diff_in_sd_a": d}
        print(f"{k:<26}{sa[k]['mean']:>14.3f}{sd or float('nan'):>8.3f}{sb[k]['mean']:>14.3f}"
              f"{sb[k]['sd'] or float('nan'):>8.3f}{d if d is not None else float('nan'):>13.2f}")
    for name, runs in ((name_a, a), (name_b, b)):
        print(f"{name}: seeds {[r['seed'] for r in runs]}, wall {[r['wall_time_s'] for r in runs]} s")
    result = {"command": "python -m bench.compare_runs " + " ".join(sys.argv[1:] if argv is None else argv),
              "git_commit": git_commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "variants": {name_a: a, name_b: b}, "metrics": rows,
              "within_one_sd": all(r["diff_in_sd_a"] is not None and abs(r["diff_in_sd_a"]) <= 1
                                   for r in rows.values())}
    print(f"every metric within one seed standard deviation of {name_a}: {result['within_one_sd']}")
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
