"""Wiring only: the Typer app, its global options, and one line per command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from dunctl import __version__
from dunctl.cli import case, common, customer, explain, setup, status, sync, tick

app = typer.Typer(
    name="dunctl",
    help="Automated dunning for Stripe: recover failed subscription payments, from cron.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals can hold the Stripe key
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dunctl {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    config: Annotated[Path, typer.Option("--config", "-c", envvar="DUNCTL_CONFIG",
                                         help="The config file.")] = Path("dunctl.yaml"),
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    common.state.config_path = config


app.command()(setup.init)
app.command()(setup.check)
app.command()(sync.sync)
app.command()(tick.tick)
app.command()(status.status)
app.command()(explain.explain)
app.add_typer(case.app, name="case")
app.add_typer(customer.app, name="customer")


def _optional_commands() -> None:
    """Commands whose modules land separately (report, demo, simulate) register themselves when present."""
    import importlib

    for module, name in (("dunctl.cli.report", "report"), ("dunctl.cli.demo", "demo"),
                         ("dunctl.cli.simulate", "simulate")):
        try:
            command = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        app.command(name=name)(command)


_optional_commands()


def main() -> None:
    os.environ.setdefault("COLUMNS", os.environ.get("COLUMNS", "120"))
    app()
