"""`dunctl status`: a page of the open cases that fits the terminal, most revenue at risk first.

The case list comes first, then the recovery headline. Rows are streamed in chunks (`--all`, `--json`), so
100k cases never sit in memory at once. Everything that comes from Stripe or a customer (names, emails, codes)
is data: printed as plain text, never as Rich markup, with terminal control sequences removed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from dunctl.cases import CaseRow, Status
from dunctl.cli.common import JsonOption, NowOption, handles_errors, ledger_now, load, open_ledger, out
from dunctl.cli.fit import Column, dropped_note, fit, fitted_table, packed_lines, plain_rows
from dunctl.money import format_amount
from dunctl.sanitize import terminal_text
from dunctl.status import status_page

MODE_NOTE = {"live": "LIVE Stripe account", "test": "Stripe test mode", "simulated": "simulated account (demo)"}
CHUNK = 500                       # rows per Rich table when streaming
PIPE_LIMIT = 20                   # the default page when stdout is not a terminal


def clean(value: object) -> str:
    """Text from the outside world, safe for a terminal: no escape sequences, no control characters."""
    return terminal_text(value)


@handles_errors
def status(
    include_ended: Annotated[bool, typer.Option("--all", help="Every case, ended ones too, all of them (streamed).")
                             ] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0, show_default=False,
                                              help="Show at most N cases (0: all). Default: what fits the "
                                                   "terminal (20 in a pipe); every case with --json.")] = None,
    segment: Annotated[str | None, typer.Option("--segment", help="Only cases of this segment.",
                                                show_default=False)] = None,
    state: Annotated[str | None, typer.Option("--state", help="Only cases in this state (open, paused, recovered, "
                                              "...).", show_default=False)] = None,
    failure_type: Annotated[str | None, typer.Option("--failure-type", help="Only cases with this failure type "
                                                     "(card_soft, card_hard, ...).", show_default=False)] = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the open cases, most at risk first, with revenue at risk per currency.

    For example: dunctl status --failure-type card_hard --limit 50
    """
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        moment = ledger_now(ledger, now)
        if limit is None and not include_ended and not as_json:
            limit = _screenful()
        page = status_page(ledger, moment, include_ended, segment=segment, state=state, failure_type=failure_type,
                           limit=limit or None, fx=config.file.report.fx)
        if as_json:
            write_json(page.cases, page.headline.to_dict(), page.experiments, [n.to_dict() for n in page.notices])
            return
        render(page.cases)
        render_notices(page.notices)
        render_experiments(page.experiments)
        render_headline_after(page.headline)


def render_experiments(rows: list[dict]) -> None:
    """Running experiments: cases per arm, and how many are still open."""
    by_experiment: dict[str, list[str]] = {}
    for row in rows:
        by_experiment.setdefault(row["experiment"], []).append(
            f"{row['arm']} {row['cases']:,} ({row['open']:,} open)")
    for name, arms in by_experiment.items():
        out.print(Text(f"experiment {clean(name)}: " + ", ".join(clean(a) for a in arms)))


def _screenful() -> int:
    """As many cases as fit below the summary with room for the footer: a case takes two lines (the next step
    and its time)."""
    if not out.is_terminal:
        return PIPE_LIMIT
    return max(3, (out.height - 8) // 2)


# -- json ----------------------------------------------------------------------------------------------------------


def write_json(view: Status, headline: dict | None, experiments: list[dict] = (), notices_due: list[dict] = ()
               ) -> None:
    """The documented keys, with `cases` written one case at a time: memory stays flat however many there are."""
    head = {"now": view.now.isoformat(), "account_mode": view.account_mode, "revenue_at_risk": view.revenue_at_risk,
            "total": view.total, "unknown_actions": len(view.unknown_actions), "failed_actions": view.failed_actions,
            "experiments": list(experiments), "notices_due": list(notices_due), "ranking": view.ranking}
    if headline is not None:
        head["headline"] = headline
    write = sys.stdout.write
    write(json.dumps(head, default=str)[:-1] + ', "cases": [')
    for i, case in enumerate(view.cases):
        write(("\n  " if i == 0 else ",\n  ") + json.dumps(case.to_dict(), default=str))
    write("\n]}\n")


# -- the table -----------------------------------------------------------------------------------------------------

WIDE, MEDIUM = 130, 100           # terminal widths at which columns come back


def render(view: Status) -> None:
    mode = MODE_NOTE.get(view.account_mode or "", "no sync yet")
    noun = "case" if view.total == 1 else "cases"
    what = "" if view.filter.include_ended or view.filter.state else "open "
    amounts = [format_amount(v, c) for c, v in view.revenue_at_risk.items()] or ["nothing"]
    out.print(Text.assemble((f"{view.total:,} {what}{noun}", "bold"), f"  ·  {mode}"))
    # Broken only between amounts, never inside one ('CHF 12.00' has a space Rich would wrap at).
    for line in packed_lines(["revenue at risk: " + amounts[0], *amounts[1:]], out.width):
        out.print(Text(line, no_wrap=True, overflow="ignore"))
    if view.unknown_actions:
        out.print(f"[yellow]{len(view.unknown_actions)} action(s) with unknown outcome (it may have happened); "
                  "they will not be re-sent until a person settles each one:[/]")
        for action in view.unknown_actions:
            out.print(f"  dunctl case resolve {clean(action['invoice_id'])} {clean(action['step_id'])} "
                      "--sent|--resend -r REASON", markup=False)
    if view.failed_actions:
        out.print(f"[red]{view.failed_actions} action(s) failed and will be retried; "
                  "see `dunctl case show INVOICE`.[/]")
    if not view.total:
        return
    print_cases(view.cases, out.width)
    if view.shown < view.total:
        out.print(f"showing {view.shown:,} of {view.total:,}, most revenue at risk first: "
                  "--limit N for more, --all for every case, --json for all of them as data", style="dim",
                  markup=False)
    out.print(f"ranked {view.ranking}", style="dim", markup=False)


def print_cases(cases: Iterable[CaseRow], width: int) -> None:
    """The rows as tables of CHUNK rows each (a header on the first), laid out for `width` columns. Later chunks
    keep at least the widths of the first, so the streamed columns stay aligned."""
    layout = _layout(width)
    columns = [column for column, _ in layout]
    rows: Iterator[CaseRow] = iter(cases)
    widths: dict[int, int] = {}
    note = None
    while chunk := list(islice(rows, CHUNK)):
        cells = [[cell(c) for _, cell in layout] for c in chunk]
        fitted = fit(columns, cells, width, at_least=widths)
        if not widths:
            out.print(fitted_table(columns, [], fitted))      # the header and its rule
            note = dropped_note(fitted, "--json")
        widths = fitted.widths
        out.file.write("".join(line + "\n" for line in plain_rows(columns, cells, fitted)))
    if note:
        out.print(note, style="dim", markup=False)


def _layout(width: int) -> list[tuple[Column, Callable[[CaseRow], Text]]]:
    """Columns by importance. Below MEDIUM the customer, failure and state stack under the invoice id, so the
    values that must never be cut (id, amount, day, next step) keep their full width."""
    invoice = (Column("invoice"), lambda c: Text(clean(c.invoice_id)))
    customer = (Column("customer", shrink_to=8), _customer)
    money = (Column("amount", justify="right"), _amount)
    failure = (Column("failure", priority=1), _failure)
    day = (Column("day", justify="right"), lambda c: Text(str(c.day)))
    nxt = (Column("next step (UTC)"), _next)
    state = (Column("state", priority=2), _state)
    if width >= WIDE:
        return [invoice, customer, money, failure,
                (Column("sequence", priority=4, shrink_to=8), lambda c: Text(clean(c.sequence))), day,
                (Column("last action", priority=3, shrink_to=10), _last), nxt, state]
    if width >= MEDIUM:
        return [invoice, customer, money, (Column("failure / state"), _failure_and_state), day, nxt]
    return [(Column("invoice · customer · failure"), _stacked),
            (Column("amount · day", justify="right"), lambda c: Text(f"{_amount(c).plain}\nday {c.day}")), nxt]


def _who(c: CaseRow) -> str:
    return clean(c.customer_name or c.customer_email or c.customer_id)


def _customer(c: CaseRow) -> Text:
    return Text(_who(c), overflow="ellipsis", no_wrap=True)


def _amount(c: CaseRow) -> Text:
    return Text(format_amount(c.amount_remaining, c.currency))


def _failure(c: CaseRow) -> Text:
    text = Text(clean(c.failure_type))
    if c.decline_code:
        text.append("\n" + clean(c.decline_code), style="dim")
    return text


def _state(c: CaseRow) -> Text:
    return Text(clean(c.shown_state) + ("\nwith a person" if c.with_person else ""))


def _last(c: CaseRow) -> Text:
    return Text(clean(c.last_action or "-").removesuffix(": done"), overflow="ellipsis", no_wrap=True)


def _next(c: CaseRow) -> Text:
    if not c.next_step:
        return Text(f"waits: {clean(c.held_because)}" if c.held_because and not c.closed_as else "-")
    return Text(f"{clean(c.next_step)}\n{_short_time(c.next_due_at)}")


def _failure_and_state(c: CaseRow) -> Text:
    text = _failure(c)
    if c.state != "open" or c.with_person:
        text.append("\n" + clean(c.shown_state) + (", with a person" if c.with_person else ""), style="yellow")
    return text


def _stacked(c: CaseRow) -> Text:
    """Invoice id, customer (cut to the id's width), failure type, decline code, and the state when it is not
    plain open: one cell, one value a line, so the column is as wide as its longest code."""
    invoice = clean(c.invoice_id)
    who, room = _who(c), max(len(invoice), 20)
    text = Text(invoice)
    text.append("\n" + (who if len(who) <= room else who[: room - 1] + "…"), style="dim")
    text.append("\n" + clean(c.failure_type))
    if c.decline_code:
        text.append("\n" + clean(c.decline_code), style="dim")
    if c.state != "open" or c.with_person:
        text.append("\n" + clean(c.shown_state) + (", with a person" if c.with_person else ""), style="yellow")
    return text


def _short_time(value: str | None) -> str:
    """'2026-12-19T01:23:17Z' -> '12-19 01:23': the year and seconds are noise in a table of upcoming steps."""
    return f"{value[5:10]} {value[11:16]}" if value else "-"


def render_headline_after(headline) -> None:
    from dunctl.cli.report import render_headline   # lazy: see dunctl/lazy.py

    out.print()
    render_headline(headline)


def render_notices(notices) -> None:
    """Pre-dunning notices due in the next 14 days (dunctl/notices)."""
    if not notices:
        return

    out.print(f"[bold]{len(notices)} notice(s) due in the next 14 days[/]")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for name in ("due (UTC)", "notice", "customer", "about"):
        table.add_column(name, overflow="fold")
    for n in notices:
        table.add_row(n.due_at[5:16].replace("T", " "), f"{n.kind} {n.offset}", clean(n.customer), n.object_id)
    out.print(table)
