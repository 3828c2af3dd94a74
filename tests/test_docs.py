"""The reference pages and the README's command table say what the code does (sqlite-utils' tests/test_docs.py and
llm's generated docs/help.md are the models): a command, option or JSON key added, renamed or dropped fails here
until the docs say so."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _generator()


@pytest.mark.parametrize("page", sorted(generate.PAGES))
def test_each_generated_page_is_what_the_code_generates(page):
    assert (ROOT / "docs" / page).read_text() == generate.PAGES[page](), \
        f"docs/{page} is out of date: run `python docs/generate.py` and commit it"


def _app_commands() -> dict[str, set[str]]:
    """'case show' -> its options, for every command and subcommand of the real app."""
    from typer.main import get_command

    from dunctl.cli.app import app

    root = get_command(app)
    found = {}
    for path, command, ctx in generate._commands(root, root.context_class(root, info_name="dunctl"), ()):
        if path and not generate._is_group(command):
            found[" ".join(path)] = {opt for p in command.get_params(ctx) for opt in (*p.opts, *p.secondary_opts)
                                     if opt.startswith("-")}
    return found


def _readme_rows() -> list[tuple[str, str]]:
    """(command, the table's first cell) for each row of the README's command table."""
    rows = []
    commands = _app_commands()
    for line in (ROOT / "README.md").read_text().splitlines():
        cell = re.match(r"\| `([^`]+)` \|", line)
        if not cell:
            continue
        words = cell.group(1).split()
        name = " ".join(words[:2]) if " ".join(words[:2]) in commands else words[0]
        if name in commands:
            rows.append((name, cell.group(1)))
    return rows


def test_the_readme_table_lists_every_command():
    listed = {name for name, _ in _readme_rows()}
    missing = sorted(set(_app_commands()) - listed)
    assert not missing, f"README's command table lacks: {', '.join(missing)}"


def test_every_option_the_readme_table_names_exists():
    commands = _app_commands()
    wrong = [f"{name}: {option}" for name, cell in _readme_rows()
             for option in re.findall(r"--?[a-z][a-z-]*", cell) if option not in commands[name]]
    assert not wrong, f"README's command table names options the commands do not have: {wrong}"
