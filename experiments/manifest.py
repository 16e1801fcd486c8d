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
    superseded: {synthetic-protocol: protocol-table1}  # optional: presets on which another manifest replaces
                                           # this one (`all` and `aggregate` skip it there; naming it is an
                                           # error naming the replacement)
    pilot: true                            # optional: a schedule-length pilot (rows differ in optim.iterations
                                           # and validate during training): experiments.claims picks the length
    claims:                                # optional: the paper's claims as paired comparisons of rows
      - name: uw-beats-sum                 # a slug
        claim: Uncertainty weighting beats the unweighted sum on every task   # the sentence tested
        better: uncertainty-3task          # the row claimed better ...
        than: unweighted-sum               # ... than this row, or {task: row} (each task against its own row)
    lr_grid: {values: [0.02, 0.05, 0.1], seeds: [0]}   # optional: every row (unless it sets lr_grid: false) trains
                                           # at each value with these seeds; its other runs use the value with
                                           # the best validation score (experiments/protocol.py, select_lr)
    schedule: {iterations: [480, 960]}     # optional: a schedule pilot; every row is trained at each length and
                                           # the doubling rule (experiments/protocol.py) reads the primary claims
    primary: [uncertainty-beats-sum]       # optional: the pre-registered primary claims (per-task Delta_p,
                                           # Holm across them); every claim's metrics are the secondary family
    margin_pct: 3.0                        # optional: the TOST equivalence margin (percent of the reference row)
    settled_by: protocol-pilot             # optional: the schedule pilot whose doubling rule says whether this
                                           # manifest's schedule has settled ("decisive" needs it)
    analyses: [my-kind]                    # optional: analyses (experiments/analyses/) to run beyond those the
                                           # keys above declare (x: the sweep, baselines: the benchmark ...)
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
        weights_scale: sum-to-one          # optional, with weights_from: as-learned (default) | sum-to-one (the
                                           # learned ratio, sum 1) | uniform-same-total (equal weights, same sum)
        lr_grid: false                     # optional: this row keeps its own lr (no grid)
        seeds: [0, 1, 2]                   # optional

A row's config is checked against the preset when the experiment is planned (reproduce.py ...
--dry-run), so a typo fails before anything trains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from engine.config import ConfigError, load_yaml
from tasks import ALL_TASKS, METRICS

_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_MANIFEST_KEYS = {"title", "description", "paper", "seeds", "columns", "x", "curves", "rows", "baselines", "official",
                  "settle", "pilot", "claims", "for_presets", "lr_grid", "schedule", "primary", "margin_pct",
                  "settled_by", "analyses", "superseded"}
_ROW_KEYS = {"name", "label", "config", "paper", "x", "seeds", "presets", "weights_from", "weights_scale", "lr_grid"}
WEIGHT_SCALES = ("as-learned", "sum-to-one", "uniform-same-total")
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
    weights_scale: str | None = None  # None / as-learned | sum-to-one | uniform-same-total (WEIGHT_SCALES)
    use_lr_grid: bool = True  # False: the row keeps its own lr when the manifest has an lr_grid


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a paired comparison: row `better` beats `than` on each task's metrics."""

    name: str
    claim: str  # the sentence tested
    better: str  # row name
    than: dict[str, str]  # task -> the row it is compared with on that task's metrics


@dataclass(frozen=True)
class LrGrid:
    """The learning rates every row is tried at, with these seeds, before its other seeds train."""

    values: tuple[float, ...]
    seeds: tuple[int, ...]


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
    lr_grid: LrGrid | None = None  # every row's lr chosen on val from these values (experiments/protocol.py)
    schedule: tuple[int, ...] | None = None  # a schedule pilot: every row at each of these lengths
    primary: tuple[str, ...] = ()  # the pre-registered primary claims (names of `claims`)
    margin_pct: float | None = None  # TOST margin; None: experiments.statistics.MARGIN_PCT
    settled_by: str | None = None  # the schedule pilot manifest that says whether the schedule settled
    analyses: tuple[str, ...] = ()  # analyses named by the manifest (experiments/analyses/), beyond its keys'
    superseded: dict[str, str] | None = None  # preset -> the manifest that replaces this one there

    def applies_to(self, preset: str) -> bool:
        return (self.for_presets is None or preset in self.for_presets) and preset not in (self.superseded or {})

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
    except (OSError, UnicodeDecodeError) as e:
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
        scale = r.get("weights_scale")
        if scale is not None and (source is None or scale not in WEIGHT_SCALES):
            raise ConfigError(f"{where}: weights_scale needs weights_from and one of {', '.join(WEIGHT_SCALES)}, "
                              f"got {scale!r}")
        if r.get("lr_grid", True) not in (True, False):
            raise ConfigError(f"{where}: a row's lr_grid can only be false (keep its own lr), got {r['lr_grid']!r}")
        rows.append(Row(name, str(r.get("label", name)), r.get("config") or {}, r.get("paper"),
                        float(row_x) if isinstance(row_x, (int, float)) else row_x,
                        _seeds(r["seeds"], f"{where}: seeds") if "seeds" in r else None, presets, source,
                        scale, r.get("lr_grid", True)))
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
    superseded = data.get("superseded")
    if superseded is not None and not (isinstance(superseded, dict) and superseded
                                       and all(isinstance(k, str) and isinstance(v, str) and v != path.stem
                                               for k, v in superseded.items())):
        raise ConfigError(f"{path}: superseded must map preset names to the manifest replacing this one there, "
                          f"got {superseded!r}")
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
    lr_grid = data.get("lr_grid")
    if lr_grid is not None:
        _keys(lr_grid, {"values", "seeds"}, f"{path}: lr_grid")
        values = lr_grid.get("values")
        if not (isinstance(values, list) and values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             and v > 0 for v in values)):
            raise ConfigError(f"{path}: lr_grid.values must be a non-empty list of positive numbers, got {values!r}")
        lr_grid = LrGrid(tuple(float(v) for v in values), _seeds(lr_grid.get("seeds", [0]), f"{path}: lr_grid"))
    schedule = data.get("schedule")
    if schedule is not None:
        _keys(schedule, {"iterations"}, f"{path}: schedule")
        lengths = schedule.get("iterations")
        if not (isinstance(lengths, list) and len(lengths) >= 2 and all(isinstance(n, int) and n > 0 for n in lengths)
                and all(b == 2 * a for a, b in zip(lengths, lengths[1:]))):
            raise ConfigError(f"{path}: schedule.iterations must list at least two lengths, each double the one "
                              f"before (e.g. [480, 960, 1920]), got {lengths!r}")
        schedule = tuple(lengths)
    primary = data.get("primary") or []
    unknown = sorted(set(primary) - {c.name for c in claims}) if isinstance(primary, list) else primary
    if unknown:
        raise ConfigError(f"{path}: primary must list claim names of the manifest; unknown: {unknown!r}")
    margin = data.get("margin_pct")
    if margin is not None and not (isinstance(margin, (int, float)) and not isinstance(margin, bool) and margin > 0):
        raise ConfigError(f"{path}: margin_pct must be a positive number (percent), got {margin!r}")
    settled_by = data.get("settled_by")
    if settled_by is not None and not (isinstance(settled_by, str) and _SLUG.match(settled_by)):
        raise ConfigError(f"{path}: settled_by must name a manifest, got {settled_by!r}")
    named = data.get("analyses") or []
    if not (isinstance(named, list) and all(isinstance(n, str) for n in named)):
        raise ConfigError(f"{path}: analyses must be a list of analysis names, got {named!r}")
    if named:
        from experiments.analyses import analyses

        unknown = [n for n in named if n not in analyses()]
        if unknown:
            raise ConfigError(f"{path}: unknown analysis {', '.join(map(repr, unknown))}; registered analyses: "
                              f"{', '.join(analyses())}")
    if schedule:
        rows, claims = expand_schedule(rows, claims, schedule)
    return Manifest(path.stem, path, str(data["title"]), str(data.get("description", "")).strip(),
                    data.get("paper"), seeds, tuple(columns), tuple(rows), x, bool(data.get("curves", False)),
                    baselines, official, float(settle) if settle is not None else None, bool(data.get("pilot", False)),
                    claims, tuple(for_presets) if for_presets else None, lr_grid, schedule, tuple(primary),
                    float(margin) if margin is not None else None, settled_by, tuple(named),
                    dict(superseded) if superseded else None)


def expand_schedule(rows: list[Row], claims: tuple[Claim, ...], lengths: tuple[int, ...]):
    """A schedule pilot's rows and claims, one copy per length: `<name>-<N>it` with optim.iterations=N."""
    out_rows, out_claims = [], []
    for n in lengths:
        for r in rows:
            config = {**r.config, "optim": {**(r.config.get("optim") or {}), "iterations": n}}
            out_rows.append(replace(r, name=f"{r.name}-{n}it", label=f"{r.label}, {n} iterations", config=config,
                                    weights_from=f"{r.weights_from}-{n}it" if r.weights_from else None))
        out_claims += [replace(c, name=f"{c.name}-{n}it", better=f"{c.better}-{n}it",
                               than={t: f"{v}-{n}it" for t, v in c.than.items()}) for c in claims]
    return out_rows, tuple(out_claims)


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
        if preset in (m.superseded or {}):
            raise ConfigError(f"manifest {m.name} is superseded on preset {preset} by {m.superseded[preset]} (its "
                              f"superseded key): run that one")
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
