"""Imports at the top, laziness in one place (issue #22): an import written inside a function names a module that
dunctl/lazy.py lists, and says so on its line (`# lazy: see dunctl/lazy.py`); the list names no module that no
function imports any more, so it only shrinks. Imports under `if TYPE_CHECKING:` never run: they are not counted."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from dunctl.lazy import LAZY, allowed
from tests.test_import_cycles import PACKAGE, _modules, import_targets

MARK = "# lazy: see dunctl/lazy.py"


def _in_functions(tree: ast.AST, in_function: bool = False):
    """The import statements inside a function's body (at any depth), skipping `if TYPE_CHECKING:` blocks."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for statement in child.orelse:
                yield from _in_functions(ast.Module(body=[statement], type_ignores=[]), in_function)
            continue
        if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        yield from _in_functions(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


@functools.lru_cache(maxsize=None)
def lazy_imports(package: Path = PACKAGE) -> list[tuple[str, str, bool]]:
    """(where, module imported, whether its line carries the marker) for every import inside a function. Found
    once per package and session: two tests ask, and a pass parses every module (0.3 s of CPU). (The result is
    kept, not the syntax trees: 270,000 objects alive would cost every later full garbage collection 0.1 s.)"""
    modules = _modules()
    found = []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        lines = path.read_text().splitlines()
        for node in _in_functions(ast.parse("\n".join(lines))):
            marked = MARK in lines[node.lineno - 1]
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            found += [(where, target, marked) for target in sorted(import_targets(node, module, path, modules))]
    return found


def test_every_import_inside_a_function_is_named_in_dunctl_lazy_and_marked():
    found = lazy_imports()
    unlisted = [f"{where} {target}" for where, target, _ in found if not allowed(target)]
    unmarked = [f"{where} {target}" for where, target, marked in found if not marked]
    assert not unlisted, ("move these imports to their module's top, or name the module in dunctl/lazy.py with "
                          f"the reason: {unlisted}")
    assert not unmarked, f"say why on the line: `{MARK}`: {unmarked}"


def test_dunctl_lazy_names_only_modules_still_imported_lazily():
    imported = {target for _, target, _ in lazy_imports()}
    stale = [name for name in LAZY if not any(t == name or t.startswith(name + ".") for t in imported)]
    assert not stale, f"no function imports these any more: take them off dunctl/lazy.py: {stale}"


def test_the_finder_sees_an_unmarked_import_in_a_function_and_skips_type_checking(tmp_path):
    package = tmp_path / "dunctl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import json\n"                                   # at the top: not counted
        "if TYPE_CHECKING:\n    from jinja2 import Template\n"
        "def f():\n    import stripe\n"
        "class C:\n    def g(self):\n        from babel import Locale   " + MARK + "\n")
    assert lazy_imports(package) == [("dunctl/a.py:6", "stripe", False), ("dunctl/a.py:9", "babel", True)]
    assert not allowed("dunctl.report") and allowed("babel.numbers") and allowed("dunctl.stripe.gateway")
