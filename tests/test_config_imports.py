"""The config package is the bottom of dunctl's layers: nothing it imports imports it back, not even from inside a
function (where such a cycle used to hide: dunctl.experiments asked dunctl.config for Sequence at call time)."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import dunctl
from dunctl.config import ConfigFile, Sequence, Step
from dunctl.experiments import Arm, Experiment
from dunctl.notices.config import NoticesConfig
from dunctl.strict import Strict

PACKAGE = Path(dunctl.__file__).parent


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every dunctl module `path` imports anywhere in it (functions too), with the packages those run first."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            named |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    found = set()
    for name in named:
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in modules}
    return found


def test_nothing_the_config_package_imports_imports_it_back():
    modules = _modules()
    config = {name for name in modules if name == "dunctl.config" or name.startswith("dunctl.config.")}
    came_from: dict[str, str] = {}
    queue = deque()
    for name in sorted(config):
        for target in sorted(_imports(modules[name], modules) - config):
            came_from.setdefault(target, name)
            queue.append(target)
    cycles: set[str] = set()
    seen = set(came_from)
    while queue:
        name = queue.popleft()
        for target in sorted(_imports(modules[name], modules)):
            if target in config:
                chain = [target, name]
                while chain[-1] in came_from:
                    chain.append(came_from[chain[-1]])
                cycles.add(" <- ".join(chain))
            elif target not in seen:
                seen.add(target)
                came_from[target] = name
                queue.append(target)
    assert not cycles, cycles


def test_every_section_of_the_config_is_built_on_the_one_strict_base():
    for model in (ConfigFile, Sequence, Step, NoticesConfig, Experiment, Arm):
        assert issubclass(model, Strict), model
    assert Strict.model_config["extra"] == "forbid"
