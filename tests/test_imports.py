"""python -m pytest -q tests/test_imports.py

The layers of harness/ read one way: no import cycle among its modules, read from the source (ast).

Every import counts, at module level or inside a function: a function-level import only defers a
cycle to run time (plan.sweep -> sweepers.grid -> slurm.checks -> plan.sweep was one, all of it in
function bodies), the layers still depend on each other both ways. An edge goes to the module
imported: `from harness.x import y` to harness.x.y when that is a module, else to harness.x. A
package's own __init__ running first is not counted (every import of a submodule would then be an
edge to its package, and a package that imports its submodules would be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package __init__)."""
    out = {}
    for path in sorted((ROOT / "harness").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the harness modules it imports anywhere in its file."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in mods.items():
        package = name if is_pkg else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from . import x, from ..y import z
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.update(f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules, found with Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

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
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, g) for g in groups]


def _path_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A cycle through the group's first module, by breadth-first search inside the group."""
    start = min(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(came[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came:
                    came[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle in {group}")


def test_no_import_cycle_in_harness():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    real = import_graph()
    assert "harness.distributed.base" in real["harness.parallel"]  # edges are read: the test could fail
    assert "harness.sweep_grid" in real["harness.plan.sweep"]
    assert cycles({**real, "harness.distributed.base": real["harness.distributed.base"] | {"harness.parallel"}})


def test_the_planner_expands_a_grid_as_the_sweeper_does():
    # plan.sweep and the grid sweeper share one expansion (harness.sweep_grid, below both)
    from harness.plan import sweep as plan_sweep
    from harness.sweep_grid import expand
    from harness.sweepers import grid

    assert grid.expand is expand and plan_sweep.expand is expand
    common = ["seed=0,1", "trainer.steps=2"]
    arms = [{"optimizer": "sgd", "optimizer.lr": [0.01, 0.1]}, {"optimizer": "adamw", "optimizer.lr": "1e-6,1e-5"}]
    assert len(expand(common, arms, [])) == 8
    assert len(expand(common, arms, ["model=tiny,smollm2-135m"])) == 16
