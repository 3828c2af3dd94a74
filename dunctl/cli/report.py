"""`dunctl report`: recovery metrics as Rich tables, JSON, CSV, Markdown or one self-contained HTML file."""

from __future__ import annotations

import io
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.table import Table as RichTable
from rich.text import Text

from dunctl.cli.arms import render_arms
from dunctl.cli.common import JsonOption, NowOption, err, handles_errors, ledger_now, load, open_ledger, out
from dunctl.cli.fit import Column, dropped_note, fit, fitted_table, metric_table
from dunctl.clock import parse_instant
from dunctl.errors import UsageError
from dunctl.experiments import arm_report
from dunctl.notices.report import predunning_section
from dunctl.receivables.aging import receivables_section
from dunctl.report import (
    DIMENSIONS,
    Headline,
    Period,
    Report,
    build_report,
    case_listing,
)
from dunctl.report_render import (
    CASE_RENDERERS,
    RENDERERS,
    Table,
    headline_rows,
    period_text,
    tables,
)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    html = "html"
    md = "md"


@handles_errors
def report(
    since: Annotated[str | None, typer.Option("--since", help="Cohort start: cases first failed at or after this "
                                              "UTC date or time.", show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help="Cohort end: cases first failed before this.",
                                              show_default=False)] = None,
    by: Annotated[list[str] | None, typer.Option(
        "--by", help=f"Breakdowns to show (repeat or comma-separate): {', '.join(DIMENSIONS)}. Default: all.",
        show_default=False)] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="--by arm compares each experiment's "
                                                   "arms with its control; this names one.",
                                                   show_default=False)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.",
                                                show_default=False)] = None,
    cases: Annotated[bool, typer.Option("--cases", help="List the cases behind the numbers, one per line "
                                        "(csv, json lines, md or table), instead of the metrics.")] = False,
    journal: Annotated[bool, typer.Option("--journal", help="The month-end journal instead: every recovery, "
                                          "partial payment and write-off between --since and --until (csv, or "
                                          "json), for Xero or QuickBooks.")] = False,
    active_subscriptions: Annotated[int | None, typer.Option(
        "--active-subscriptions", min=1, help="Subscriptions active in the period (Stripe's count): the "
        "denominator of involuntary churn. Without it, churn is shown only where the ledger knows every active "
        "subscription (a demo ledger; a sync that listed them all for pre-dunning).",
        show_default=False)] = None,
    active_customers: Annotated[int | None, typer.Option(
        "--active-customers", min=1, help="Customers active at the start of each month: the denominator of "
        "involuntary churn per month (Recurly's definition). Without it, churn per month is shown only where the "
        "ledger knows every active customer.", show_default=False)] = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show recovery metrics for the cases first failed in a period.

    For example: dunctl report --since 2026-10-01 --until 2026-11-01 --by channel --format html -o october.html
    """
    config = load()
    with open_ledger(config, must_exist=True) as ledger:
        period = Period(_instant(since, "--since"), _instant(until, "--until"))
        window = config.file.dunning.attribution_window
        fmt = Format.json if as_json else fmt
        if by and "arm" in ",".join(by).split(","):     # experiments: dunctl/experiments.py, dunctl/cli/arms.py
            return render_arms(arm_report(ledger, config, experiment, period.since, period.until), fmt is Format.json)
        if cases:
            write_cases(case_listing(ledger, period, window), fmt, output)
            return
        if journal:     # dunctl/receivables/journal.py
            from dunctl.cli.holds import write_journal   # lazy: see dunctl/lazy.py

            return write_journal(ledger, period.since, period.until, fmt is Format.json, output)
        result = build_report(ledger, ledger_now(ledger, now), period, by, window,
                              active_subscriptions=active_subscriptions, active_customers=active_customers)
        # Pre-dunning notices sent in the period and what followed them: one more section of the same document.
        result.predunning = predunning_section(ledger, period.since, period.until)
        # aging and DSO as of now; promises, disputes and cases closed by a person in the period
        result.receivables = receivables_section(ledger, ledger_now(ledger, now), period.since, period.until)
        write(result, fmt, output)


def _instant(text: str | None, option: str):
    if text is None:
        return None
    try:
        return parse_instant(text)
    except UsageError as error:
        raise UsageError(f"{option}: {error.message}", error.hint)


# -- writing ---------------------------------------------------------------------------------------------------------


def write(result: Report, fmt: Format, output: Path | None) -> None:
    if fmt is Format.table:
        text = None
        if output is None:
            render_tables(result, out.real)
        else:
            buffer = io.StringIO()
            render_tables(result, Console(file=buffer, width=160, color_system=None, highlight=False))
            text = buffer.getvalue()
    else:
        text = RENDERERS[fmt.value](result)
    if text is None:
        return
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", markup=False)


def write_cases(rows, fmt: Format, output: Path | None) -> None:
    renderer = CASE_RENDERERS.get("md" if fmt is Format.table else fmt.value)
    if renderer is None:
        raise UsageError("--cases lists cases as csv, json, md or table", "drop --format html, or drop --cases")
    if output is None:
        renderer(rows, sys.stdout)
        return
    with output.open("w", encoding="utf-8", newline="") as handle:
        renderer(rows, handle)
    err.print(f"wrote {output}", markup=False)


# Shorter headers for the terminal (the other formats keep the long ones).
# An amount's currency stays in its header (issue 24): the table's one currency, or 'ccy' (each row's, shown after
# the ·) when rows differ. Short enough that a breakdown's 13 columns fit 160 columns.
SHORT_HEADERS = {"With a person": "Person", "Recovered of failed": "Of failed", "Recovered of ended": "Of ended",
                 "Failed amount": "Failed", "At stake (ended)": "Stake", "Revenue at risk": "Risk",
                 "Recovered amount": "Recov.", "Amount recovered of failed": "Amt/failed",
                 "Amount recovered of ended": "Amt/ended", "Share of recovered": "Share",
                 "Recovered (cumulative)": "Recovered", "Share of failed invoices": "Share"}
# Which columns a narrow terminal drops first (higher first); the rest always stay.
DROP_ORDER = {"Person": 9, "Ended": 8, "Failed": 7, "Stake": 6, "Amt/ended": 5, "Risk": 4, "Of ended": 3,
              "Amt/failed": 2, "Recov.": 1}
ROW_CURRENCY = "each row's currency"


def _short(header: str) -> str:
    name, _, unit = header.rpartition(" (")
    if not name or name not in SHORT_HEADERS:
        return SHORT_HEADERS.get(header, header)
    unit = unit.rstrip(")").replace(ROW_CURRENCY, "ccy")
    return f"{SHORT_HEADERS[name]} ({unit})"


def _drop_priority(header: str) -> int:
    return DROP_ORDER.get(header.rpartition(" (")[0] or header, 0)


def _rich(table: Table, width: int) -> tuple[Group, str]:
    """One report table laid out for `width` columns: the currency folded into the first column, short
    headers, and on a narrow terminal the least important columns left out (never a value cut or wrapped)."""
    columns, rows = list(table.columns), [list(row) for row in table.rows]
    if len(columns) > 2 and columns[1] == "Currency":
        columns = [columns[0]] + columns[2:]
        rows = [[f"{row[0]} · {row[1]}"] + row[2:] for row in rows]
    headers = [_short(column) for column in columns]
    if len(headers) == 2:     # a metric / value table (headline, pre-dunning): long values go on to a next line
        rich = metric_table([(row[0], row[1]) for row in rows], width, (headers[0], headers[1]))
        return _titled(table.title, rich), table.note or ""
    specs = [Column(header, priority=0 if i == 0 else _drop_priority(header),
                    justify="left" if i == 0 else "right") for i, header in enumerate(headers)]
    cells = [[Text(cell) for cell in row] for row in rows]
    fitted = fit(specs, cells, width)
    units = "Amounts in ccy: each row's currency, after the ·." if any(ROW_CURRENCY in c for c in table.columns) \
        else None
    note = " ".join(part for part in (table.note, units, dropped_note(fitted, "--format csv")) if part)
    return _titled(table.title, fitted_table(specs, cells, fitted)), note


def _titled(title: str, table: RichTable) -> Group:
    """The table under its title, the title as wide as the terminal (Rich's own title wraps at the table's width:
    a narrow table's long title broke over two lines)."""
    return Group(Text(title, style="bold"), table)


# The terminal shows the recovery curve at these days (and the last); md, html and json have every day.
CURVE_DAYS = {0, 1, 2, 3, 5, 7, 10, 14, 21, 28, 30, 45, 60, 90, 120, 180}


def _terminal(table: Table) -> Table:
    if table.name != "recovery_curve" or not table.rows:
        return table
    last = table.rows[-1][0]
    rows = [row for row in table.rows if int(row[0]) in CURVE_DAYS or row[0] == last]
    return Table(table.name, table.title, table.columns, rows, table.note)


def render_tables(result: Report, console: Console) -> None:
    console.print(f"Recovery report: {period_text(result.headline)}", markup=False, style="bold")
    for table in map(_terminal, tables(result)):
        console.print()
        if table.rows:
            rich, note = _rich(table, console.width)
            console.print(rich)
            if note:                      # as wide as the terminal, not squeezed under a narrow table
                console.print(note, style="dim", markup=False)
        else:
            console.print(f"{table.title}: no rows", markup=False)


def render_headline(headline: Headline, console: Console | None = None) -> None:
    """The headline as one compact table, for the top of `dunctl status`."""
    console = console or out
    table = RichTable(title="Recovery (all cases)", title_justify="left", header_style="bold", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right", no_wrap=True)
    for name, value in headline_rows(headline):
        table.add_row(Text(name), Text(value))
    console.print(table)
