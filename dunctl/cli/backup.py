"""`dunctl backup`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dunctl.backup import backup_ledger
from dunctl.cli.common import JsonOption, handles_errors, load, out, print_json, state


@handles_errors
def backup(
    path: Annotated[Path, typer.Argument(help="Where to write the copy.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Overwrite PATH if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Copy the ledger consistently while dunctl runs (SQLite's online backup; safe during a tick).

    dunctl backup /var/backups/dunctl/dunctl-$(date +%F).db
    """
    config = load()
    state.ledger_path = config.ledger_path
    result = backup_ledger(config.ledger_path, path, force=force)
    if as_json:
        print_json(result.to_dict())
        return
    out.print(f"backed up {result.source} to {result.path} ({result.bytes:,} bytes)", markup=False)
