from __future__ import annotations

from rich.table import Table
from rich.text import Text

from dunctl.cli.case import Invoice
from dunctl.cli.common import JsonOption, NowOption, handles_errors, load, now_from, open_ledger, out, print_json
from dunctl.sanitize import terminal_text
from dunctl.explain import Explanation, explain as explain_case


@handles_errors
def explain(invoice: Invoice, now: NowOption = None, as_json: JsonOption = False) -> None:
    """Why a case is where it is: the segment rule that matched, each step's state, what happens next.

    Example: dunctl explain in_1Pgc6tLkdIwHu7ix0Ek8v2yC
    """
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        result = explain_case(ledger, config, invoice, now_from(now))
    if as_json:
        print_json(result.to_dict())
        return
    render(result)


def render(result: Explanation) -> None:
    out.print(Text(f"{result.invoice_id}: {result.state}, segment {result.segment}, sequence {result.sequence} "
                   f"(version {result.sequence_version})"))
    for rule in result.rules:
        mark = "matched" if rule.matched else "no"
        out.print(Text(f"  segment {rule.segment}: {mark}: {rule.why}"))
    table = Table("step", "at", "to", "state", "when (UTC)", "why", header_style="bold")
    for s in result.steps:
        table.add_row(Text(s.step), Text(s.at), Text(s.audience or "-"), Text(s.state),
                      Text((s.when or "-").replace("T", " ").replace("Z", ""), no_wrap=True),
                      Text(terminal_text(s.why)))
    out.print(table)
    if result.next_due_at:
        out.print(Text(f"next: {result.next_step} at {result.next_due_at.replace('T', ' ').replace('Z', '')} UTC"))
