"""Copies of metrics.jsonl for other tools: metrics.csv always, TensorBoard when `tensorboard` is installed.

metrics.jsonl stays the run's log (records and figures read it); these follow it line for line:

- metrics.csv: one `step,metric,value` line per logged number (long format: training and validation
  rows log different keys), an empty value for a missing one (JSON null). On resume it is rebuilt
  from metrics.jsonl after that log was cut back to the checkpoint, so it never holds the lines of
  steps trained again.
- tensorboard/: event files of the same scalars (`tensorboard --logdir runs/`), written only when the
  `tensorboard` package can be imported (not a dependency). On resume, events after the checkpoint's
  step are purged.

W&B is separate (config key `wandb`, disabled by default).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

from infra.atomic import append_line, write_text

CSV_NAME = "metrics.csv"
CSV_HEADER = ("step", "metric", "value")
TENSORBOARD_DIR = "tensorboard"


def _csv_lines(step: int, row: dict) -> list[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for k, v in row.items():
        if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
            w.writerow((step, k, "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(v)))
    return buf.getvalue().splitlines()


def rebuild_csv(jsonl: Path, out: Path) -> None:
    """metrics.csv from every whole line of metrics.jsonl (replaced atomically)."""
    lines = [",".join(CSV_HEADER)]
    if jsonl.exists():
        for text in jsonl.read_text().splitlines():
            try:
                row = json.loads(text)
                step = int(row.pop("step"))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line cut short by a crash
            lines += _csv_lines(step, row)
    write_text(out, "\n".join(lines) + "\n")


class ScalarLogs:
    """metrics.csv (and TensorBoard events when available) beside metrics.jsonl; rank 0 only."""

    def __init__(self, jsonl: Path, enabled: bool, resume_step: int = 0):
        self.csv, self.tb = jsonl.parent / CSV_NAME, None
        self.enabled = enabled
        if not enabled:
            return
        rebuild_csv(jsonl, self.csv)
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(jsonl.parent / TENSORBOARD_DIR),
                                    purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        lines = _csv_lines(step, row)
        if lines:
            append_line(self.csv, "\n".join(lines))  # one write and fsync per logging step
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
