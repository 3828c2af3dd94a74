from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from dunctl.cases import Status, status as build_status
from dunctl.cli.common import JsonOption, NowOption, handles_errors, ledger_now, load, open_ledger, out, print_json
from dunctl.money import format_amount
from dunctl.notices.views import upcoming as upcoming_notices

MODE_NOTE = {"live": "LIVE Stripe account", "test": "Stripe test mode", "simulated": "simulated account (demo)"}


@handles_errors
def status(
    include_ended: Annotated[bool, typer.Option("--all", help="Include ended cases.")] = False,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show every open case, with revenue at risk per currency."""
    config = load()
    ledger = open_ledger(config, must_exist=True)
    moment = ledger_now(ledger, now)
    view = build_status(ledger, moment, include_ended)
    headline = _headline(ledger, config, moment)
    notices = upcoming_notices(ledger, moment)
    if as_json:
        data = {"now": moment.isoformat(), "account_mode": view.account_mode,
                "revenue_at_risk": view.revenue_at_risk, "cases": [c.to_dict() for c in view.cases],
                "unknown_actions": len(view.unknown_actions), "failed_actions": len(view.failed_actions)}
        if headline is not None:
            data["headline"] = headline.to_dict() if hasattr(headline, "to_dict") else headline
        data["notices_due"] = [n.to_dict() for n in notices]
        print_json(data)
        return
    render(view, headline)
    render_notices(notices)


def _headline(ledger, config, moment):
    """The report's headline, when the report module is present."""
    try:
        from dunctl.report import headline
    except ImportError:
        return None
    return headline(ledger, moment)


def render(view: Status, headline=None) -> None:
    mode = MODE_NOTE.get(view.account_mode or "", "no sync yet")
    at_risk = ", ".join(format_amount(v, c) for c, v in view.revenue_at_risk.items()) or "nothing"
    out.print(f"[bold]{len(view.cases)} case(s)[/]  ·  revenue at risk: [bold]{at_risk}[/]  ·  {mode}")
    if headline is not None:
        try:
            from dunctl.cli.report import render_headline

            render_headline(headline)
        except ImportError:
            pass
    if view.unknown_actions:
        out.print(f"[yellow]{len(view.unknown_actions)} action(s) with unknown outcome (it may have happened); "
                  "they will not be re-sent until a person settles each one:[/]")
        for action in view.unknown_actions:
            out.print(f"  dunctl case resolve {action['invoice_id']} {action['step_id']} --sent|--resend -r REASON",
                      markup=False)
    if view.failed_actions:
        out.print(f"[red]{len(view.failed_actions)} action(s) failed and will be retried; "
                  "see `dunctl case show INVOICE`.[/]")
    if not view.cases:
        return
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    table.add_column("invoice", no_wrap=True)
    table.add_column("customer", max_width=20, overflow="ellipsis", no_wrap=True)
    table.add_column("amount", justify="right", no_wrap=True)
    for name in ("failure", "sequence", "day", "last action", "next step (UTC)", "state"):
        table.add_column(name, overflow="fold", justify="right" if name == "day" else "left")
    for c in view.cases:
        who = c.customer_name or c.customer_email or c.customer_id
        failure = c.failure_type + (f"\n{c.decline_code}" if c.decline_code else "")
        last = (c.last_action or "-").removesuffix(": done")
        state = c.state + ("\nwith a person" if c.with_person else "")
        nxt = f"{c.next_step}\n{_short_time(c.next_due_at)}" if c.next_step else "-"
        table.add_row(c.invoice_id, who, format_amount(c.amount_remaining, c.currency), failure, c.sequence,
                      str(c.day), last, nxt, state)
    out.print(table)


def _short_time(value: str | None) -> str:
    """'2026-12-19T01:23:17Z' -> '12-19 01:23': the year and seconds are noise in a table of upcoming steps."""
    return f"{value[5:10]} {value[11:16]}" if value else "-"


def render_notices(notices) -> None:
    """Pre-dunning notices due in the next 14 days (dunctl/notices)."""
    if not notices:
        return
    out.print(f"[bold]{len(notices)} notice(s) due in the next 14 days[/]")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for name in ("due (UTC)", "notice", "customer", "about"):
        table.add_column(name, overflow="fold")
    for n in notices:
        table.add_row(_short_time(n.due_at), f"{n.kind} {n.offset}", n.customer, n.object_id)
    out.print(table)
