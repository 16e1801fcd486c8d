"""Copy generated tables from results/ into README.md and docs/*.md between include markers.

    python -m experiments.readme [--check]

README.md and the files in docs/ hold blocks of the form

    <!-- include results/synthetic-cpu/table1.md -->
    ...replaced by the file's content...
    <!-- end include -->

so every results table in the documentation is the file that `reproduce.py aggregate` wrote, never
typed by hand. `--check` exits non-zero when a file is out of date (used by the tests).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from infra.atomic import write_text
from infra.provenance import ROOT

BLOCK = re.compile(r"(<!-- include (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)


def render(readme: str, root: Path = ROOT) -> str:
    """README text with every include block filled from its file (a missing file says so)."""
    def fill(m: re.Match) -> str:
        path = root / m["path"]
        body = path.read_text() if path.is_file() else f"*({m['path']} has not been generated yet)*\n"
        if not body.endswith("\n"):
            body += "\n"
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, readme)


def documents(root: Path = ROOT) -> list[Path]:
    """The files whose include blocks are filled: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only report whether the files are up to date")
    args = p.parse_args(argv)
    stale = []
    for path in documents():
        old = path.read_text()
        new = render(old)
        if new == old:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            write_text(path, new)
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python -m experiments.readme", file=sys.stderr)
        return 1 if stale else 0
    print(f"include blocks: {', '.join(map(str, stale)) or 'all'} {'updated' if stale else 'already current'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
