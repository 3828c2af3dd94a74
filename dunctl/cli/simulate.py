from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from dunctl.cli.common import JsonOption, err, handles_errors, out, print_json
from dunctl.cli.demo import outcome_table
from dunctl.simulation.demo import DEFAULT_SEED, SimulationResult, run_simulation


@handles_errors
def simulate(
    variants: Annotated[list[Path], typer.Argument(
        help="Configs (dunctl.yaml) or directories of sequence files to compare; give two or more.")],
    customers: Annotated[int, typer.Option("--customers", min=1, help="Customers in the simulated book.")] = 1000,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of billing (new failures).")] = 30,
    follow_up: Annotated[int, typer.Option("--follow-up", min=0,
                                           help="Days every case then gets to play out.")] = 35,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same customers, same luck.")] = DEFAULT_SEED,
    work_dir: Annotated[Path | None, typer.Option("--work-dir", help="Keep each run's ledger here "
                                                  "(default: a temporary directory, removed).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the same simulated customers under each config or sequence set, side by side. Nothing is sent.

    dunctl simulate dunctl.yaml candidate/dunctl.yaml --customers 2000
    """
    with tempfile.TemporaryDirectory(prefix="dunctl-simulate-") as scratch:
        work = work_dir or Path(scratch)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                      transient=True, disable=as_json or not err.is_terminal) as bar:  # no stray newline
            task = bar.add_task("simulating", total=None)

            def progress(name: str, done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, description=f"simulating {name}")

            result = run_simulation(variants, work, customers=customers, days=days, follow_up_days=follow_up,
                                    seed=seed, progress=progress)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    render(result)


def render(result: SimulationResult) -> None:
    out.print(f"[bold]{result.customers} simulated customers[/], billed for {result.billing_days} days, then "
              f"{result.follow_up_days} days for every case to play out (seed {result.seed}). "
              "Recovery counts cases still open as not recovered.")
    out.print(outcome_table(result.outcomes))
