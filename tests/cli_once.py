"""typer's CliRunner builds the app's click command on every `invoke`: dunctl's group, then the command a test
runs, imported and built from its function's signature (about 4 ms of CPU of a 20 ms `status`). A `dunctl`
process builds that command once; so do the tests, within a session (issue #25: the suite's CPU). Click commands
are made to be invoked again and again: each invocation parses into a new context, and dunctl keeps no state in
a command.

The group itself is still built on every invoke (under 1 ms): its shell-completion options follow the
environment a test sets. Only dunctl's own app is touched; any other Typer app a test builds is built as before."""

from __future__ import annotations

import pytest
import typer.testing

from dunctl.cli.app import COMMANDS
from dunctl.cli.app import app as dunctl_app


@pytest.fixture(scope="session", autouse=True)
def _dunctl_commands_built_once_per_session():
    build = typer.testing._get_command
    loaded: dict = {}      # the commands dunctl's group imports on first use (COMMANDS), kept across invokes

    def get_command(app):
        command = build(app)
        if app is dunctl_app:
            loaded.update((name, c) for name, c in command.commands.items() if name not in COMMANDS)
            command.commands = loaded     # the group adds what it loads to this dict: the next invoke has it
        return command

    typer.testing._get_command = get_command
    yield
    typer.testing._get_command = build
