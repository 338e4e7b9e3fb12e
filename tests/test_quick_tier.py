"""python -m pytest -q tests/test_quick_tier.py

`pytest -m "not slow"` is the quick tier: it must still reach every module of harness/. Read from
the source (ast), without running the tests: a module is reached when a quick test (a test function
not marked `slow`, in a file not marked `slow` as a whole) imports it, at the top of its file or in
its own body, directly or through the imports of the modules it imports (tests/test_imports.py's
graph, function-level imports included), or runs it as a process (`python -m NAME`; `run_harness`:
harness.__main__), directly or through a module that does. This says what a quick test
can reach, not what it executes: a cheap guard that marking a test `slow` does not leave a module
with no quick test at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.test_imports import _modules, import_graph

TESTS = Path(__file__).resolve().parent


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any("slow" in ast.unparse(d) for d in decorators)


def _imports(nodes: list[ast.AST], modules: set[str]) -> set[str]:
    """harness modules named by the imports and the strings (python -m NAME) under `nodes`."""
    out: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                out.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules:
                out.add(node.value)
                out.add(f"{node.value}.__main__")  # python -m harness.plan runs its __main__
            elif isinstance(node, ast.Name) and node.id == "run_harness":
                out.add("harness.__main__")
    return {m for m in out if m in modules}


def quick_roots() -> set[str]:
    """The harness modules the quick tests import or run themselves."""
    modules = set(_modules())
    roots: set[str] = set()
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        marked = [n for n in tree.body if isinstance(n, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)]
        if any("slow" in ast.unparse(n.value) for n in marked):
            continue  # the whole file is slow
        tests = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name.startswith(("test", "Test"))]
        quick = [n for n in tests if not _is_slow(n.decorator_list)]
        if not quick:
            continue
        helpers = [n for n in tree.body if n not in tests]  # imports, fixtures and helpers the tests call
        roots |= _imports(helpers + quick, modules)
    return roots


def reached(roots: set[str]) -> set[str]:
    """`roots` and every module they import, or start as a process (`[sys.executable, "-m", NAME]`)."""
    modules = _modules()
    graph = import_graph()
    for name, (path, _) in modules.items():
        graph[name] |= {n.value for n in ast.walk(ast.parse(path.read_text()))
                        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in modules}
    seen, todo = set(roots), list(roots)
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    # importing a module runs its packages' __init__ first
    return seen | {m.rsplit(".", i)[0] for m in seen for i in range(1, m.count(".") + 1)}


def test_every_module_is_reached_by_a_quick_test():
    missing = sorted(set(_modules()) - reached(quick_roots()))
    assert not missing, f"no quick test reaches: {', '.join(missing)}"


def test_the_check_sees_a_module_go_missing():
    roots = quick_roots()
    assert "harness.__main__" in roots and "harness.plan.__main__" in roots
    assert "harness.tasks.verify_worker" in reached({"harness.tasks.verify"})  # started as a process
    some = reached({"harness.rollout"})
    assert "harness.rollout.plan" in some and "harness.report.plots" not in some
