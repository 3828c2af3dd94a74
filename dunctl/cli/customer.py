from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dunctl.cases import as_text_time
from dunctl.cli.common import JsonOption, NowOption, handles_errors, load, now_from, open_ledger, out, print_json
from dunctl.errors import UsageError
from dunctl.notices.views import customer_history
from dunctl.receivables.statement import statement as build, to_html, to_text
from dunctl.sanitize import terminal_text

app = typer.Typer(help="Look at one customer: notices sent, cases, timeline.", no_args_is_help=True,
                  add_completion=False)

CustomerId = Annotated[str, typer.Argument(help="The Stripe customer id (cus_...).")]


@app.command("show")
@handles_errors
def show(customer: CustomerId, as_json: JsonOption = False) -> None:
    """Show one customer's pre-dunning notices and dunning cases on one timeline."""
    with open_ledger(load(), must_exist=True) as ledger:
        history = customer_history(ledger, customer)
    if as_json:
        print_json(history.to_dict())
        return
    c = history.customer
    sent = sum(n["status"] == "done" for n in history.notices)
    out.print(f"[bold]{shown(c['id'])}[/] · {shown(c['name'] or '-')} · {shown(c['email'] or '-')} · "
              f"{len(history.subscriptions)} subscription(s) · {sent} notice(s) sent · {len(history.cases)} case(s)")
    table = Table("when (UTC)", "what", "detail", header_style="bold")
    for entry in history.timeline:   # Text cells: a summary quotes customer data, never markup
        table.add_row(as_text_time(entry["at"]), Text(terminal_text(entry["kind"])),
                      Text(terminal_text(entry["summary"])))
    out.print(table)


@app.command("optout")
@handles_errors
def optout(customer: CustomerId,
           sms: Annotated[bool, typer.Option("--sms", help="No more text messages (the customer replied STOP).")]
           = False,
           now: NowOption = None, as_json: JsonOption = False) -> None:
    """Record that a customer opted out of a channel: dunctl customer optout cus_123 --sms (an inbound STOP)."""
    if not sms:
        raise UsageError("say which channel the customer opted out of", "add --sms (the only channel with opt-out)")
    with open_ledger(load(), must_exist=True) as ledger:
        if ledger.sync.customer(customer) is None:
            raise UsageError(f"unknown customer {customer!r}", "give a Stripe customer id the ledger knows "
                             "(`dunctl sync` first if it is new)")
        new = ledger.cases.opt_out(customer, "sms", now_from(now), "dunctl customer optout")
        if as_json:
            print_json({"customer": customer, "channel": "sms", "opted_out": True, "new": new})
            return
        out.print(f"{shown(customer)}: no more SMS" + ("" if new else " (already opted out)"))


@app.command("statement")
@handles_errors
def statement(customer: CustomerId,
              fmt: Annotated[str, typer.Option("--format", "-f", help="text or html.")] = "text",
              output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file.",
                                                         show_default=False)] = None,
              now: NowOption = None, as_json: JsonOption = False) -> None:
    """A statement of account: every open invoice of the customer and a total per currency.

    For example: dunctl customer statement cus_123 --format html -o statement.html
    """
    if fmt not in ("text", "html"):
        raise UsageError(f"--format {fmt!r} is not a statement format", "use --format text or --format html")
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        found = build(ledger, customer, now_from(now))
    if as_json:
        print_json(found.to_dict())
        return
    text = (to_html if fmt == "html" else to_text)(found, config.file.sender.company or "us")
    if output:
        Path(output).write_text(text, encoding="utf-8")
        return
    typer.echo(text, nl=False)


def shown(value: str) -> str:
    """Customer data as Rich markup that prints literally: no escape codes, no tags (a name like `[/bold]`)."""
    return escape(terminal_text(value))
