from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dunctl.cli.common import JsonOption, NowOption, environ, err, handles_errors, load, now_from, open_ledger, \
    out, print_json, sync_progress
from dunctl.cli.gateway import make_gateway
from dunctl.engine import TickResult, build_channels, run_tick


@handles_errors
def tick(
    now: NowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")] = False,
    no_sync: Annotated[bool, typer.Option("--no-sync", help="Skip the Stripe sync; act on the ledger only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every action as a table.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync, open and close cases, and run every due step exactly once.

    Run it from cron every few minutes: */5 * * * * cd /srv/billing && dunctl tick
    """
    config = load()
    moment = now_from(now)
    ledger = open_ledger(config)
    gateway = make_gateway(config, environ())
    with sync_progress() as progress:
        result = run_tick(ledger, config, gateway, build_channels(config, environ()), moment, dry_run=dry_run,
                          sync=not no_sync, progress=progress)
    render(result, verbose or dry_run, as_json)
    if not result.ok:
        raise typer.Exit(1)


def render(result: TickResult, verbose: bool, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
        return
    for error in result.errors:
        err.print(f"error: {error}", markup=False)
    for failure in result.failed:
        err.print(f"failed: {failure.invoice_id} {failure.step} ({failure.action}): {failure.detail}", markup=False)
    if not result.did_something:
        return  # cron mails whatever a job prints: say nothing when nothing happened
    done = sum(a.status == "done" for a in result.actions)
    prefix = "dry run: would have " if result.dry_run else ""
    out.print(f"{prefix}opened {len(result.opened)}, closed {len(result.closed)}, ran {done} action(s), "
              f"{len(result.failed)} failed, {len(result.actions) - done - len(result.failed)} skipped or missed",
              markup=False)
    if verbose and result.actions:
        table = Table("invoice", "step", "action", "status", "detail")
        for a in result.actions:
            table.add_row(a.invoice_id, a.step, a.action, a.status, a.detail)
        out.print(table)
