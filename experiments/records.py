"""Run records: one small JSON per finished run in results/<preset>/runs/<identity>.json (committed).

A record holds what the run's metrics.json says (metrics, resolved config, identity, command, git
commit, seed, wall time, replica check, the method's final state) plus the learned-weight curves
from its metrics.jsonl (and the validation metrics over training when it validated during training),
never weights. Tables are computed from records only, so a fresh clone
regenerates every committed table, and results accumulate across machines and days.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from engine.config import Config, ConfigError, config_from_dict
from experiments import plots
from experiments.layout import Paths, rel
from infra.atomic import write_json

# Keys copied from a run's metrics.json.
FINAL_KEYS = ("step", "iterations", "metrics", "config", "identity", "identity_schema", "command", "git_commit",
              "wall_time_s", "replicas", "method_state", "data_root",
              # the comparison protocol's provenance (runs with data.test_split; docs/comparisons.md)
              "score_split", "selection_split", "val_metrics", "data_profile", "precision", "dirty",
              "wall_time_complete")


def read_json(path: Path) -> dict:
    """A JSON object from `path`; a corrupt or foreign file is an error naming it."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


@dataclass
class Record:
    """One run record and the config it was trained with. `missing`: the metrics its run measured as NaN
    (null in the JSON), kept out of data["metrics"] so every mean is over the seeds that have a value."""

    path: Path
    data: dict
    missing: tuple[str, ...] = field(default=())

    @cached_property
    def config(self) -> Config:
        try:
            return config_from_dict(self.data["config"])
        except (ConfigError, KeyError, TypeError) as e:
            raise ValueError(f"{self.path}: its config does not load with this code ({e})") from e

    @cached_property
    def identity(self) -> str:
        """Recomputed from the stored config (the truth), not read from the file."""
        return self.config.identity()

    @cached_property
    def row_identity(self) -> str:
        """The identity without the seed: what all seeds of one row share."""
        return self.config.identity(seed=False)

    @property
    def seed(self) -> int:
        return self.config.seed

    def stored(self) -> dict:
        """The record as its file holds it: the NaN metrics back as null."""
        return self.data | {"metrics": self.data["metrics"] | dict.fromkeys(self.missing)}

    def final_weights(self) -> dict[str, float | None]:
        """{task: the last logged effective weight} (its curves' weight/<task> series; None where that was
        not finite); empty without curves. The one reader of final weights."""
        curves = self.data.get("curves") or {}
        return {k.split("/", 1)[1]: v[-1] for k, v in curves.items() if k.startswith("weight/") and v}


def repository_paths(record: dict) -> dict:
    """`record` with repository-relative paths, so a committed command reads the same on every machine: a run
    directory (the command's `run_dir=` and the config's run_dir) ending in <preset>/<identity> becomes
    runs/<preset>/<identity>, its place in the layout wherever it was trained; a dataset root inside the
    repository is written from the repository root. Nothing that enters the identity changes."""
    preset, identity = record.get("preset"), record.get("identity")

    def run_dir(path: str) -> str:
        parts = Path(path).parts
        return f"runs/{preset}/{identity}" if preset and identity and parts[-2:] == (preset, identity) else path

    out = dict(record)
    if isinstance(out.get("command"), list):
        out["command"] = [f"run_dir={run_dir(a[len('run_dir='):])}" if isinstance(a, str) and a.startswith("run_dir=")
                          else a for a in out["command"]]
    if isinstance(out.get("config"), dict) and out["config"].get("run_dir"):
        out["config"] = {**out["config"], "run_dir": run_dir(out["config"]["run_dir"])}
    if out.get("data_root"):
        out["data_root"] = rel(Path(out["data_root"]))
    return out


def record_from_run(run_dir: Path, preset: str) -> dict:
    """The record of a finished run directory: metrics.json's fields plus the learned-weight curves."""
    final = read_json(run_dir / "metrics.json")
    missing = [k for k in ("metrics", "config") if k not in final]
    if missing:
        raise ValueError(f"{run_dir / 'metrics.json'}: missing keys {missing}")
    record = {k: final[k] for k in FINAL_KEYS if k in final}
    cfg = config_from_dict(final["config"])
    record |= {"preset": preset, "seed": cfg.seed, "identity": cfg.identity()}
    record = repository_paths(record)
    if "git_commit" in record and "dirty" not in record:  # made from modified code: said in the record
        record["dirty"] = str(record["git_commit"]).endswith("-dirty")
    log = run_dir / "metrics.jsonl"
    if log.exists():
        curves = plots.read_curves(log)
        if len(curves["step"]) > 1:
            record["curves"] = plots.thin(curves)
        val = val_curves(log)
        if len(val["step"]) > 1:  # validated during training (val_every): the pilot's learning curves
            record["val_curves"] = val
    return record


def val_curves(log: Path) -> dict[str, list]:
    """The validation metrics (tasks.METRICS keys, without per-class ones) at every step they were logged."""
    from tasks import METRICS

    curves = plots.read_curves(log, prefixes=("val/",))
    return {"step": curves["step"]} | {k.removeprefix("val/"): v for k, v in curves.items()
                                       if k.removeprefix("val/") in METRICS}


def record_path(paths: Paths, preset: str, identity: str) -> Path:
    return paths.records(preset) / f"{identity}.json"


def write_record(paths: Paths, preset: str, record: dict) -> Path:
    """Write (or replace) the record of one run. A run recorded again keeps its original training time."""
    path = record_path(paths, preset, record["identity"])
    if path.exists() and "wall_time_s" in record:
        old = read_json(path)
        if "wall_time_s" in old:
            record = record | {"wall_time_s": old["wall_time_s"]}
    write_json(path, record)
    return path


def load_records(paths: Paths, preset: str) -> dict[str, Record]:
    """identity -> Record for every results/<preset>/runs/*.json."""
    out: dict[str, Record] = {}
    for path in sorted(paths.records(preset).glob("*.json")):
        data = read_json(path)
        if "metrics" not in data or "config" not in data:
            raise ValueError(f"{path}: not a run record (needs metrics and config)")
        record = Record(path, data, without_nulls(data))
        out.setdefault(record.identity, record)
    return out


def without_nulls(data: dict) -> tuple[str, ...]:
    """Take the null (NaN when measured) metrics out of a record's data["metrics"] and return their names;
    null points of its curves become NaN, which every reader of a curve skips."""
    metrics = data["metrics"] if isinstance(data["metrics"], dict) else {}
    missing = tuple(sorted(k for k, v in metrics.items() if v is None))
    for k in missing:
        del metrics[k]
    for key in ("curves", "val_curves"):
        for name, series in (data.get(key) or {}).items():
            if name != "step" and isinstance(series, list):
                series[:] = [math.nan if v is None else v for v in series]
    return missing
