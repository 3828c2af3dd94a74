from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from dunctl.cases import Status, as_text_time, status as build_status
from dunctl.cli.common import JsonOption, NowOption, handles_errors, ledger_now, load, open_ledger, out, print_json
from dunctl.money import format_amount

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
    if as_json:
        data = {"now": moment.isoformat(), "account_mode": view.account_mode,
                "revenue_at_risk": view.revenue_at_risk, "cases": [c.to_dict() for c in view.cases],
                "unknown_actions": len(view.unknown_actions), "failed_actions": len(view.failed_actions)}
        if headline is not None:
            data["headline"] = headline.to_dict() if hasattr(headline, "to_dict") else headline
        print_json(data)
        return
    render(view, headline)


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
        out.print(f"[yellow]{len(view.unknown_actions)} action(s) with unknown outcome (a tick stopped mid-way); "
                  "they will not be re-sent. Check them with `dunctl case show INVOICE`.[/]")
    if view.failed_actions:
        out.print(f"[red]{len(view.failed_actions)} action(s) failed and will be retried; "
                  "see `dunctl case show INVOICE`.[/]")
    if not view.cases:
        return
    table = Table("invoice", "customer", "amount", "failure", "segment / sequence", "day", "last action",
                  "next step", "state", header_style="bold")
    for c in view.cases:
        who = c.customer_name or c.customer_email or c.customer_id
        failure = c.failure_type + (f" ({c.decline_code})" if c.decline_code else "")
        state = c.state + (" · person" if c.with_person else "")
        nxt = f"{c.next_step} {as_text_time(c.next_due_at)}" if c.next_step else "-"
        table.add_row(c.invoice_id, who, format_amount(c.amount_remaining, c.currency), failure,
                      f"{c.segment} / {c.sequence}", str(c.day), c.last_action or "-", nxt, state)
    out.print(table)
