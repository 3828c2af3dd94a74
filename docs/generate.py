"""Write the generated reference pages from the code: `python docs/generate.py` (or `--check`, which exits 1 and names
the page when a page differs from what the code says; tests/test_docs.py runs the check).

- docs/cli.md: every command and subcommand with its usage, help, arguments and options, read from the Typer app
  (the way llm's cog-generated docs/help.md is made), so `--help` and the docs cannot drift apart.
- docs/json.md: every key each `--json` prints, with its JSON type, read from what the commands print on a small
  seeded demo ledger (so a key added, renamed or dropped in the code shows here).

A page is plain Markdown under version control: a reviewer sees in the diff what a change did to the interface.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _is_group(command) -> bool:
    return hasattr(command, "list_commands")


def _commands(group, ctx, path: tuple[str, ...]):
    """(path, command, context) for `group` and every command under it, in the order `--help` lists them."""
    yield path, group, ctx
    if _is_group(group):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            yield from _commands(command, command.context_class(command, info_name=name, parent=ctx), (*path, name))


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _param_row(param, ctx) -> str:
    opts, text = param.get_help_record(ctx) or (", ".join(param.opts), "")
    return f"| `{_one_line(opts)}` | {_one_line(text)} |"


def _section(path: tuple[str, ...], command, ctx) -> list[str]:
    name = " ".join(path)
    lines = [f"## `{name}`", ""]
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines += ["```", f"{name} {usage}".rstrip(), "```", ""]
    help_text = "\n".join(line.rstrip() for line in (command.help or "").split("\f")[0].strip().splitlines())
    if help_text:
        lines += [help_text, ""]
    params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)
              and p.name not in ("help", "install_completion", "show_completion")]
    if params:
        lines += ["| argument or option | what it does |", "| --- | --- |"]
        lines += [_param_row(p, ctx) for p in params]
        lines.append("")
    if _is_group(command):
        names = [n for n in command.list_commands(ctx) if not command.get_command(ctx, n).hidden]
        lines += ["Commands: " + ", ".join(f"[`{name} {n}`](#{_anchor(f'{name} {n}')})" for n in names), ""]
    if command.epilog:
        lines += [" ".join(command.epilog.split()), ""]
    return lines


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


def cli_reference() -> str:
    from typer.main import get_command

    from dunctl.cli.app import app

    root = get_command(app)
    ctx = root.context_class(root, info_name="dunctl")
    lines = ["# Reference: commands", "",
             "Generated from the code by `python docs/generate.py`; `dunctl COMMAND --help` prints the same. "
             "The JSON each `--json` prints is in [reference.md](reference.md).", ""]
    for path, command, sub_ctx in _commands(root, ctx, ("dunctl",)):
        lines += _section(path, command, sub_ctx)
    return "\n".join(lines).rstrip() + "\n"


# (title, arguments after `dunctl -c CONFIG`); {invoice} and {customer} are filled from the demo ledger's first case.
JSON_COMMANDS = (
    ("status --json --all", ["status", "--json", "--all"]),
    ("report --format json", ["report", "--format", "json"]),
    ("case show INVOICE --json", ["case", "show", "{invoice}", "--json"]),
    # at the ledger's clock, as status reads it: on the wall clock the demo's cases are weeks overdue and what
    # explain shows (a step waiting for quiet hours to end, or not) changed with the hour the page was generated
    ("explain INVOICE --json", ["explain", "{invoice}", "--json", "--now", "{now}"]),
    ("customer show CUSTOMER --json", ["customer", "show", "{customer}", "--json"]),
)
# A small book that still has open and ended cases, messages, retries and notices: about a second of CPU.
DEMO = ["demo", "--customers", "40", "--days", "10", "--follow-up", "5", "--seed", "7"]


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "number", str: "string", list: "array", dict: "object"}[type(value)]


def _key_paths(value, path: str, into: dict[str, set[str]]) -> None:
    """Every key path under `value` (`cases[].invoice_id`) with the JSON types seen there. A mapping keyed by data
    (currency codes, invoice ids, states) is one `<key>` path, so the page does not depend on the book's data."""
    if isinstance(value, dict):
        keyed_by_data = len(value) > 0 and all(k.islower() and len(k) == 3 or k.startswith(("in_", "cus_", "sub_"))
                                               for k in value)
        for key, item in value.items():
            child = f"{path}.<key>" if keyed_by_data else f"{path}.{key}" if path else key
            into.setdefault(child, set()).add(_json_type(item))
            _key_paths(item, child, into)
    elif isinstance(value, list):
        for item in value:
            _key_paths(item, f"{path}[]", into)


def _dunctl(*args: str, cwd: Path) -> str:
    """What `dunctl ARGS` prints on stdout, run in this process (Typer's CliRunner) as if started in `cwd` with no
    DUNCTL_ or STRIPE_ variables set: the same command as a process, without starting a Python and importing dunctl
    six times for one page (tests/test_docs.py generates it on every run)."""
    from typer.testing import CliRunner

    from dunctl.cli.app import app

    unset = {k: None for k in os.environ if k.startswith(("DUNCTL_", "STRIPE_"))}
    before = os.getcwd()
    os.chdir(cwd)
    try:
        done = CliRunner().invoke(app, list(args), env=unset)
    finally:
        os.chdir(before)
    if done.exit_code != 0:
        raise RuntimeError(f"dunctl {' '.join(args)} exited {done.exit_code}: {done.stderr.strip()}") \
            from done.exception
    return done.stdout


def json_reference() -> str:
    lines = ["# Reference: JSON keys", "",
             "Generated from what the commands print on a small seeded demo ledger, by `python docs/generate.py`. "
             "What the keys mean is in [reference.md](reference.md) and, for `report`, in the report's own "
             "`schema` key. `<key>` stands for a key that is data: a currency code, an invoice id, a state.", ""]
    with tempfile.TemporaryDirectory() as tmp:
        book = Path(tmp) / "demo"
        _dunctl(*DEMO, str(book), cwd=Path(tmp))
        status = json.loads(_dunctl("-c", "dunctl.yaml", "status", "--json", "--all", cwd=book))
        first = status["cases"][0]
        fill = {"{invoice}": first["invoice_id"], "{customer}": first["customer_id"], "{now}": status["now"]}
        for title, args in JSON_COMMANDS:
            printed = json.loads(_dunctl("-c", "dunctl.yaml", *[fill.get(a, a) for a in args], cwd=book))
            paths: dict[str, set[str]] = {}
            _key_paths(printed, "", paths)
            lines += [f"## `dunctl {title}`", "", "| key | JSON type |", "| --- | --- |"]
            lines += [f"| `{key}` | {' or '.join(sorted(types))} |" for key, types in sorted(paths.items())]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


PAGES = {"cli.md": cli_reference, "json.md": json_reference}


def stale_pages() -> list[str]:
    """The generated pages whose text on disk differs from what the code generates now."""
    return [name for name, make in PAGES.items()
            if not (HERE / name).exists() or (HERE / name).read_text() != make()]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        stale = stale_pages()
        for name in stale:
            print(f"docs/{name} is out of date: run `python docs/generate.py`", file=sys.stderr)
        return 1 if stale else 0
    for name, make in PAGES.items():
        (HERE / name).write_text(make())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
