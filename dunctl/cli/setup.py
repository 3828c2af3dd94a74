"""`dunctl init` and `dunctl check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from dunctl.cli.common import JsonOption, environ, err, handles_errors, load, out, print_json, state
from dunctl.errors import ConfigError, UsageError
from dunctl.messages import Templates, check_templates, sms_notes
from dunctl.notices.check import render_problems
from dunctl.preflight import Finding, preflight
from dunctl.scaffold import create_ledger, write_starter


@handles_errors
def init(directory: Annotated[Path, typer.Argument(help="Where to write the starter files.")] = Path(".")) -> None:
    """Write a starter config, sequences and templates into DIR, and create its ledger (never overwrites).

    dunctl init billing && cd billing && dunctl check
    """
    written = write_starter(directory)
    ledger = create_ledger(directory / "dunctl.yaml")
    out.print(f"wrote {len(written)} files into {directory}/: dunctl.yaml, sequences/, templates/; "
              f"created the ledger {ledger}", markup=False)
    out.print(f"next: edit {directory / 'dunctl.yaml'}, then `dunctl -c {directory / 'dunctl.yaml'} check`",
              markup=False)


@handles_errors
def check(
    online: Annotated[bool, typer.Option("--online", help="Also call Stripe (key, mode, account, permissions) "
                                         "and log in to SMTP; nothing is sent or changed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Validate the config and templates, and check that tick can run (keys, credentials, ledger, outbox).

    Exit 0 when all is well, 2 otherwise. For example: dunctl check --online
    """
    config = load()
    used = {name: action for seq in config.sequences.values() for name, action in seq.used_templates().items()}
    problems = check_templates(config.templates_dir, used, config.file.sender.company, config.file.sender.locale)
    problems += render_problems(config.file.notices, Templates(config.templates_dir), config.file.sender.company)
    if problems:
        raise ConfigError(problems)
    config.notes.extend(sms_notes(config.templates_dir, used, config.file.sender.company, config.file.sender.locale))
    findings = preflight(config, environ(), online=online, log_path=state.log_path)
    failed = [f for f in findings if not f.ok]
    if as_json:
        print_json({"ok": not failed, "sequences": sorted(config.sequences), "templates": sorted(used),
                    "notes": config.notes, "checks": [f.to_dict() for f in findings]})
        if failed:
            raise typer.Exit(2)
        return
    for note in config.notes:
        err.print(f"note: {note}", markup=False)
    if not failed:
        out.print(f"ok: {len(config.file.segments)} segments, {len(config.sequences)} sequences "
                  f"({', '.join(sorted(config.sequences))}), {len(used)} templates rendered", markup=False)
    out.print(findings_table(findings))
    if failed:
        raise UsageError(f"{len(failed)} check(s) failed: " + "; ".join(f"{f.check}: {f.detail}" for f in failed),
                         "fix each, then run `dunctl check` again" + (
                             "" if online else "; `dunctl check --online` also tries the key and the SMTP login"))


def findings_table(findings: list[Finding]) -> Table:
    table = Table("check", "result", "detail", box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for f in findings:
        detail = f.detail + (f"\n{f.hint}" if f.hint and not f.ok else "")
        table.add_row(f.check, "ok" if f.ok else "[bold red]FAILED[/]", detail)
    return table
