"""What every command shares: the config path, the clock, the ledger, JSON output, and one error path."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from dunctl.clock import parse_instant, system_now
from dunctl.config import Config, load_config
from dunctl.errors import ConfigError, DunctlError
from dunctl.ledger import Ledger

# Results go to stdout; progress, diagnostics and errors to stderr. A fixed width keeps output stable in pipes.
out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (keys documented in README).")]
NowOption = Annotated[str | None, typer.Option("--now", help="Act as if it were this UTC time (ISO 8601).",
                                               show_default=False)]


class State:
    config_path: Path = Path("dunctl.yaml")


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


def open_ledger(config: Config, must_exist: bool = False) -> Ledger:
    return Ledger.open_existing(config.ledger_path) if must_exist else Ledger.open(config.ledger_path)


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

    return wrapper


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
