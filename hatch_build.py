"""The wheel's build hook: the shipped templates compiled into the wheel (dunctl/messages/compiled.py `ship`), so
that the first demo on a machine loads them instead of compiling them (about a third of its CPU).

It runs in the build's own environment, which has Jinja (this hook's dependency, pyproject.toml) and none of
dunctl's other dependencies: the two modules it needs are loaded from their files, without their package's
`__init__` (which imports the rest of dunctl). Whatever goes wrong here, the wheel is built without the entries and
dunctl compiles the templates on first use, as a source checkout does."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SHIPPED_AS = "dunctl/shipped/compiled-templates"     # dunctl/messages/compiled.py SHIPPED, inside the wheel


class CompiledTemplates(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        self._out: Path | None = None
        if self.target_name != "wheel" or version == "editable":
            return                     # an editable install compiles from the source tree, as a checkout does
        out = Path(tempfile.mkdtemp(prefix="dunctl-compiled-templates-"))
        try:
            compiled = _dunctl_module(Path(self.root), "dunctl.messages.compiled", "dunctl.messages.environment")
            count = compiled.ship(Path(self.root) / "sequences" / "templates", out)
        except Exception as exc:      # noqa: BLE001 - any failure only costs the first run its compile
            shutil.rmtree(out, ignore_errors=True)
            self.app.display_warning(f"dunctl: the shipped templates are not precompiled ({type(exc).__name__}: "
                                     f"{exc}); they compile on first use")
            return
        self._out = out
        build_data["force_include"][str(out)] = SHIPPED_AS
        self.app.display_info(f"dunctl: {count} shipped templates precompiled into {SHIPPED_AS}")

    def finalize(self, version: str, build_data: dict, artifact_path: str) -> None:
        if getattr(self, "_out", None) is not None:
            shutil.rmtree(self._out, ignore_errors=True)


def _dunctl_module(root: Path, name: str, *needs: str):
    """dunctl's module `name` (and first each of `needs`) loaded from its file in `root`: `dunctl` itself and
    `dunctl.cache` import nothing but the standard library, the packages between them much more."""
    sys.path.insert(0, str(root))
    try:
        for module_name in (*needs, name):
            path = root.joinpath(*module_name.split(".")).with_suffix(".py")
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
        return sys.modules[name]
    finally:
        sys.path.remove(str(root))
