"""Net-terms invoices in the output of `demo` and `simulate`: what the reminders achieved, with intervals and
their denominators, and the aging and DSO tables exactly as `dunctl report` lays them out."""

from __future__ import annotations

from datetime import datetime, timedelta

from rich.console import Console
from rich.table import Table as RichTable

from dunctl.cli.report import _rich
from dunctl.money import format_amount
from dunctl.receivables.report import tables
from dunctl.report_render import Table
from dunctl.simulation.net_terms_outcome import NetTermsOutcome
from dunctl.stats import newcombe, wilson


def share(part: int, whole: int) -> str:
    """'17 of 24 (70.8%; 95% CI 50.8-85.1%)': a share with its denominator and Wilson interval."""
    if not whole:
        return f"{part} of 0 (-)"
    low, high = wilson(part, whole)
    return f"{part} of {whole} ({part / whole:.1%}; 95% CI {low:.1%}-{high:.1%})"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def dso_text(n: NetTermsOutcome) -> str:
    return ", ".join(f"{d.currency.upper()} {'over 360' if d.days is None else f'{d.days:g}'} days "
                     f"({format_amount(d.receivables, d.currency)} open)" for d in n.dso) or "nothing open"


def add_rows(table: RichTable, outcomes: list) -> None:
    """The net-terms rows of `simulate`'s side-by-side table (dunctl/cli/demo.py outcome_table), when any run
    had net-terms invoices. The shares are over the invoices due at least two weeks before the run ended."""
    runs = [o.net_terms for o in outcomes]
    if not any(runs):
        return
    watch = next(n.watch_days for n in runs if n)

    def row(label: str, cell) -> None:
        table.add_row(label, *["-" if n is None else cell(n) for n in runs])

    row("net-terms invoices issued (customers)", lambda n: f"{n.invoices} ({n.customers})")
    row(f"net-terms: due {watch}+ days before the end (the denominator)", lambda n: str(n.watched))
    row("net-terms: paid by the due date", lambda n: share(n.paid_by_due, n.watched))
    row(f"net-terms: paid within {watch} days past due", lambda n: share(n.paid_within_watch, n.watched))
    row("net-terms: paid by the end", lambda n: share(n.collected, n.watched))
    row("net-terms: days to pay from issue (median / mean / p90)",
        lambda n: f"{_days(n.days_to_pay_median)} / {_days(n.days_to_pay_mean)} / {_days(n.days_to_pay_p90)}")
    row("net-terms: mean days past due when paid", lambda n: _days(n.days_late_mean))
    row("net-terms: DSO at the end (countback)", dso_text)
    row("net-terms: reminders sent (per invoice due)",
        lambda n: f"{n.reminders} ({n.reminders / n.watched:.2f})" if n.watched else str(n.reminders))
    row("net-terms: handed to collections", lambda n: str(n.handed_to_collections))
    first = runs[0]
    if len(runs) > 1 and first is not None:
        for label, measure in (("paid by the due date", "paid_by_due"),
                               (f"paid within {watch} days past due", "paid_within_watch")):
            table.add_row(f"net-terms: {label} vs {outcomes[0].name} (95% CI)", "",
                          *[_versus(n, first, measure) for n in runs[1:]])


def _versus(n: NetTermsOutcome | None, base: NetTermsOutcome, measure: str) -> str:
    """The difference of a share between two runs, in points, with Newcombe's 95% interval."""
    d = None if n is None else newcombe(getattr(n, measure), n.watched, getattr(base, measure), base.watched)
    if d is None:
        return "-"
    return f"{d.difference * 100:+.1f} pts ({d.low * 100:+.1f} to {d.high * 100:+.1f})"


def demo_lines(n: NetTermsOutcome, end: datetime) -> list[str]:
    """The demo's paragraph on its net-terms customers."""
    cutoff = (end - timedelta(days=n.watch_days)).strftime("%Y-%m-%d")
    head = (f"Net-terms invoices (net 30, sent to {n.customers} business customer{'s' if n.customers != 1 else ''}"
            f"): {n.invoices} issued")
    if not n.watched:
        return [f"{head}; none due by {cutoff} ({n.watch_days} days before the end), so no rates yet; "
                f"{n.reminders} reminders sent"]
    lines = [f"{head}; of the {n.watched} due by {cutoff}:",
             f"  paid by the due date {share(n.paid_by_due, n.watched)}",
             f"  paid within {n.watch_days} days past due {share(n.paid_within_watch, n.watched)}",
             f"  paid by the end {share(n.collected, n.watched)}",
             f"  days from issue to payment (median / mean / p90) {_days(n.days_to_pay_median)} / "
             f"{_days(n.days_to_pay_mean)} / {_days(n.days_to_pay_p90)}; {n.reminders} reminders sent; "
             f"{n.handed_to_collections} handed to collections"]
    if n.collected_by:
        lines.append("  who paid why (simulation only): " + ", ".join(f"{k} {v}" for k, v in n.collected_by.items()))
    return lines


def print_receivables(section, console: Console) -> None:
    """Aging and DSO (and promises, closures when there are any) as `dunctl report` prints them, at the
    console's width."""
    for spec in tables(section):
        table = Table(*spec)
        if table.name == "aging":
            # 80 columns, not a page: the empty buckets are left out here (`dunctl report` lists them as 0)
            table.rows = [row for row in table.rows if row[2] != "0"]
            table.note = f"{table.note} Empty buckets left out (`dunctl report` lists them)."
        if not table.rows:
            continue
        rich, note = _rich(table, console.width)
        console.print()
        console.print(rich)
        if note:
            console.print(note, style="dim", markup=False)
