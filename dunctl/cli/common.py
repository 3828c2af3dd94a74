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
from collections.abc import Iterator
from typing import Annotated, Any, Callable

import typer

from dunctl.activity_log import append_tick, secret_values
from dunctl.clock import parse_instant, system_now
from dunctl.config import Config, load_config
from dunctl.errors import ConfigError, DunctlError, UsageError
from dunctl.ledger import Ledger
from dunctl.ledger.file import sqlite_error

class _Console:
    """A Rich console made on first use: a cron tick with nothing to say never imports Rich (15 ms a run)."""

    def __init__(self, **options):
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_console", None)

    @property
    def real(self):
        if self._console is None:
            from rich.console import Console   # lazy: see dunctl/lazy.py

            object.__setattr__(self, "_console", Console(**self._options))
        return self._console

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __setattr__(self, name, value):
        setattr(self.real, name, value)


# Results go to stdout; progress, diagnostics and errors to stderr. A fixed width keeps output stable in pipes.
# emoji=False: Rich turns ':100:' into an emoji even with markup off, and 'dunctl.yaml:100:' (a config error on
# line 100) is exactly that; dunctl prints file positions and customer data, never emoji codes.
out = _Console(highlight=False, soft_wrap=False, emoji=False)
err = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (keys documented in docs/reference.md).")]
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


@contextlib.contextmanager
def open_ledger(config: Config, must_exist: bool = True) -> Iterator[Ledger]:
    """The config's ledger for the length of one command, closed after it (every command opens its ledger
    here). It must exist (made by `dunctl init`) unless the command was given --new-ledger: a missing or empty
    ledger is never replaced silently, which would run again every step still within grace."""
    state.ledger_path = config.ledger_path
    with Ledger.open(config.ledger_path, create=state.new_ledger or not must_exist) as ledger:
        yield ledger


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
def sync_progress(syncing: bool = True):
    """A progress line on stderr while a sync runs, only on a terminal (cron and pipes get nothing)."""
    if not syncing or not err.is_terminal:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn   # lazy: see dunctl/lazy.py

    with Progress(SpinnerColumn(), TextColumn("syncing from Stripe: {task.description}"), TimeElapsedColumn(),
                  console=err.real, transient=True) as bar:
        task = bar.add_task("starting", total=None)

        def update(result) -> None:
            bar.update(task, description=f"{result.invoices_new + result.invoices_updated:,} invoices, "
                                         f"{result.events:,} events, {result.requests:,} requests")

        yield update


def log_tick(config: Config, result) -> None:
    """Append the tick to the activity log when --log-file or log.path asks for one. cli/tick.py calls this
    right after run_tick; a log that cannot be written is an error on stderr, never a lost tick."""
    path = state.log_path or (config.base_dir / config.file.log.path if config.file.log.path else None)
    if path is None:
        return
    try:
        append_tick(path, result, secret_values(config, os.environ))
    except OSError as error:
        err.print(f"error: could not append to the log {path}: {error.strerror or error}", markup=False)
