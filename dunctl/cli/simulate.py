from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dunctl.backtest import run_backtest
from dunctl.cli.common import JsonOption, NowOption, err, handles_errors, ledger_now, load, out, print_json
from dunctl.cli.demo import PresetOption, outcome_table, preset_text
from dunctl.clock import parse_instant
from dunctl.errors import UsageError
from dunctl.ledger import Ledger
from dunctl.simulation.assumptions import DEFAULT_PRESET
from dunctl.simulation.demo import DEFAULT_SEED, SimulationResult, run_simulation


@handles_errors
def simulate(
    variants: Annotated[list[Path] | None, typer.Argument(
        help="Configs (dunctl.yaml) or directories of sequence files to compare.", show_default=False)] = None,
    from_ledger: Annotated[bool, typer.Option("--from-ledger", help="Replay the failed invoices in the ledger of "
                                              "the active config (-c) instead of a synthetic book, with the "
                                              "customer model fitted to that ledger.")] = False,
    since: Annotated[str | None, typer.Option("--since", help="With --from-ledger: only invoices first failed at "
                                              "or after this UTC date.", show_default=False)] = None,
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers in the simulated book.")] = 1000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of billing (new failures).")] = 30,
    follow_up: Annotated[int | None, typer.Option(
        "--follow-up", min=0, help="Days every case then gets to play out (default 35; with --from-ledger 0: "
        "the replay stops at the ledger's clock, so the baseline sees what the ledger saw).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same customers, same luck.")] = DEFAULT_SEED,
    preset: PresetOption = DEFAULT_PRESET,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Keep each run's ledger here "
                                                  "(default: a temporary directory, removed).")] = None,
    now: NowOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the same customers under each config or sequence set, side by side. Nothing is sent.

    dunctl simulate dunctl.yaml candidate/dunctl.yaml --customers 2000
    dunctl -c dunctl.yaml simulate --from-ledger --since 2026-09-01 candidate/dunctl.yaml
    """
    variants = list(variants or [])
    if not from_ledger and not variants:
        raise UsageError("give at least one config file or sequences directory to simulate",
                         "or --from-ledger to replay the active config's own history")
    with tempfile.TemporaryDirectory(prefix="dunctl-simulate-") as scratch:
        work = work_dir or Path(scratch)
        if from_ledger:
            backtest = _backtest(variants, work, since, follow_up or 0, seed, preset, now)
            if as_json:
                print_json(dataclasses.asdict(backtest))
            else:
                render_backtest(backtest)
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err.real,
                      transient=True, disable=as_json or not err.is_terminal) as bar:  # no stray newline
            task = bar.add_task("simulating", total=None)

            def progress(name: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"simulating {name}")

            result = run_simulation(variants, work, customers=customers, days=days,
                                    follow_up_days=35 if follow_up is None else follow_up, seed=seed,
                                    preset=preset, progress=progress)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    render(result)


def _backtest(variants: list[Path], work: Path, since: str | None, follow_up: int, seed: int, preset: str,
              now: str | None):
    """`--from-ledger`: the active config's ledger replayed up to its own clock (a demo ledger's last tick)."""
    config = load()
    ledger = Ledger.open_existing(config.ledger_path)
    try:
        clock = ledger_now(ledger, now)
    finally:
        ledger.close()
    return run_backtest(config, variants, work, clock, since=parse_instant(since) if since else None,
                        follow_up_days=follow_up, seed=seed, preset=preset)


def render(result: SimulationResult) -> None:
    out.print(f"[bold]{result.customers} simulated customers[/], billed for {result.billing_days} days, then "
              f"{result.follow_up_days} days for every case to play out (seed {result.seed}).")
    out.print(preset_text(result.preset), markup=False)
    out.print(outcome_table(result.outcomes))


def render_backtest(result) -> None:
    out.print(f"[bold]Backtest: {result.cases} failed invoices from {result.ledger}[/] replayed from "
              f"{result.start} to {result.end} (seed {result.seed}).")
    v = result.validation
    out.print(f"Customer model: the {result.preset} preset, fitted on {v.fitted_on} of the cases, channel by channel "
              "(a channel needs 30+ recoveries on the ledger):", markup=False)
    for fit in result.fits:
        out.print(f"  {fit.quantity} ({', '.join(fit.parameters)}): {fit.why}", markup=False)
    out.print(f"Validation, on the {v.held_out} cases the fit did not see: {v.verdict}", markup=False)
    gap = result.baseline_gap
    if gap.get("gap") is not None:
        out.print(f"Baseline against the ledger, every case: recovered of failed {_pct(gap['replay'])} vs "
                  f"{_pct(gap['ledger'])}, a gap of {gap['gap'] * 100:+.1f} points (95% CI {gap['low'] * 100:+.1f} "
                  f"to {gap['high'] * 100:+.1f}).", markup=False)
    out.print("Check, share of the fitted cases recovered (95% CI): " + "; ".join(
        f"{name}: ledger {_ci(v['ledger'])}, preset {_ci(v['preset'])}, fitted replay {_ci(v['replay'])}"
        for name, v in result.check.items()), markup=False)
    outcomes = [result.observed, result.baseline, *result.candidates]
    table = outcome_table(outcomes, title="Side by side (baseline: the active config, replayed)")
    by_arm = {c.arm: c for c in result.comparisons}
    table.add_row("recovered of failed vs baseline (95% CI)",
                  *["", "", *[_difference(by_arm.get(o.name)) for o in result.candidates]])
    out.print(table)
    for comparison in result.comparisons:
        out.print(f"  {comparison.arm}: {comparison.verdict}", markup=False)
    for warning in result.warnings:
        err.print(f"warning: {warning}", markup=False)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ci(value: dict | None) -> str:
    if not value or value.get("rate") is None:
        return "-"
    return f"{value['rate']:.1%} ({value['low']:.1%} to {value['high']:.1%})"


def _difference(comparison) -> str:
    if comparison is None or comparison.difference is None:
        return "-"
    return (f"{comparison.difference * 100:+.1f} pts ({comparison.ci_low * 100:.1f} to "
            f"{comparison.ci_high * 100:.1f})")
