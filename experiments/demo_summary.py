"""The demo's figures for the README, from a finished `make demo` run: results/demo/demo.json and demo.md.

    make demo && python -m experiments.demo_summary [--run runs/demo] [--out results/demo]
    python -m experiments.readme     # copies demo.md into README.md

`make demo` writes only under runs/demo: a user's demo never touches results/. This command records what one
maintainer's run measured (its command, config, seed, git commit, final validation metrics; the training wall
time stays in demo.json only, since it depends on the machine's load) as a run record, so the README's
sentence about the demo comes from a file, not from memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import ConfigError, config_from_dict
from experiments.layout import ROOT, rel
from experiments.records import record_from_run
from infra.atomic import write_json, write_text
from infra.provenance import short_commit


def summary_markdown(record: dict, path: str) -> str:
    """One paragraph: what the demo trained and what it reached, with the record's provenance."""
    cfg = config_from_dict(record["config"])
    m = record["metrics"]
    h, w = cfg.data.size
    classes = 19  # Cityscapes' evaluated classes: a uniform guess scores about 1/19 of the IoU of a perfect one
    parts = [f"semantic mIoU {m['semantic/miou']:.1f} % (a uniform guess over the {classes} classes: about "
             f"{100 / classes:.0f} %)"] if "semantic/miou" in m else []
    parts += [f"instance mean error {m['instance/mean_error_px']:.2f} px"] if "instance/mean_error_px" in m else []
    parts += [f"depth mean error {m['depth/mean_error_px']:.2f} px"] if "depth/mean_error_px" in m else []
    return (f"The demo ({', '.join(cfg.tasks)}; {cfg.method.name} weighting) trained {cfg.optim.iterations} "
            f"iterations of batch {cfg.optim.batch_size} at {h}x{w} and reached, on the "
            f"val split: {'; '.join(parts)}. Seed {cfg.seed}, git commit "
            f"{short_commit(record.get('git_commit', 'unknown'))}, "
            f"`{' '.join(record['command'])}`; record: [{path}]({path}).\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="runs/demo", help="the demo's run directory (default: runs/demo)")
    p.add_argument("--out", default=str(ROOT / "results" / "demo"), help="where demo.json and demo.md go")
    args = p.parse_args(argv)
    run = Path(args.run)
    if not (run / "metrics.json").is_file():
        print(f"demo_summary: error: {run} holds no finished run (no metrics.json): run `make demo` first",
              file=sys.stderr)
        return 2
    try:
        record = record_from_run(run, "demo")
    except (ValueError, ConfigError) as e:
        print(f"demo_summary: error: {e}", file=sys.stderr)
        return 2
    record.pop("curves", None)  # the figures, not the curves: the record stays small
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "demo.json", record)
    write_text(out / "demo.md", summary_markdown(record, rel(out / "demo.json")))
    print(f"wrote {rel(out / 'demo.json')} and {rel(out / 'demo.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
