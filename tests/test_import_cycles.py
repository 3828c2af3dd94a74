"""No import cycle inside the package, counting the imports written inside functions too: a cycle hidden by a
function-level import still ties two modules into one (neither can be read, tested or replaced alone), and it
breaks the day someone moves the import to the top. Imports under `if TYPE_CHECKING:` never run and name types
only: they are not counted."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dunctl"

# Cycles still to cut, each named with the seam that cuts it (issue #22). The test fails on any other cycle, and
# on a listed one that no longer exists (so this list only shrinks).
KNOWN: list[set[str]] = []


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _run_time_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (node for statement in child.orelse for node in _run_time_nodes_of(statement))
            continue
        yield child
        yield from _run_time_nodes(child)


def _run_time_nodes_of(statement: ast.AST):
    yield statement
    yield from _run_time_nodes(statement)


def _imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `module` imports anywhere in its text (top level or inside a function)."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    targets = set()
    for node in _run_time_nodes(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            targets |= import_targets(node, module, path, modules)
    return {found for name in targets if name.startswith("dunctl") and (found := known(name)) not in (None, module)}


def import_targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, modules) -> set[str]:
    """The modules one import statement in `module` loads: `from a import b` is a.b when that is a module."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join([*anchor[:len(anchor) - node.level + 1], *([base] if base else [])])
    return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}


def import_cycles() -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iteratively)."""
    modules = _modules()
    graph = {name: _imported(name, path, modules) for name, path in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


def test_the_package_has_no_import_cycle_but_the_known_ones():
    cycles = import_cycles()
    new = [sorted(cycle) for cycle in cycles if cycle not in KNOWN]
    gone = [sorted(cycle) for cycle in KNOWN if cycle not in cycles]
    assert not new, f"import cycles (counting imports inside functions): {new}"
    assert not gone, f"these cycles are gone: take them off KNOWN: {gone}"


def test_the_cycle_finder_sees_a_cycle_through_an_import_inside_a_function(tmp_path, monkeypatch):
    package = tmp_path / "dunctl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from dunctl import b\n")
    (package / "b.py").write_text("def later():\n    from dunctl.a import thing\n")
    (package / "c.py").write_text("from . import a\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dunctl import e\n")
    (package / "e.py").write_text("from dunctl import d\n")   # d names e's types only: no cycle
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    assert import_cycles() == [{"dunctl.a", "dunctl.b"}]


def test_every_module_of_the_package_imports():
    """A module imported only lazily (a command's, an action's) could name something that moved away and fail only
    when a user reaches it: the hand-off step once imported `Effect` from where it no longer was."""
    import importlib
    import pkgutil

    import dunctl

    failed = {}
    for module in pkgutil.walk_packages(dunctl.__path__, "dunctl."):
        if module.name != "dunctl.__main__":
            try:
                importlib.import_module(module.name)
            except Exception as error:   # noqa: BLE001 - every failure is listed, not only the first
                failed[module.name] = repr(error)
    assert not failed, failed
