"""What every command shares: the config path, the clock, the ledger, JSON output, and one error path."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import sqlite3
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console
from typer.core import TyperGroup, TyperOption

from dunctl.clock import parse_instant, system_now
from dunctl.config import Config, load_config
from dunctl.errors import ConfigError, DunctlError, UsageError
from dunctl.ledger import Ledger
from dunctl.preflight import sqlite_error

# Results go to stdout; progress, diagnostics and errors to stderr. A fixed width keeps output stable in pipes.
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (keys documented in README).")]
NowOption = Annotated[str | None, typer.Option("--now", help="Act as if it were this UTC time (ISO 8601).",
                                               show_default=False)]


class State:
    config_path: Path = Path("dunctl.yaml")
    new_ledger: bool = False            # --new-ledger: this command may create the ledger
    ledger_path: Path | None = None     # the ledger this command opened, to name it in errors
    log_path: Path | None = None        # --log-file

    def reset(self, config_path: Path, log_path: Path | None = None) -> None:
        """Start of every invocation (tests run many in one process): nothing carries over."""
        self.config_path, self.log_path = config_path, log_path
        self.new_ledger, self.ledger_path = False, None


state = State()


def config_path() -> Path:
    return state.config_path


def load() -> Config:
    return load_config(state.config_path)


def now_from(option: str | None) -> datetime:
    """The one clock: --now when given, else the system clock, read once per command."""
    return parse_instant(option) if option else system_now()


def ledger_now(ledger: Ledger, option: str | None) -> datetime:
    """The clock for commands that look at a ledger: --now, else a simulated ledger's own last tick (a demo's
    month ends in the future), else the system clock."""
    if option:
        return parse_instant(option)
    if ledger.get_state("account_mode") == "simulated":
        last = (ledger.get_state("simulation") or {}).get("last_tick")
        if last:
            return parse_instant(last)
    return system_now()


def open_ledger(config: Config, must_exist: bool = True) -> Ledger:
    """The config's ledger, which must exist (made by `dunctl init`) unless the command was given --new-ledger.
    A missing or empty ledger is never replaced silently: that would run again every step still within grace."""
    state.ledger_path = config.ledger_path
    return Ledger.open(config.ledger_path, create=state.new_ledger or not must_exist)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(error: DunctlError, as_json: bool = False) -> None:
    """The one error path: 'Error: ...' (or JSON) on stderr, then the error's exit code."""
    if as_json:
        payload: dict = {"error": error.message, "hint": error.hint}
        if isinstance(error, ConfigError):
            payload["problems"] = [p.to_dict() for p in error.problems]
        sys.stderr.write(json.dumps(payload) + "\n")
    else:
        if isinstance(error, ConfigError) and len(error.problems) > 1:
            err.print(f"[bold red]Error:[/] {len(error.problems)} problems in the configuration:", markup=True)
            for problem in error.problems:
                err.print(f"  {problem}", markup=False)
        else:
            err.print("[bold red]Error:[/] ", end="", markup=True)
            err.print(error.message, markup=False)
        if error.hint:
            err.print(f"  {error.hint}", markup=False, style="dim")
    raise typer.Exit(error.exit_code)


def handles_errors(func: Callable) -> Callable:
    """Turn DunctlError into its message and exit code; no traceback for what a user can fix."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DunctlError as error:
            fail(error, as_json=bool(kwargs.get("as_json")))
        except sqlite3.Error as error:
            fail(sqlite_error(error, state.ledger_path), as_json=bool(kwargs.get("as_json")))
        except BrokenPipeError:
            raise  # `dunctl report | head`: not a mistake to explain
        except OSError as error:
            # A file the user named (report -o, backup PATH) or the disk itself: one line, no traceback.
            fail(os_error(error), as_json=bool(kwargs.get("as_json")))

    return wrapper


def os_error(error: OSError) -> UsageError:
    where = error.filename or "a file"
    if error.errno == errno.ENOSPC:
        return UsageError(f"cannot write {where}: the disk is full", "free some space and run the command again")
    if isinstance(error, FileNotFoundError):
        parent = Path(str(error.filename)).parent if error.filename else None
        if parent is not None and not parent.exists():
            return UsageError(f"cannot write {where}: its directory does not exist",
                              f"create the directory {parent} first, or choose another path")
        return UsageError(f"no such file: {where}")
    return UsageError(f"cannot use {where}: {error.strerror or error}",
                      "check the path, its permissions and the disk it is on")


def environ() -> dict[str, str]:
    return dict(os.environ)


@contextlib.contextmanager
def sync_progress():
    """A progress line on stderr while a sync runs, only on a terminal (cron and pipes get nothing)."""
    if not err.is_terminal:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("syncing from Stripe: {task.description}"), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def update(result) -> None:
            bar.update(task, description=f"{result.invoices_new + result.invoices_updated:,} invoices, "
                                         f"{result.events:,} events, {result.requests:,} requests")

        yield update


# -- options every command shares ------------------------------------------------------------------------------
# `-c/--config` works before the command (`dunctl -c x.yaml tick`) and after it (`dunctl tick -c x.yaml`), and
# `--new-ledger` belongs to the commands that may start a ledger. Both are added to the commands as Typer builds
# them, so command modules need not repeat them.

NEW_LEDGER_COMMANDS = frozenset({"tick", "sync"})

# Typer 0.29 shows every flag as `--dry-run <bool>`; a flag takes no value, so show none.
_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else _display_type_rich(self, ctx)


def _set_config(value: Path | None) -> None:
    if value is not None:
        state.config_path = value


def _set_new_ledger(value: bool) -> None:
    if value:
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


def _shared_options(command, path: str = "") -> None:
    path = f"{path} {command.name}".strip()
    help_text = command.help or ""
    if path in EXAMPLES and "dunctl " not in help_text and not command.epilog:
        command.epilog = f"Example: {EXAMPLES[path]}"
    if hasattr(command, "commands"):  # a group such as `case`
        for sub in command.commands.values():
            _shared_options(sub, path)
        return
    names = {opt for param in command.params for opt in getattr(param, "opts", [])}
    if "--config" not in names:
        command.params.append(_SHARED["config"])
    if command.name in NEW_LEDGER_COMMANDS and "--new-ledger" not in names:
        command.params.append(_SHARED["new_ledger"])


class DunctlGroup(TyperGroup):
    """The top-level group: adds the shared options to each command it hands out."""

    def get_command(self, ctx, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _shared_options(command)
        return command


def log_tick(config: Config, result) -> None:
    """Append the tick to the activity log when --log-file or log.path asks for one. cli/tick.py calls this
    right after run_tick; a log that cannot be written is an error on stderr, never a lost tick."""
    from dunctl.activity_log import append_tick, secret_values

    path = state.log_path or (config.base_dir / config.file.log.path if config.file.log.path else None)
    if path is None:
        return
    try:
        append_tick(path, result, secret_values(config, os.environ))
    except OSError as error:
        err.print(f"error: could not append to the log {path}: {error.strerror or error}", markup=False)
