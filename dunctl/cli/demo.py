from __future__ import annotations

import contextlib
import dataclasses
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dunctl.cli.common import JsonOption, err, handles_errors, out, print_json
from dunctl.cli.net_terms import add_rows, demo_lines, print_receivables
from dunctl.clock import iso
from dunctl.money import format_amount
from dunctl.simulation.anchors import ANCHOR_NOTE, ANCHORS
from dunctl.simulation.assumptions import DEFAULT_PRESET
from dunctl.simulation.demo import (
    DEFAULT_DEMO_DAYS,
    DEFAULT_FOLLOW_UP_DAYS,
    DEFAULT_SEED,
    DemoResult,
    Outcome,
    run_demo,
)
from dunctl.stats import newcombe, wilson

PRESET_WORDS = {"median": "a median merchant's customers, near the anchors' published medians",
                "top": "the guide's top-performer figures", "custom": "custom assumptions"}
PresetOption = Annotated[str, typer.Option("--preset", help="Whose customers: median (near the published "
                                           "medians, about 50% recovered) or top (the guide's top performers).")]


def preset_text(name: str) -> str:
    other = "top" if name == "median" else "median"
    return f"preset {name}: {PRESET_WORDS.get(name, name)} (--preset {other} for the other)"


@handles_errors
def demo(
    directory: Annotated[Path, typer.Argument(help="Where to write the demo (must not exist or be empty).")]
    = Path("dunctl-demo"),
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers in the simulated book.")] = 500,
    days: Annotated[int, typer.Option("--days", min=1, help="Simulated days of billing, in hourly ticks.")]
    = DEFAULT_DEMO_DAYS,
    follow_up: Annotated[int, typer.Option("--follow-up", min=0, help="Days of ticks after billing stops, so the "
                                           "cases can end before the rates are compared.")] = DEFAULT_FOLLOW_UP_DAYS,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same customers, same numbers.")] = DEFAULT_SEED,
    preset: PresetOption = DEFAULT_PRESET,
    config: Annotated[Path | None, typer.Option("--config", help="Run this dunctl.yaml (its segments, sequences, "
                                                "templates and experiments) instead of the starter.",
                                                show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Watch dunning run on a simulated Stripe account: no key, no network, nothing sent.

    dunctl demo ./dunctl-demo --customers 500 --days 30 --follow-up 35 --seed 42 --preset median
    """
    started = time.perf_counter()
    bar = _progress_bar(not as_json and err.is_terminal)   # off a terminal it would leave a stray newline
    with bar or contextlib.nullcontext():
        progress = None
        if bar is not None:
            task = bar.add_task("simulating", total=None)

            def progress(done: int, total: int, now) -> None:
                bar.update(task, completed=done, total=total, description=f"day {now:%Y-%m-%d %H:%M}")

        result = run_demo(directory, customers=customers, days=days, seed=seed, preset=preset, config=config,
                          progress=progress, follow_up_days=follow_up)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    render(result, time.perf_counter() - started)


def _progress_bar(show: bool):
    """The ticks' progress bar on a terminal; None off one, where nothing would be drawn: then Rich's progress
    module is not even loaded (15-20 ms), nor are the 1,560 updates of a default demo made."""
    if not show:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn   # lazy: see dunctl/lazy.py

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ticks"),
                    TimeElapsedColumn(), console=err.real, transient=True)


def render(result: DemoResult, seconds: float) -> None:
    o = result.outcome
    billed = (result.end - result.start).days - result.follow_up_days
    failed = o.failed_invoices + (result.holdout.failed_invoices if result.holdout else 0)
    out.print(f"[bold]Simulated {o.customers} customers for {(result.end - result.start).days} days[/] "
              f"({iso(result.start)[:10]} to {iso(result.end)[:10]}: billed {billed} days, then "
              f"{result.follow_up_days} days of follow-up; seed {result.seed}): {o.ticks} hourly ticks, "
              f"{result.invoices_billed} invoices billed, {failed} failed, "
              f"in {seconds:.1f}s")
    out.print(preset_text(result.preset), markup=False)
    runs = [o] if result.holdout is None else [o, result.holdout]
    title = ("What dunning did for failed payments (the figures `dunctl report` gives for the card and bank "
             "cases; net-terms invoices below)")
    if result.holdout is not None:
        title = ("What dunning did, and the experiment's holdout beside it (customers dunctl left alone, never "
                 "pooled into what dunning did)")
    out.print(outcome_table(runs, title=title, net_terms=False))    # net-terms: their own paragraph below
    for line in anchor_lines(runs):
        out.print(line, markup=False)
    headline = result.headline
    if headline is not None:
        at_risk = ", ".join(format_amount(c.revenue_at_risk, c.currency) for c in headline.currencies
                            if c.revenue_at_risk) or "nothing"
        out.print(f"Status at the end: {headline.open} case(s) open, revenue at risk {at_risk}; "
                  f"{headline.with_person} handed to a person.", markup=False)
    if o.net_terms is not None or result.receivables is not None:
        _net_terms(result)
    config = shlex.quote(str(result.config_path))
    now = iso(result.last_tick or result.end)
    dunctl = dunctl_command()
    out.print("\nLook further (the demo's clock stopped at " + now + "):", markup=False)
    # soft_wrap: a command wrapped at the terminal's width would not run when pasted
    out.print(f"  {dunctl} -c {config} status --now {now}", markup=False, soft_wrap=True)
    if result.example_invoice:
        out.print(f"  {dunctl} -c {config} case show {result.example_invoice}", markup=False, soft_wrap=True)
    if result.net_terms_example:
        out.print(f"  {dunctl} -c {config} case show {result.net_terms_example}    # net terms: reminded before "
                  "the due date", markup=False, soft_wrap=True)
    out.print(f"  {dunctl} -c {config} report", markup=False, soft_wrap=True)
    if result.outcome.failed_invoices:  # a replay needs failed invoices to replay
        out.print(f"  {dunctl} -c {config} simulate --from-ledger {config}    # replay this history",
                  markup=False, soft_wrap=True)
    out.print(f"  ls {shlex.quote(str(result.outbox))}    # every email dunctl sent, as .eml files", markup=False,
              soft_wrap=True)


def _net_terms(result: DemoResult) -> None:
    """The net-terms customers' invoices, then aging and DSO as `dunctl report` prints them."""
    if result.outcome.net_terms is not None:
        out.print()
        for line in demo_lines(result.outcome.net_terms, result.last_tick or result.end):
            out.print(line, markup=False)
    if result.receivables is not None:
        print_receivables(result.receivables, out.real)


def dunctl_command() -> str:
    """How to run this same dunctl from the user's shell: `dunctl` when that is what the shell finds, else the
    full path of the script that ran (a venv that is not activated), else `python -m dunctl`."""
    ran = Path(sys.argv[0])
    if ran.name == "dunctl" and ran.exists():
        found = shutil.which("dunctl")
        if found and Path(found).resolve() == ran.resolve():
            return "dunctl"
        return shlex.quote(str(ran.resolve()))
    return f"{shlex.quote(sys.executable)} -m dunctl"


def _interval(successes: int, n: int) -> str:
    low, high = wilson(successes, n)
    return f"{low:.1%}-{high:.1%}"


def _versus(o: Outcome, base: Outcome) -> str:
    """The difference of two runs' recovered-of-failed rates with Newcombe's interval (dunctl/stats.py)."""
    d = newcombe(o.recovered, o.failed_invoices, base.recovered, base.failed_invoices)
    if d is None:
        return "-"
    return f"{d.difference * 100:+.1f} pts ({d.low * 100:+.1f} to {d.high * 100:+.1f})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _days(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def rate_ci(successes: int, n: int) -> str:
    """'16 of 46 (34.8%; 95% CI 22.7-49.2%)': every simulated or projected rate with its Wilson interval (issue
    24: a rate on a few dozen cases says little without one)."""
    if not n:
        return f"{successes} of {n} (-)"
    low, high = wilson(successes, n)
    return f"{successes} of {n} ({successes / n:.1%}; 95% CI {low:.1%}-{high:.1%})"


def anchor_lines(runs: list[Outcome]) -> list[str]:
    """Both rates of each run, with intervals, next to the anchors' published figures."""
    lines = ["", "Next to the published figures (" + ANCHOR_NOTE + "):"]
    for o in runs:
        lines.append(f"  {o.name}: recovered of failed invoices {rate_ci(o.recovered, o.failed_invoices)}; "
                     f"recovered of ended cases {rate_ci(o.recovered, o.ended)}")
    lines += [f"  {a.setup}: {a.low:.0%}-{a.high:.0%} ({a.who}; {a.source})" if a.low != a.high
              else f"  {a.setup}: {a.low:.0%} ({a.who}; {a.source})" for a in ANCHORS]
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "-"


def outcome_table(outcomes: list[Outcome], title: str | None = None, net_terms: bool = True) -> Table:
    """One column per run: the measures `simulate` compares. Each rate says what it is over. With `net_terms`,
    the net-terms invoices' measures too, when the runs had any."""
    table = Table("", *[o.name for o in outcomes], title=title, header_style="bold", title_justify="left")
    currencies = sorted({c.currency for o in outcomes for c in o.currencies})

    def row(label: str, values: list[str]) -> None:
        table.add_row(label, *values)

    row("failed invoices (cases)", [str(o.failed_invoices) for o in outcomes])
    row("open / ended at the end", [f"{o.open} / {o.ended}" for o in outcomes])
    row("recovered of failed invoices", [rate_ci(o.recovered, o.failed_invoices) for o in outcomes])
    row("recovered of ended cases", [rate_ci(o.recovered, o.ended) for o in outcomes])
    if len(outcomes) > 1:
        first = outcomes[0]
        row(f"recovered of failed vs {first.name} (95% CI)",
            ["", *[_versus(o, first) for o in outcomes[1:]]])
    if any(o.notices_sent for o in outcomes):      # pre-dunning: notices are what prevents some failures
        row("pre-dunning notices sent (cards updated)",
            [f"{o.notices_sent} ({o.cards_updated_after_notice})" for o in outcomes])
    for code in currencies:
        cells = []
        for o in outcomes:
            c = next((c for c in o.currencies if c.currency == code), None)
            # Both rates by amount, as by count: of everything that failed, and of the ended cases only.
            cells.append("-" if c is None else
                         f"{format_amount(c.amount_recovered, code)}: of {format_amount(c.amount_failed, code)} "
                         f"failed {_pct(c.amount_rate_of_failed)}, of {format_amount(c.amount_at_stake, code)} "
                         f"ended {_pct(c.amount_rate)}")
        row(f"recovered {code.upper()} (of failed, of ended)", cells)
    row("days to recovery (median / mean / p90)",
        [f"{_days(o.days_to_recovery_median)} / {_days(o.days_to_recovery_mean)} / {_days(o.days_to_recovery_p90)}"
         for o in outcomes])
    row("recoveries after day 14", [rate_ci(round((o.recovered_after_day_14 or 0) * o.recovered), o.recovered)
                                    for o in outcomes])
    row("messages sent (per recovered)", [f"{o.messages_sent} ({_num(o.messages_per_recovered)})" for o in outcomes])
    row("retries used (dunctl / Stripe)",
        [f"{o.retries_used} ({o.retries_dunctl} / {o.retries_stripe})" for o in outcomes])
    row("retries per recovered", [_num(o.retries_per_recovered) for o in outcomes])
    row("handed to people", [str(o.handed_to_people) for o in outcomes])
    row("involuntary churn (customers per month)",
        [f"{o.churned_customers} of {o.customer_months:,} customer-months ({_pct(o.churn_per_month)}; 95% CI "
         f"{_interval(o.churned_customers, o.customer_months)})"
         if o.churn_per_month is not None
         else "no rate (no whole month, or the number of customers is unknown)" for o in outcomes])
    row("recovered by channel (last touch)", [_counts(o.recovered_by_channel) for o in outcomes])
    row("who collected (simulation only)", [_counts(o.collected_by) for o in outcomes])
    if net_terms:
        add_rows(table, outcomes)
    return table
