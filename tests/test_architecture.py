"""The folder-level import graph has no cycle, lazy imports (inside functions) included.

Each top-level folder (data, models, losses, ...) or top-level script (train, evaluate, reproduce) is one
part; part A depends on part B when any module of A imports a module of B anywhere, read from the source
with `ast` (nothing is imported). Levels: a part with no dependency is on level 0, any other part one
above the highest part it imports, so every import points down.
"""

import ast
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in files if (ROOT / f).exists()]


def _part(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def import_graph() -> dict[str, set[str]]:
    """{part: the parts it imports}, from every import statement of every tracked Python file."""
    sources = _sources()
    parts = {_part(p.relative_to(ROOT)) for p in sources}
    graph: dict[str, set[str]] = {p: set() for p in parts}
    for path in sources:
        relative = path.relative_to(ROOT)
        here = _part(relative)
        package = list(relative.parent.parts)
        for node in ast.walk(ast.parse(path.read_text(), str(relative))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the file's own package, `level - 1` folders up
                    base = package[: len(package) - node.level + 1]
                    names = [".".join([*base, node.module] if node.module else base)]
                else:
                    names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0] if name else here
                if top in parts and top != here:
                    graph[here].add(top)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one part (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    """{part: its level} of an acyclic graph."""
    level: dict[str, int] = {}

    def of(v: str) -> int:
        if v not in level:
            level[v] = 1 + max((of(w) for w in graph[v]), default=-1)
        return level[v]

    for v in graph:
        of(v)
    return level


def test_the_folder_level_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"data", "models", "losses", "tasks", "infra", "engine", "evaluation", "experiments"} <= set(graph)
    assert cycles(graph) == []


def test_the_ground_floor_imports_nothing_of_the_project():
    graph = import_graph()
    assert graph["tasks"] == set() and graph["infra"] == set()
    assert "engine" not in graph["data"]
    assert not graph["losses"] & {"evaluation", "engine", "experiments", "data", "models"}


def test_the_cycle_finder_finds_a_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert levels({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == {"a": 1, "b": 0, "c": 2}


if __name__ == "__main__":  # python tests/test_architecture.py: print the graph by level
    g = import_graph()
    found = cycles(g)
    if found:
        print("cycles:", found)
    else:
        lv = levels(g)
        for n in range(max(lv.values()) + 1):
            print(n, " ".join(f"{p}->{{{','.join(sorted(g[p]))}}}" for p in sorted(lv) if lv[p] == n))
