"""Sweeps from the command line: `--set key=value` on every row of a manifest, `--grid key=v1,v2` over them.

    python reproduce.py table1 --preset synthetic-cpu --set optim.lr=0.02
    python reproduce.py table1 --preset synthetic-cpu --grid method.name=uncertainty,dwa --grid optim.lr=0.01,0.02

`--set` overrides are applied to every row after the row's own (and its per-preset) overrides, as
train.py's `key=value` would be. Each `--grid` multiplies the rows: one row per combination of values,
named `<row>.<key>-<value>...`. Nothing is written to YAML: the swept manifest is derived in memory and
named `<manifest>--<tag>` (tag: a hash of the flags in order), so its tables go to
results/<preset>/<manifest>--<tag>.{json,md} and never replace the manifest's own table. Every run is
still named by its config's identity, so running the same flags again reuses every finished run, and a
grid point that equals an existing run (of any manifest) is that run.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import re

from engine.config import ConfigError
from experiments.manifest import Manifest

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _key(key: str, flag: str, text: str) -> str:
    key = key.strip()
    if not _KEY.match(key):
        raise argparse.ArgumentTypeError(f"{flag} {text!r}: {key!r} is not a dotted config key such as optim.lr")
    return key


def parse_set(text: str) -> tuple[str, str]:
    """argparse type of --set: `key=value` -> (key, raw value)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set expects key=value (e.g. optim.lr=0.02), got {text!r}")
    key, value = text.split("=", 1)
    return _key(key, "--set", text), value


def split_values(text: str) -> list[str]:
    """`a,b,[c,d]` -> ["a", "b", "[c,d]"]: commas inside brackets or braces belong to the value."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += ch
    return [v.strip() for v in [*values, current]]


def parse_grid(text: str) -> tuple[str, tuple[str, ...]]:
    """argparse type of --grid: `key=v1,v2,...` -> (key, (v1, v2, ...)); values distinct, none empty."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--grid expects key=v1,v2,... (e.g. optim.lr=0.01,0.02), got {text!r}")
    key, raw = text.split("=", 1)
    values = split_values(raw)
    if not raw.strip() or any(v == "" for v in values):
        raise argparse.ArgumentTypeError(f"--grid {text!r}: empty value in the list")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"--grid {text!r}: a value is listed twice")
    return _key(key, "--grid", text), tuple(values)


def _nest(pairs) -> dict:
    """[("optim.lr", "0.01")] -> {"optim": {"lr": "0.01"}} (raw text: read as train.py reads key=value)."""
    out: dict = {}
    for key, value in pairs:
        node = out
        *parents, last = key.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[last] = value
    return out


def _merge(base: dict, top: dict) -> dict:
    """`top` over `base`, mappings merged key by key."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flags_text(sets, grids) -> str:
    """The flags as typed: `--set a=1 --grid b=x,y`."""
    return " ".join([*(f"--set {k}={v}" for k, v in sets), *(f"--grid {k}={','.join(vs)}" for k, vs in grids)])


def sweep_tag(sets, grids) -> str:
    """8 hex digits naming the flags (in order: a later --set of the same key wins)."""
    blob = json.dumps({"set": [list(s) for s in sets], "grid": [[k, list(vs)] for k, vs in grids]})
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def sweep_manifest(manifest: Manifest, preset: str, sets=(), grids=()) -> Manifest:
    """`manifest` with `sets` applied to every row (for `preset`) and its rows multiplied by `grids`."""
    if not sets and not grids:
        return manifest
    keys = [k for k, _ in grids]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"--grid names {sorted(k for k in keys if keys.count(k) > 1)[0]} twice")
    both = sorted(set(keys) & {k for k, _ in sets})
    if both:
        raise ConfigError(f"{both[0]} is given by both --set and --grid")
    combos = list(itertools.product(*(vs for _, vs in grids))) if grids else [()]
    rows = []
    for combo in combos:
        chosen = list(zip(keys, combo))
        suffix = "".join(f".{k}-{_UNSAFE.sub('_', v)}" for k, v in chosen)
        for row in manifest.rows:
            presets = dict(row.presets or {})
            presets[preset] = _merge(presets.get(preset, {}), _nest([*sets, *chosen]))
            label = row.label + (" (" + ", ".join(f"{k}={v}" for k, v in chosen) + ")" if chosen else "")
            rows.append(dataclasses.replace(
                row, name=row.name + suffix, label=label, presets=presets,
                weights_from=row.weights_from + suffix if row.weights_from else None))
    flags = flags_text(sets, grids)
    grid = len(combos) > 1 or bool(grids)
    return dataclasses.replace(
        manifest, name=f"{manifest.name}--{sweep_tag(sets, grids)}", title=f"{manifest.title} ({flags})",
        description=(manifest.description + f" Swept from the command line: {flags}; this table is regenerated by "
                     f"`python reproduce.py aggregate {manifest.name} --preset {preset} {flags}`.").strip(),
        rows=tuple(rows),
        # row names change in a grid: comparisons between named rows are not defined across grid points
        baselines=None if grid else manifest.baselines, claims=() if grid else manifest.claims)


def sweep_manifests(manifests: list[Manifest], preset: str, sets=(), grids=()) -> list[Manifest]:
    """Every manifest swept (see sweep_manifest); a note on what a grid leaves out."""
    out = [sweep_manifest(m, preset, sets, grids) for m in manifests]
    for m in manifests:
        if grids and (m.baselines or m.claims):
            print(f"note: {m.name} with --grid: its single-task baselines (Delta_m) and claims are left out of "
                  "the swept table (their rows are renamed per grid point)")
    return out
