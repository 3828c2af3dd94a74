from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dunctl.cli.common import JsonOption, err, handles_errors, out, print_json
from dunctl.clock import iso
from dunctl.money import format_amount
from dunctl.simulation.demo import DEFAULT_SEED, DemoResult, Outcome, run_demo


@handles_errors
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to write the demo (must not exist or be empty).")]
    = Path("dunctl-demo"),
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers in the simulated book.")] = 500,
    days: Annotated[int, typer.Option("--days", min=1, help="Simulated days of hourly ticks.")] = 45,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same customers, same numbers.")] = DEFAULT_SEED,
    as_json: JsonOption = False,
) -> None:
    """Watch dunning run on a simulated Stripe account: no key, no network, nothing sent.

    dunctl demo ./dunctl-demo --customers 500 --days 45 --seed 42
    """
    started = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ticks"),
                  TimeElapsedColumn(), console=err, transient=True, disable=as_json) as bar:
        task = bar.add_task("simulating", total=None)

        def progress(done: int, total: int, now) -> None:
            bar.update(task, completed=done, total=total, description=f"day {now:%Y-%m-%d %H:%M}")

        result = run_demo(directory, customers=customers, days=days, seed=seed, progress=progress)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    render(result, time.perf_counter() - started)


def render(result: DemoResult, seconds: float) -> None:
    o = result.outcome
    out.print(f"[bold]Simulated {o.customers} customers for {(result.end - result.start).days} days[/] "
              f"({iso(result.start)[:10]} to {iso(result.end)[:10]}, seed {result.seed}): {o.ticks} hourly ticks, "
              f"{o.invoices_billed} invoices billed, {o.failed_invoices} failed, in {seconds:.1f}s")
    out.print(outcome_table([o], title="What dunning did (cases still open count as not recovered)"))
    headline = result.headline
    if headline is not None:
        try:
            from dunctl.cli.report import render_headline
        except ImportError:
            render_headline = None
        if render_headline is not None:
            render_headline(headline)
        elif headline.ended:
            out.print(f"Of the {headline.ended} case(s) that have ended, {headline.recovered} recovered "
                      f"({headline.recovered / headline.ended:.1%}).")
        at_risk = ", ".join(format_amount(c.revenue_at_risk, c.currency) for c in headline.currencies
                            if c.revenue_at_risk) or "nothing"
        out.print(f"Status at the end: {headline.open} case(s) open, revenue at risk {at_risk}; "
                  f"{headline.with_person} handed to a person.")
    config = result.config_path
    now = iso(result.last_tick or result.end)
    out.print("\nLook further (the demo's clock stopped at " + now + "):", markup=False)
    out.print(f"  dunctl -c {config} status --now {now}", markup=False)
    if result.example_invoice:
        out.print(f"  dunctl -c {config} case show {result.example_invoice}", markup=False)
    out.print(f"  dunctl -c {config} report", markup=False)
    out.print(f"  ls {result.outbox}    # every email dunctl sent, as .eml files", markup=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def outcome_table(outcomes: list[Outcome], title: str | None = None) -> Table:
    """One column per run: the measures `simulate` compares."""
    table = Table("", *[o.name for o in outcomes], title=title, header_style="bold", title_justify="left")
    currencies = sorted({c.currency for o in outcomes for c in o.currencies})

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("failed invoices", [str(o.failed_invoices) for o in outcomes])
    if any(o.notices_sent for o in outcomes):      # pre-dunning: notices are what prevents some failures
        row("pre-dunning notices sent (cards updated)",
            [f"{o.notices_sent} ({o.cards_updated_after_notice})" for o in outcomes])
    row("recovered", [f"{o.recovered} ({_pct(o.recovery_rate)})" for o in outcomes])
    for code in currencies:
        cells = []
        for o in outcomes:
            c = next((c for c in o.currencies if c.currency == code), None)
            cells.append("-" if c is None else
                         f"{format_amount(c.amount_recovered, code)} of {format_amount(c.amount_due, code)} "
                         f"({_pct(c.amount_rate)})")
        row(f"recovered {code.upper()}", cells)
    row("days to recovery (median / mean)",
        [f"{_num(o.days_to_recovery_median)} / {_num(o.days_to_recovery_mean)}" for o in outcomes])
    row("recovered after day 14", [_pct(o.recovered_after_day_14) for o in outcomes])
    row("messages sent (per recovered)", [f"{o.messages_sent} ({_num(o.messages_per_recovered)})" for o in outcomes])
    row("retries used (dunctl / Stripe)",
        [f"{o.retries_used} ({o.retries_dunctl} / {o.retries_stripe})" for o in outcomes])
    row("handed to people", [str(o.handed_to_people) for o in outcomes])
    row("subscriptions cancelled", [str(o.churned) for o in outcomes])
    row("still open at the end", [str(o.open) for o in outcomes])
    row("recovered by", [", ".join(f"{k} {v}" for k, v in o.recovered_by.items()) or "-" for o in outcomes])
    return table
