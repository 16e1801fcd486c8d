"""Planning: every (manifest row, seed) resolved on a preset, one job per distinct experiment identity.

A run's config is the preset (configs/<preset>.yaml) plus the row's overrides plus `seed=K`; its
identity (engine.config.Config.identity) names it, and its run directory is runs/<preset>/<identity>.
Two rows that resolve to the same config (a sweep endpoint is a single-task Table 1 row) are one job.
A row with `weights_from: ROW` trains fixed weights equal to ROW's final effective weights of the same
seed, read from ROW's run record: until that record exists the run is pending (`Pending`), and the
runner plans again once it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from engine.config import Config, ConfigError, load_config, overrides_from_mapping
from experiments.layout import TRAIN_SCRIPT, Paths, rel
from experiments.manifest import Manifest, Row


class Pending(LookupError):
    """A run whose config needs another run's result (weights_from) that has no record yet."""


@dataclass
class Run:
    """One (manifest row, seed) resolved on a preset."""

    manifest: str
    row: Row
    seed: int
    config: Config
    preset_file: Path
    overrides: list[str]  # the row's overrides, then seed, run_dir (and data.root)

    @cached_property
    def identity(self) -> str:
        return self.config.identity()

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def name(self) -> str:
        return f"{self.manifest}/{self.row.name} seed {self.seed}"


@dataclass
class Job:
    """One training: the first run of an identity, plus the other rows that are the same experiment."""

    run: Run
    aliases: list[Run] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f"{r.manifest}/{r.row.name}" for r in (self.run, *self.aliases)]

    def command(self, python: str = "python", train_script: Path = TRAIN_SCRIPT) -> list[str]:
        return train_command(self.run, python, train_script)


def train_command(run: Run, python: str = "python", train_script: Path = TRAIN_SCRIPT) -> list[str]:
    """`python train.py --config PRESET OVERRIDE... seed=K run_dir=...` (run from the repository root)."""
    return [python, rel(train_script), "--config", rel(run.preset_file), *run.overrides]


def preset_file(preset: str, paths: Paths = Paths()) -> Path:
    """configs/<preset>.yaml, or an error listing the presets there."""
    path = paths.configs / f"{preset}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in paths.configs.glob("*.yaml"))
        raise ConfigError(f"preset {preset!r} not found ({path}); valid presets: {', '.join(valid)}")
    return path


def row_seeds(manifest: Manifest, row: Row, seeds: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """`seeds` (the command line's) when given, else the row's own, else the manifest's."""
    return seeds or row.seeds or manifest.seeds


def final_weights_of(record, where: str) -> dict[str, float]:
    """{task: the last logged effective weight} of a run record (its curves' weight/<task> series)."""
    weights = record.final_weights()
    if not weights or not all(isinstance(w, (int, float)) and w == w and abs(w) != float("inf")
                              for w in weights.values()):
        raise ConfigError(f"{where}: the record {record.path} has no finite final task weights")
    return weights


def weights_overrides(manifest: Manifest, row: Row, seed: int, preset: str, paths: Paths,
                      records: dict | None) -> dict:
    """`method: fixed` with the final effective weights of row.weights_from's run of `seed` (Pending
    while that run has no record)."""
    from experiments.records import load_records  # records import plots (matplotlib): only when needed

    source = next(r for r in manifest.rows if r.name == row.weights_from)
    src = resolve(manifest, source, seed, preset, paths)
    records = load_records(paths, preset) if records is None else records
    record = records.get(src.identity)
    if record is None:
        raise Pending(f"{manifest.name}/{row.name} seed {seed} waits for {manifest.name}/{source.name} seed {seed} "
                      f"[{src.identity}]")
    weights = final_weights_of(record, f"{manifest.path}: row {row.name}")
    return {"tasks": list(src.config.tasks), "method": {"name": "fixed", "fixed": {"weights": weights}}}


def resolve(manifest: Manifest, row: Row, seed: int, preset: str, paths: Paths = Paths(),
            data_root: str | None = None, records: dict | None = None) -> Run:
    """The run of `row` with `seed` on `preset`; a bad override is an error naming the manifest and row.
    A weights_from row reads its source's record from `records` (default: results/<preset>/runs/), and
    raises Pending while there is none."""
    base = preset_file(preset, paths)
    taken = weights_overrides(manifest, row, seed, preset, paths, records) if row.weights_from else {}
    overrides = [*overrides_from_mapping(taken), *overrides_from_mapping(row.config),
                 *overrides_from_mapping((row.presets or {}).get(preset, {})), f"seed={seed}"]
    try:
        cfg = load_config([base], overrides)
    except ConfigError as e:
        raise ConfigError(f"{manifest.path}: row {row.name}: {e}") from e
    run_dir = paths.runs / preset / cfg.identity()
    overrides.append(f"run_dir={rel(run_dir)}")
    if data_root:
        overrides.append(f"data.root={data_root}")  # not part of the identity
    cfg.run_dir, cfg.data.root = rel(run_dir), data_root or cfg.data.root
    return Run(manifest.name, row, seed, cfg, base, overrides)


def runs_of(manifest: Manifest, preset: str, seeds: tuple[int, ...] | None = None, paths: Paths = Paths(),
            data_root: str | None = None, records: dict | None = None, pending: list | None = None) -> list[Run]:
    """Every (row, seed) of `manifest` on `preset`, rows in manifest order. Runs still waiting for another
    run's record are left out, their reasons appended to `pending` (without a list: Pending is raised)."""
    runs = []
    for row in manifest.rows:
        for seed in row_seeds(manifest, row, seeds):
            try:
                runs.append(resolve(manifest, row, seed, preset, paths, data_root, records))
            except Pending as e:
                if pending is None:
                    raise
                pending.append(str(e))
    return runs


def plan(preset: str, manifests: list[Manifest], seeds: tuple[int, ...] | None = None, paths: Paths = Paths(),
         data_root: str | None = None, records: dict | None = None, pending: list | None = None) -> list[Job]:
    """One job per distinct identity, in a fixed order (manifests as given, rows, seeds); runs waiting for
    another run's record are left out and named in `pending` (see runs_of)."""
    jobs: dict[str, Job] = {}
    for manifest in manifests:
        for run in runs_of(manifest, preset, seeds, paths, data_root, records, pending):
            if run.identity in jobs:
                jobs[run.identity].aliases.append(run)
            else:
                jobs[run.identity] = Job(run)
    return list(jobs.values())


def shard(jobs: list, i: int, n: int) -> list:
    """The i-th of n deterministic, disjoint slices of `jobs` (1 <= i <= n): every n-th from the i-th."""
    if not 1 <= i <= n:
        raise ValueError(f"shard {i}/{n}: need 1 <= i <= n")
    return jobs[i - 1::n]
