"""Experiment manifests: an experiment table as a YAML file in configs/experiments/.

    title: "Table 1: ..."                  # shown above the table
    description: ...                       # optional, one paragraph
    paper: table1                          # optional: section of results/paper/kendall2018.json
    seeds: [0, 1, 2]                       # seeds of every row (a row may set its own)
    columns:                               # metrics shown (tasks.METRICS keys); `paper`: the paper's column
      - {metric: semantic/miou, paper: semantic_miou_pct}
    x: {label: depth weight, task: depth}  # optional: a sweep, drawn against x (rows then give `x`)
    curves: true                           # optional: draw the learned task weights over training
    baselines: {semantic: semantic-only}   # optional: each task's single-task row, for Delta_m (benchmark)
    settle: 0.1                            # optional: when each learned sigma^2 stays within 10 % of its final
                                           # value, per row, and all rows' curves in one figure (Appendix B)
    official: {grouping: [hough, optics]}  # optional: also score each run with the official Cityscapes
                                           # evaluators at full resolution (Table 2), instances grouped by these
    for_presets: [synthetic-calibrated]    # optional: the only presets the experiment is defined on (`all` and
                                           # `aggregate` skip it on others; naming it there is an error); on
                                           # such a preset an unnamed `aggregate` writes only these manifests'
                                           # tables and tables already written there
    pilot: true                            # optional: a schedule-length pilot (rows differ in optim.iterations
                                           # and validate during training): experiments.claims picks the length
    claims:                                # optional: the paper's claims as paired comparisons of rows
      - name: uw-beats-sum                 # a slug
        claim: Uncertainty weighting beats the unweighted sum on every task   # the sentence tested
        better: uncertainty-3task          # the row claimed better ...
        than: unweighted-sum               # ... than this row, or {task: row} (each task against its own row)
    rows:
      - name: semantic-only                # unique within the manifest; a file-name-safe slug
        label: Segmentation only           # optional: shown in the table (default: name)
        config:                            # overrides applied on the preset, as in a YAML config file
          tasks: [semantic]
          method: {name: fixed, fixed: {weights: {semantic: 1.0}}}
        paper: {row: Segmentation only}    # or {where: {w_semantic: 1.0, w_depth: 0.0}} or {key: learned}
        presets: {synthetic-cpu: {optim: {iterations: 600}}}  # optional: more overrides on one preset only
        x: 0.0                             # sweeps: the x value, or `learned` (the x task's learned share)
        weights_from: uncertainty-3task    # optional: fixed weights = that row's final effective weights of the
                                           # same seed (read from its run record; the run waits for it)
        seeds: [0, 1, 2]                   # optional

A row's config is checked against the preset when the experiment is planned (reproduce.py ...
--dry-run), so a typo fails before anything trains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from engine.config import ConfigError, load_yaml
from tasks import ALL_TASKS, METRICS

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MANIFEST_KEYS = {"title", "description", "paper", "seeds", "columns", "x", "curves", "rows", "baselines", "official",
                  "settle", "pilot", "claims", "for_presets"}
_ROW_KEYS = {"name", "label", "config", "paper", "x", "seeds", "presets", "weights_from"}
_CLAIM_KEYS = {"name", "claim", "better", "than"}


@dataclass(frozen=True)
class Column:
    metric: str  # a key of tasks.METRICS
    paper: str | None = None  # the paper's name for this column in its section of the paper's JSON


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    config: dict
    paper: dict | None = None
    x: float | str | None = None
    seeds: tuple[int, ...] | None = None
    presets: dict | None = None  # preset name -> overrides applied after `config` on that preset only
    weights_from: str | None = None  # fixed weights = this row's final effective weights (same seed)


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a paired comparison: row `better` beats `than` on each task's metrics."""

    name: str
    claim: str  # the sentence tested
    better: str  # row name
    than: dict[str, str]  # task -> the row it is compared with on that task's metrics


@dataclass(frozen=True)
class Manifest:
    name: str  # the file's stem: results are written as results/<preset>/<name>.{json,md,png}
    path: Path
    title: str
    description: str
    paper: str | None
    seeds: tuple[int, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    x: dict | None = None  # {"label": ..., "task": ...} for a sweep
    curves: bool = False
    baselines: dict[str, str] | None = None  # task -> the row training that task alone (Delta_m)
    official: dict | None = None  # {"grouping": [methods]}: full-resolution official evaluation (Table 2)
    settle: float | None = None  # relative tolerance of the sigma^2 settling iteration (Appendix B)
    pilot: bool = False  # a schedule-length pilot (experiments.claims.pilot_columns)
    claims: tuple[Claim, ...] = ()
    for_presets: tuple[str, ...] | None = None  # None: every preset

    def applies_to(self, preset: str) -> bool:
        return self.for_presets is None or preset in self.for_presets

    @property
    def is_sweep(self) -> bool:
        return self.x is not None


def _seeds(value, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           for s in value):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers, got {value!r}")
    return tuple(value)


def _keys(d, valid: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {d!r}")
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(valid))}")


def load_manifest(path: Path) -> Manifest:
    """Read and check one manifest; errors name the file and the key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the manifest ({e})") from e
    data = load_yaml(text, str(path))
    _keys(data, _MANIFEST_KEYS, str(path))
    for key in ("title", "seeds", "columns", "rows"):
        if key not in data:
            raise ConfigError(f"{path}: missing key '{key}'")
    seeds = _seeds(data["seeds"], f"{path}: seeds")
    columns = []
    for c in data["columns"]:
        c = {"metric": c} if isinstance(c, str) else c
        _keys(c, {"metric", "paper"}, f"{path}: columns")
        if c.get("metric") not in METRICS:
            raise ConfigError(f"{path}: unknown metric {c.get('metric')!r}; valid metrics: {', '.join(METRICS)}")
        columns.append(Column(c["metric"], c.get("paper")))
    x = data.get("x")
    if x is not None:
        _keys(x, {"label", "task"}, f"{path}: x")
        if x.get("task") is not None and x["task"] not in ALL_TASKS:
            raise ConfigError(f"{path}: x.task {x['task']!r} is not a task; valid tasks: {', '.join(ALL_TASKS)}")
    rows, names = [], set()
    for i, r in enumerate(data["rows"] or []):
        where = f"{path}: row {r.get('name', i) if isinstance(r, dict) else i}"
        _keys(r, _ROW_KEYS, where)
        name = r.get("name")
        if not isinstance(name, str) or not _SLUG.match(name):
            raise ConfigError(f"{where}: name must be a slug of letters, digits, '.', '_' or '-', got {name!r}")
        if name in names:
            raise ConfigError(f"{where}: row name {name!r} is used twice")
        names.add(name)
        if not isinstance(r.get("config", {}), dict):
            raise ConfigError(f"{where}: config must be a mapping of overrides")
        presets = r.get("presets")
        if presets is not None and not (isinstance(presets, dict)
                                        and all(isinstance(v, dict) for v in presets.values())):
            raise ConfigError(f"{where}: presets must map a preset name to a mapping of overrides")
        if r.get("paper") is not None:
            _keys(r["paper"], {"row", "where", "key"}, f"{where}: paper")
        row_x = r.get("x")
        if x is not None and not (isinstance(row_x, (int, float)) or row_x == "learned"):
            raise ConfigError(f"{where}: a sweep row needs x: a number or 'learned', got {row_x!r}")
        if row_x == "learned" and not (x or {}).get("task"):
            raise ConfigError(f"{where}: x: learned needs the manifest's x.task")
        source = r.get("weights_from")
        if source is not None and (not isinstance(source, str) or source == name):
            raise ConfigError(f"{where}: weights_from must name another row, got {source!r}")
        rows.append(Row(name, str(r.get("label", name)), r.get("config") or {}, r.get("paper"),
                        float(row_x) if isinstance(row_x, (int, float)) else row_x,
                        _seeds(r["seeds"], f"{where}: seeds") if "seeds" in r else None, presets, source))
    if not rows:
        raise ConfigError(f"{path}: no rows")
    for row in rows:
        if row.weights_from is not None and row.weights_from not in names:
            raise ConfigError(f"{path}: row {row.name}: weights_from names no row of the manifest: "
                              f"{row.weights_from!r}")
        if row.weights_from is not None and next(r for r in rows if r.name == row.weights_from).weights_from:
            raise ConfigError(f"{path}: row {row.name}: weights_from {row.weights_from!r} itself takes weights_from")
    claims = tuple(_claim(c, names, f"{path}: claims") for c in (data.get("claims") or []))
    for_presets = data.get("for_presets")
    if for_presets is not None and not (isinstance(for_presets, list) and for_presets
                                        and all(isinstance(p, str) for p in for_presets)):
        raise ConfigError(f"{path}: for_presets must be a non-empty list of preset names, got {for_presets!r}")
    baselines = data.get("baselines")
    if baselines is not None:
        _keys(baselines, set(ALL_TASKS), f"{path}: baselines")
        bad = {t: r for t, r in baselines.items() if r not in names}
        if bad:
            raise ConfigError(f"{path}: baselines name rows that do not exist: {bad}")
    official = data.get("official")
    if official is not None:
        from evaluation.instances import METHODS as GROUPING

        _keys(official, {"grouping"}, f"{path}: official")
        grouping = official.get("grouping", ["hough"])
        if not isinstance(grouping, list) or not grouping or any(g not in GROUPING for g in grouping):
            raise ConfigError(f"{path}: official.grouping must be a list of {sorted(GROUPING)}, got {grouping!r}")
        official = {"grouping": list(grouping)}
    settle = data.get("settle")
    if settle is not None and not (isinstance(settle, (int, float)) and not isinstance(settle, bool)
                                   and 0 < settle < 1):
        raise ConfigError(f"{path}: settle must be a fraction between 0 and 1 (e.g. 0.1), got {settle!r}")
    return Manifest(path.stem, path, str(data["title"]), str(data.get("description", "")).strip(),
                    data.get("paper"), seeds, tuple(columns), tuple(rows), x, bool(data.get("curves", False)),
                    baselines, official, float(settle) if settle is not None else None, bool(data.get("pilot", False)),
                    claims, tuple(for_presets) if for_presets else None)


def _claim(c, names: set[str], where: str) -> Claim:
    _keys(c, _CLAIM_KEYS, where)
    missing = sorted(_CLAIM_KEYS - set(c))
    if missing:
        raise ConfigError(f"{where}: a claim needs {missing}, got {c!r}")
    if not isinstance(c["name"], str) or not _SLUG.match(c["name"]):
        raise ConfigError(f"{where}: claim name must be a slug, got {c['name']!r}")
    than = c["than"]
    if isinstance(than, str):
        than = {"*": than}
    if not isinstance(than, dict) or not than or any(t != "*" and t not in ALL_TASKS for t in than):
        raise ConfigError(f"{where}: claim {c['name']}: than must be a row or {{task: row}} with tasks of "
                          f"{', '.join(ALL_TASKS)}, got {c['than']!r}")
    bad = sorted({c["better"], *than.values()} - names)
    if bad:
        raise ConfigError(f"{where}: claim {c['name']} names rows that do not exist: {bad}")
    return Claim(c["name"], str(c["claim"]), c["better"], dict(than))


def list_manifests(directory: Path) -> list[Manifest]:
    """Every configs/experiments/*.yaml, sorted by name."""
    return [load_manifest(p) for p in sorted(Path(directory).glob("*.yaml"))]


def for_preset(manifests: list[Manifest], preset: str, named: bool) -> list[Manifest]:
    """The manifests defined on `preset`: the others are skipped, or an error when they were named."""
    other = [m for m in manifests if not m.applies_to(preset)]
    if named and other:
        m = other[0]
        raise ConfigError(f"manifest {m.name} is defined only on preset(s) {', '.join(m.for_presets)} (its "
                          f"for_presets), not on {preset}")
    return [m for m in manifests if m.applies_to(preset)]


def find_manifests(directory: Path, names) -> list[Manifest]:
    """The named manifests, or an error listing the ones there are."""
    available = {p.stem: p for p in sorted(Path(directory).glob("*.yaml"))}
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"no manifest named {', '.join(unknown)} in {directory}; "
                          f"available: {', '.join(available) or 'none'}")
    return [load_manifest(available[n]) for n in names]
