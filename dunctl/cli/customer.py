from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from dunctl.cases import as_text_time
from dunctl.cli.common import JsonOption, handles_errors, load, open_ledger, out, print_json
from dunctl.notices.views import customer_history
from dunctl.sanitize import terminal_text

app = typer.Typer(help="Look at one customer: notices sent, cases, timeline.", no_args_is_help=True)

CustomerId = Annotated[str, typer.Argument(help="The Stripe customer id (cus_...).")]


@app.command("show")
@handles_errors
def show(customer: CustomerId, as_json: JsonOption = False) -> None:
    """Show one customer's pre-dunning notices and dunning cases on one timeline."""
    history = customer_history(open_ledger(load(), must_exist=True), customer)
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


def shown(value: str) -> str:
    """Customer data as Rich markup that prints literally: no escape codes, no tags (a name like `[/bold]`)."""
    return escape(terminal_text(value))
