"""Migrate run records written before experiment identities (one-off, kept for old result folders).

    python -m experiments.migrate results/<preset>/runs [--dry-run]

The first runner kept one JSON per (experiment file, seed), `<experiment>-seed<k>.json`, with the
config in the old layout (a flat `weighting` section) and a `config_hash` over every field, so a
new option changed every hash. This rewrites each such file as today's record,
`<identity>.json` (identity: engine.config.Config.identity), with the config upgraded, and removes
the old file; several old files of one run (a sweep endpoint and its Table 1 row) become one.
Records already in today's format are left alone. The repository's own results needed no
migration: the first runner's records were never committed, and its tables were regenerated from
new runs (see the README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import config_from_dict
from experiments.records import read_json
from infra.atomic import write_json

OLD_ONLY = ("config_hash", "experiment", "run_dir", "weighting")  # keys today's records do not have


def migrate_record(data: dict) -> dict:
    """Today's record for one old-format record."""
    cfg = config_from_dict(data["config"])
    record = {k: v for k, v in data.items() if k not in OLD_ONLY}
    record["config"] = cfg.to_dict()
    record["identity"] = cfg.identity()
    record["seed"] = cfg.seed
    if "weighting" in data:
        record["method_state"] = data["weighting"]
    return record


def migrate(directory: Path, dry_run: bool = False) -> list[tuple[Path, Path]]:
    """Rewrite every old-format record in `directory`; returns (old file, new file) pairs."""
    directory = Path(directory)
    done = []
    for path in sorted(directory.glob("*.json")):
        data = read_json(path)
        if "config_hash" not in data or "identity" in data:
            continue
        record = migrate_record(data)
        new = directory / f"{record['identity']}.json"
        done.append((path, new))
        if dry_run:
            continue
        if not new.exists():
            write_json(new, record)
        path.unlink()
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path, help="a results/<preset>/runs folder")
    p.add_argument("--dry-run", action="store_true", help="only say what would be rewritten")
    args = p.parse_args(argv)
    if not args.directory.is_dir():
        print(f"error: {args.directory} is not a directory", file=sys.stderr)
        return 2
    try:
        pairs = migrate(args.directory, args.dry_run)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for old, new in pairs:
        print(f"{old.name} -> {new.name}")
    print(f"{len(pairs)} old record(s) {'to migrate' if args.dry_run else 'migrated'} in {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
