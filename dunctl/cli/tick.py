from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Annotated

import typer

from dunctl.cli.common import JsonOption, NowOption, environ, err, handles_errors, load, log_tick, open_ledger, \
    out, print_json, sync_progress
from dunctl.cli.gateway import make_gateway
from dunctl.clock import parse_instant, system_now
from dunctl.ledger import Ledger
from dunctl.tick.command import TickOptions, tick_command
from dunctl.tick.result import TickResult


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
    options = TickOptions(given=parse_instant(now) if now else None, dry_run=dry_run, sync=not no_sync,
                          accept_stale=accept_stale, adopt=adopt)
    wall = system_now()               # the machine's clock, read once: --now is checked against it
    with tick_ledger(config, dry_run) as ledger, sync_progress(syncing=not no_sync) as progress, \
            stop_on_signals() as caught:
        result = tick_command(ledger, config, environ(), options, wall, progress=progress,
                              connect=lambda led, deadline: make_gateway(config, environ(), ledger=led,
                                                                         check_account=not no_sync,
                                                                         deadline=deadline),
                              interrupted=lambda: bool(caught))
    log_tick(config, result)
    render(result, verbose or dry_run, as_json, signal.Signals(caught[0]).name if caught else None)
    if caught:
        raise typer.Exit(130)   # the shell's code for "stopped by a signal": cron and scripts know it
    if not result.ok:
        raise typer.Exit(1)


def tick_ledger(config, dry_run: bool) -> contextlib.AbstractContextManager[Ledger]:
    """The config's ledger; a dry run before the first tick works on an empty one in memory (it never creates
    the file)."""
    if dry_run and not config.ledger_path.exists():
        return Ledger.in_memory()
    return open_ledger(config)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """SIGINT (Ctrl-C) or SIGTERM during a tick asks it to stop, not to die: the call in flight finishes (within
    its channel's timeout), the claims not yet started are given back, what was done is recorded. The list fills
    with the signal's number. A second signal of the same kind acts as usual, at once."""
    caught: list[int] = []

    def ask_to_stop(signum, frame) -> None:
        caught.append(signum)
        signal.signal(signum, previous[signum])

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    if threading.current_thread() is not threading.main_thread():   # only the main thread may set handlers
        yield caught
        return
    for s in previous:
        signal.signal(s, ask_to_stop)
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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


def unknown_line(count: int) -> str:
    return (f"{count} action{'s have' if count != 1 else ' has'} an unknown outcome: check "
            f"{'them' if count != 1 else 'it'}, then `dunctl case resolve` (`dunctl status` lists them)")


def interrupted_line(result: TickResult, signal_name: str) -> str:
    """The one line a tick stopped by a signal prints: what it did, and that the rest waits."""
    line = (f"interrupted by {signal_name}: {summary(result)}; {result.deferred} due item(s) given back for the "
            f"next tick")
    return line + (f"; {unknown_line(result.unknown_waiting)}" if result.unknown_waiting else "")


def render(result: TickResult, verbose: bool, as_json: bool, stopped_by: str | None = None) -> None:
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
    if result.deferred and stopped_by is None:
        err.print(f"deferred: the tick's budget ran out; {result.deferred} due item(s) wait for the next tick",
                  markup=False)
    if result.unknown_waiting and stopped_by is None:
        err.print(unknown_line(result.unknown_waiting), markup=False)
    if stopped_by is not None:
        err.print(interrupted_line(result, stopped_by), markup=False)
        return
    if as_json or not result.did_something:
        return  # cron mails whatever a job prints: say nothing when nothing happened
    out.print(summary(result), markup=False)
    if verbose and result.actions:
        from rich.table import Table   # lazy: see dunctl/lazy.py
        from rich.text import Text   # lazy: see dunctl/lazy.py

        table = Table("invoice", "step", "action", "status", "to", "subject / detail")
        for a in result.actions:
            table.add_row(Text(a.invoice_id, no_wrap=True), Text(a.step), Text(a.action), Text(a.status),
                          Text(a.recipient or ""), Text(a.subject or a.detail or ""))
        out.print(table)
