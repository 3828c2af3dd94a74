"""Options every command shares, added to each command as it is loaded (so command modules need not repeat
them): `-c/--config` after the command too (`dunctl tick -c x.yaml`), and `--new-ledger` on the commands that
may start a ledger. Also an example for the commands whose docstring has none. Imports nothing heavy: `--help`
loads this module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperOption

NEW_LEDGER_COMMANDS = frozenset({"tick", "sync"})

# An example for each command whose docstring has none (those modules belong to other parts of the code).
EXAMPLES = {
    "sync": "dunctl sync --full",
    "status": "dunctl status --all --json",
    "case": "dunctl case show in_1P2x3Y",
    "case show": "dunctl case show in_1P2x3Y",
    "case pause": "dunctl case pause in_1P2x3Y --reason 'customer called, paying by wire'",
    "case resume": "dunctl case resume in_1P2x3Y --reason 'wire did not arrive'",
    "case close": "dunctl case close in_1P2x3Y --reason 'settled offline'",
}

# Typer 0.29 shows every flag as `--dry-run <bool>`; a flag takes no value, so show none.
_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type_rich(self, ctx)


def _set_config(value: Path | None) -> None:
    if value is not None:
        from dunctl.cli.common import state   # lazy: see dunctl/lazy.py

        state.config_path = value


def _set_new_ledger(value: bool) -> None:
    if value:
        from dunctl.cli.common import state   # lazy: see dunctl/lazy.py

        state.new_ledger = True


def _shared_option_params() -> dict[str, Any]:
    """The shared options as parameters, built by Typer itself from an ordinary signature."""

    def shared(
        config: Annotated[Path | None, typer.Option(
            "--config", "-c", callback=_set_config, is_eager=True, show_default=False,
            help="The config file (also accepted before the command).")] = None,
        new_ledger: Annotated[bool, typer.Option(
            "--new-ledger", callback=_set_new_ledger,
            help="Start an empty ledger if there is none. For a first run only: on a lost ledger it would run "
                 "again every step still within grace; restore the backup instead.")] = False,
    ) -> None:
        pass

    builder = typer.Typer()
    builder.command()(shared)
    params = {param.name: param for param in typer.main.get_command(builder).params}
    for param in params.values():
        param.expose_value = False  # the callbacks record them; command functions never see them
    return params


_SHARED = _shared_option_params()


def add_shared_options(command, path: str = "") -> None:
    """Give `command` (and, for a group such as `case`, each of its commands) the shared options and, where its
    help has none, an example."""
    path = f"{path} {command.name}".strip()
    if path in EXAMPLES and "dunctl " not in (command.help or "") and not command.epilog:
        command.epilog = f"Example: {EXAMPLES[path]}"
    if hasattr(command, "commands"):
        for sub in command.commands.values():
            add_shared_options(sub, path)
        return
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if "--config" not in names:
        command.params.append(_SHARED["config"])
    if command.name in NEW_LEDGER_COMMANDS and "--new-ledger" not in names:
        command.params.append(_SHARED["new_ledger"])
