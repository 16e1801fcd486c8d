"""Planning: every (manifest row, seed) resolved on a preset, one job per distinct experiment identity.

A run's config is the preset (configs/<preset>.yaml) plus the row's overrides plus `seed=K`; its
identity (engine.config.Config.identity) names it, and its run directory is runs/<preset>/<identity>.
Two rows that resolve to the same config (a sweep endpoint is a single-task Table 1 row) are one job.
A row with `weights_from: ROW` trains fixed weights equal to ROW's final effective weights of the same
seed, read from ROW's run record: until that record exists the run is pending (`Pending`), and the
runner plans again once it does. With `weights_scale` those weights are rescaled first (scale_weights).

A manifest with `lr_grid` (the comparison protocol, docs/comparisons.md) first trains every row at each grid
value with the grid's seeds; the row's runs then use the value with the best validation score
(experiments.protocol.select_lr) and are pending until the grid's records exist. A grid run at the chosen
value is the same experiment as the row's run of that seed, so it trains once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from engine.config import Config, ConfigError, load_config, overrides_from_mapping
from experiments.layout import TRAIN_SCRIPT, Paths, rel
from experiments.manifest import Manifest, Row
from tasks import METRICS


class Pending(LookupError):
    """A run whose config needs another run's result (weights_from) that has no record yet."""


class Waiting(str):
    """A reason some runs wait for another run's record (printed as the reason), and how many trainings it
    holds back (`runs`): a row waiting for its lr grid holds back each of its seeds outside the grid."""

    runs: int = 1

    def __new__(cls, reason: str, runs: int = 1):
        out = super().__new__(cls, reason)
        out.runs = runs
        return out


def waiting_runs(pending: list) -> int:
    """The trainings `pending`'s reasons hold back (at most: a row shared by two manifests counts twice)."""
    return sum(getattr(p, "runs", 1) for p in pending)


@dataclass
class Run:
    """One (manifest row, seed) resolved on a preset."""

    manifest: str
    row: Row
    seed: int
    config: Config
    preset_file: Path
    overrides: list[str]  # the row's overrides, then seed, run_dir (and data.root)
    tag: str = ""  # what sets a grid run apart from the row's runs, e.g. " lr 0.05"

    @cached_property
    def identity(self) -> str:
        return self.config.identity()

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def name(self) -> str:
        return f"{self.manifest}/{self.row.name}{self.tag} seed {self.seed}"


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


def scale_weights(weights: dict[str, float], scale: str | None) -> dict[str, float]:
    """The step-size controls of a weights_from row: as-learned (None), sum-to-one (the learned ratio with
    sum 1) or uniform-same-total (equal weights with the learned sum)."""
    total = sum(weights.values())
    if scale in (None, "as-learned"):
        return dict(weights)
    if scale == "sum-to-one":
        return {t: w / total for t, w in weights.items()}
    if scale == "uniform-same-total":
        return {t: total / len(weights) for t in weights}
    raise ConfigError(f"unknown weights_scale {scale!r}")


def weights_overrides(manifest: Manifest, row: Row, seed: int, preset: str, paths: Paths,
                      records: dict | None) -> dict:
    """`method: fixed` with the final effective weights of row.weights_from's run of `seed` (Pending
    while that run has no record), rescaled by row.weights_scale."""
    from experiments.records import load_records  # records import plots (matplotlib): only when needed

    source = next(r for r in manifest.rows if r.name == row.weights_from)
    records = load_records(paths, preset) if records is None else records
    src = resolve(manifest, source, seed, preset, paths, records=records)
    record = records.get(src.identity)
    if record is None:
        raise Pending(f"{manifest.name}/{row.name} seed {seed} waits for {manifest.name}/{source.name} seed {seed} "
                      f"[{src.identity}]")
    weights = scale_weights(final_weights_of(record, f"{manifest.path}: row {row.name}"), row.weights_scale)
    return {"tasks": list(src.config.tasks), "method": {"name": "fixed", "fixed": {"weights": weights}}}


CHOOSE = "choose"  # resolve's default lr: the row's lr-grid choice when the manifest has an lr_grid


def uses_grid(manifest: Manifest, row: Row) -> bool:
    return manifest.lr_grid is not None and row.use_lr_grid


def chosen_lr(manifest: Manifest, row: Row, preset: str, paths: Paths, records: dict | None) -> float:
    """The grid value with the best validation score for `row` (Pending until every grid run has a record)."""
    return lr_selection(manifest, row, preset, paths, records)["lr"]


def lr_selection(manifest: Manifest, row: Row, preset: str, paths: Paths, records: dict | None) -> dict:
    """experiments.protocol.select_lr's choice for `row` with its per-value scores (Pending as chosen_lr)."""
    from experiments.protocol import select_lr, selection_metrics
    from experiments.records import load_records

    records = load_records(paths, preset) if records is None else records
    key = (str(manifest.path), row.name, preset, str(paths.configs), id(records), len(records))
    if key in _SELECTIONS and _SELECTIONS[key][0] is records:  # one choice per records snapshot (plan resolves
        return _SELECTIONS[key][1]                              # every seed, and weights_from rows their source)
    scores: dict[float, list[dict]] = {}
    for value in manifest.lr_grid.values:
        for seed in manifest.lr_grid.seeds:
            run = resolve(manifest, row, seed, preset, paths, records=records, lr=value)
            record = records.get(run.identity)
            if record is None:
                raise Pending(f"{manifest.name}/{row.name} waits for its lr grid ({run.name} [{run.identity}])")
            scores.setdefault(value, []).append(selection_metrics(record))
    metrics = [c.metric for c in manifest.columns if METRICS[c.metric].task in run.config.tasks]
    choice = select_lr(scores, metrics)
    if len(_SELECTIONS) > 1000:
        _SELECTIONS.clear()
    _SELECTIONS[key] = (records, choice)
    return choice


_SELECTIONS: dict[tuple, tuple[dict, dict]] = {}


def resolve(manifest: Manifest, row: Row, seed: int, preset: str, paths: Paths = Paths(),
            data_root: str | None = None, records: dict | None = None, lr: float | str | None = CHOOSE) -> Run:
    """The run of `row` with `seed` on `preset`; a bad override is an error naming the manifest and row.
    A weights_from row reads its source's record from `records` (default: results/<preset>/runs/), and
    raises Pending while there is none. With the manifest's lr_grid, `lr` is the row's chosen value (CHOOSE,
    Pending until the grid is recorded), a grid value (a grid run), or None (the row's own lr)."""
    base = preset_file(preset, paths)
    taken = weights_overrides(manifest, row, seed, preset, paths, records) if row.weights_from else {}
    tag, extra = "", []
    if uses_grid(manifest, row) and lr is not None:
        if lr == CHOOSE:
            lr = chosen_lr(manifest, row, preset, paths, records)
        else:
            tag = f" lr {lr:g}"
        extra = [f"optim.lr={lr!r}"]
    overrides = [*overrides_from_mapping(taken), *overrides_from_mapping(row.config),
                 *overrides_from_mapping((row.presets or {}).get(preset, {})), *extra, f"seed={seed}"]
    try:
        cfg = load_config([base], overrides)
    except ConfigError as e:
        raise ConfigError(f"{manifest.path}: row {row.name}: {e}") from e
    run_dir = paths.runs / preset / cfg.identity()
    overrides.append(f"run_dir={rel(run_dir)}")
    if data_root:
        overrides.append(f"data.root={data_root}")  # not part of the identity
    cfg.run_dir, cfg.data.root = rel(run_dir), data_root or cfg.data.root
    return Run(manifest.name, row, seed, cfg, base, overrides, tag)


def runs_of(manifest: Manifest, preset: str, seeds: tuple[int, ...] | None = None, paths: Paths = Paths(),
            data_root: str | None = None, records: dict | None = None, pending: list | None = None) -> list[Run]:
    """Every (row, seed) of `manifest` on `preset`, rows in manifest order. Runs still waiting for another
    run's record are left out, their reasons appended to `pending` (without a list: Pending is raised)."""
    runs = []
    if records is None and (manifest.lr_grid or any(r.weights_from for r in manifest.rows)):
        from experiments.records import load_records

        records = load_records(paths, preset)  # once, not once per run that reads another run's record
    held: dict[str, set] = {}  # reason -> the (row, seed, lr) trainings it holds back
    for row in manifest.rows:
        grid = uses_grid(manifest, row)
        if grid:  # the grid first: the row's own runs wait for its choice
            for value in manifest.lr_grid.values:
                for seed in manifest.lr_grid.seeds:
                    try:
                        runs.append(resolve(manifest, row, seed, preset, paths, data_root, records, lr=value))
                    except Pending as e:
                        if pending is None:
                            raise
                        held.setdefault(str(e), set()).add((row.name, seed, value))
        for seed in row_seeds(manifest, row, seeds):
            try:
                runs.append(resolve(manifest, row, seed, preset, paths, data_root, records))
            except Pending as e:
                if pending is None:
                    raise
                keys = held.setdefault(str(e), set())  # a row waiting for its lr grid: one reason for all seeds
                if not (grid and seed in manifest.lr_grid.seeds):  # a grid seed at the chosen lr is a grid run
                    keys.add((row.name, seed, None))
    if pending is not None:
        for reason, keys in held.items():
            if reason not in pending:
                pending.append(Waiting(reason, len(keys)))
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
