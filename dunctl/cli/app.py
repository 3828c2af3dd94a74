"""Wiring only: the Typer app, its global options, and one line per command.

Commands are registered lazily: a command's module (and what it imports: the Stripe SDK, Jinja2, the report, the
simulation) is imported only when that command runs, so a cron tick does not pay for the demo. `--help` lists the
commands from the one-line summaries below (tests/test_startup.py checks they match each command's docstring).
A command module that fails to import fails loudly when that command (or the test) loads it.
"""

from __future__ import annotations

import gc
import importlib
import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from dunctl import __version__
from dunctl.cli.options import add_shared_options
from dunctl import collector

# dunctl uses no pydantic plugin, and looking for plugins reads every installed distribution's entry points
# (importlib.metadata): 20-30 ms of CPU in every process that validates a config, a tenth of an idle tick. A user who
# sets the variable keeps their own value.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

EXIT_CODES = ("Exit codes: 0 ok; 1 an action failed (the rest still ran; details on stderr and in the ledger); "
              "2 usage, config or ledger error (nothing changed); 3 another tick holds the ledger's lock.")

# name -> (module, attribute: a command function or a Typer sub-app, the one-line summary `--help` shows)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("dunctl.cli.setup", "init",
             "Write a starter config, sequences and templates into DIR, and create its ledger (never overwrites)."),
    "check": ("dunctl.cli.setup", "check",
              "Validate the config and templates, and check that tick can run (keys, credentials, ledger, outbox)."),
    "sync": ("dunctl.cli.sync", "sync",
             "Pull changes from Stripe into the ledger and open or close cases (no steps are run)."),
    "tick": ("dunctl.cli.tick", "tick", "Sync, open and close cases, and run every due step exactly once."),
    "status": ("dunctl.cli.status", "status",
               "Show the open cases, most at risk first, with revenue at risk per currency."),
    "explain": ("dunctl.cli.explain", "explain",
                "Why a case is where it is: the segment rule that matched, each step's state, what happens next."),
    "backup": ("dunctl.cli.backup", "backup",
               "Copy the ledger consistently while dunctl runs (SQLite's online backup; safe during a tick)."),
    "preview": ("dunctl.cli.preview", "preview",
                "Render a template exactly as it would be sent, for a real case or a sample one; sends and changes "
                "nothing."),
    "report": ("dunctl.cli.report", "report", "Show recovery metrics for the cases first failed in a period."),
    "demo": ("dunctl.cli.demo", "demo",
             "Watch dunning run on a simulated Stripe account: no key, no network, nothing sent."),
    "simulate": ("dunctl.cli.simulate", "simulate",
                 "Run the same customers under each config or sequence set, side by side. Nothing is sent."),
    "case": ("dunctl.cli.case", "app", "Look at one case, or take it over."),
    "customer": ("dunctl.cli.customer", "app", "Look at one customer: notices sent, cases, timeline."),
}


def load_command(name: str):
    """The real click command for `name`, importing its module now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(module), attribute)
    gc.freeze()   # what importing made lives as long as the process: the cyclic collector need not walk it (main)
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)
    else:
        single = typer.Typer(add_completion=False)   # completion is installed once, from `dunctl`
        single.command(name=name)(target)
        command = typer.main.get_command(single)
    command.name = name
    add_shared_options(command)   # -c after the command, --new-ledger, an example where the docstring has none
    return command


class LazyGroup(TyperGroup):
    """A group whose commands in COMMANDS are imported on first use; help lists them from their summaries."""

    _listing = False

    def list_commands(self, ctx) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            summary = COMMANDS[cmd_name][2]
            return TyperCommand(name=cmd_name, short_help=summary, help=summary)
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx, formatter) -> None:
        self._listing = True
        try:
            return super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="dunctl",
    cls=LazyGroup,
    help="Automated dunning for Stripe: recover failed subscription payments, from cron.\n\n"
         "dunctl init billing && cd billing && dunctl check && dunctl tick",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold the Stripe key
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dunctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[Path, typer.Option("--config", "-c", envvar="DUNCTL_CONFIG",
                                         help="The config file.")] = Path("dunctl.yaml"),
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Append one JSON line per tick and per "
                                                  "action to this file (overrides log.path).",
                                                  show_default=False)] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    from dunctl.cli import common   # lazy: see dunctl/lazy.py

    common.state.reset(config, log_file)


def main() -> None:
    collector.configure()     # a pass of the cyclic collector every 10,000 allocations: dunctl/collector.py
    app()
