from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, NowOption, environ, err, handles_errors, load, log_tick, open_ledger, \
    out, print_json, sync_progress
from dunctl.cli.gateway import make_gateway
from dunctl.clock import parse_instant, system_now
from dunctl.ledger import Ledger
from dunctl.preflight import quick_check
from dunctl.tick.clocks import check_tick_moment, is_live_key
from dunctl.tick.channels import build_channels
from dunctl.tick.preflight import templates_parse
from dunctl.tick.result import TickResult
from dunctl.tick.run import run_tick


@handles_errors
def tick(
    now: NowOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")] = False,
    no_sync: Annotated[bool, typer.Option("--no-sync", help="Skip the Stripe sync; act on the ledger only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every action as a table.")] = False,
    accept_stale: Annotated[bool, typer.Option("--accept-stale-ledger",
                                               help="Adopt a ledger older than the Stripe account (restored from "
                                                    "a backup) knowingly.")] = False,
    adopt: Annotated[bool, typer.Option("--adopt",
                                        help="Take over the invoices another dunctl ledger works (a retired "
                                             "machine's): go on after the last message it sent.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sync, open and close cases, and run every due step exactly once.

    Run it from cron every few minutes: */5 * * * * cd /srv/billing && dunctl tick
    """
    config = load()
    given = parse_instant(now) if now else None
    wall = system_now()               # the machine's clock, read once: --now is checked against it
    if dry_run and not config.ledger_path.exists():
        ledger = Ledger.in_memory()   # a dry run never creates the ledger file
    else:
        ledger = open_ledger(config)
        quick_check(ledger.conn, config.ledger_path)   # a damaged page stops the tick before it reads or writes
    moment = check_moment(config, ledger, given, wall, dry_run)
    known = ledger.get_state("templates_parsed")
    parsed = templates_parse(config, known_good=known)
    if parsed != known and not dry_run:
        ledger.set_state("templates_parsed", parsed)
    # the account check records the binding on first use: a dry run does it on a copy, never on the file
    # The tick's budget bounds its Stripe calls too (timeouts, retries, backoff): a Stripe that accepts and never
    # answers cannot hold the ledger's lock past it while cron's next ticks exit 3.
    gateway = make_gateway(config, environ(), ledger=ledger.snapshot_in_memory() if dry_run else ledger,
                           check_account=not no_sync, budget=config.file.dunning.tick_budget.total_seconds())
    with sync_progress(syncing=not no_sync) as progress:
        result = run_tick(ledger, config, gateway, build_channels(config, environ()), moment, dry_run=dry_run,
                          sync=not no_sync, progress=progress, accept_stale=accept_stale, adopt=adopt,
                          wall=wall if given is None or is_live_key(environ().get(config.file.stripe.api_key_env))
                          else None)   # a test key's --now travels in time: Stripe's clock is not the tick's
    log_tick(config, result)
    render(result, verbose or dry_run, as_json)
    if not result.ok:
        raise typer.Exit(1)


def check_moment(config, ledger: Ledger, given: datetime | None, wall: datetime, dry_run: bool) -> datetime:
    """The tick's moment (--now, else the machine's clock), refused when it goes back before the last tick, or
    with a live key runs ahead of the machine's clock, before anything is written. The simulated account (a demo
    ledger) keeps a free --now."""
    key = environ().get(config.file.stripe.api_key_env)
    simulated = ledger.get_state("account_mode") == "simulated"
    return check_tick_moment(given, wall, ledger.last_tick_at(), live_key=is_live_key(key) and not simulated,
                             dry_run=dry_run)


def summary(result: TickResult) -> str:
    """The one line cron mails: counts, then what changed by name."""
    counts: dict[str, int] = {}
    for a in result.actions:
        if not a.quiet:
            counts[a.status] = counts.get(a.status, 0) + 1
    ran = counts.pop("done", 0)
    would = counts.pop("would", 0)
    prefix = {"dry_run": "dry run: ", "monitor": "monitor: "}.get(result.mode, "")
    parts = [f"opened {len(result.opened)}", f"closed {len(result.closed)}"]
    parts.append(f"would run {would} action(s)" if result.mode != "live" else f"ran {ran} action(s)")
    parts.append(f"{counts.pop('failed', 0)} failed")
    rest = sum(counts.values())
    parts.append(f"{rest} skipped or missed")
    line = prefix + ", ".join(parts)
    if result.closed:
        line += "; " + ", ".join(f"closed {i} {result.endings.get(i, '')}".rstrip() for i in result.closed)
    return line


def render(result: TickResult, verbose: bool, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
    for line in result.taken_over:
        err.print(line, markup=False)
    for error in result.errors:
        err.print(f"error: {error}", markup=False)
    for failure in result.failed:
        err.print(f"failed: {failure.invoice_id} {failure.step} ({failure.action}): {failure.detail}", markup=False)
    for unknown in (a for a in result.actions if a.status == "unknown"):
        err.print(f"unknown: {unknown.invoice_id} {unknown.step} ({unknown.action}): {unknown.detail}",
                  markup=False)
    if result.missed:
        err.print(f"missed {len(result.missed)} step(s) overdue beyond the grace period or superseded: "
                  f"{result.missed_cause}", markup=False)
    for channel in result.skipped_channels:
        err.print(f"skipped: the {channel} channel after repeated failures this tick; its steps run on the next",
                  markup=False)
    if result.deferred:
        err.print(f"deferred: the tick's budget ran out; {result.deferred} due item(s) wait for the next tick",
                  markup=False)
    if as_json or not result.did_something:
        return  # cron mails whatever a job prints: say nothing when nothing happened
    out.print(summary(result), markup=False)
    if verbose and result.actions:
        from rich.table import Table
        from rich.text import Text

        table = Table("invoice", "step", "action", "status", "to", "subject / detail")
        for a in result.actions:
            table.add_row(Text(a.invoice_id, no_wrap=True), Text(a.step), Text(a.action), Text(a.status),
                          Text(a.recipient or ""), Text(a.subject or a.detail or ""))
        out.print(table)
