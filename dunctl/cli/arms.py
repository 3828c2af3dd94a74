"""`dunctl report --by arm`: each experiment's arms side by side, the difference from the control with its
confidence interval, the sample size still needed, and a verdict in plain words."""

from __future__ import annotations

import dataclasses

from rich.cells import cell_len
from rich.table import Table

from dunctl.cli.common import out, print_json
from dunctl.experiments import ArmReport
from dunctl.money import format_amount


def _pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def render_arms(report: ArmReport, as_json: bool = False) -> None:
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    if not report.experiments:
        out.print("No case in the ledger belongs to an experiment yet (experiments: in dunctl.yaml assigns "
                  "cases as they open).", markup=False)
        return
    for experiment in report.experiments:
        if not experiment.arms:
            out.print(f"Experiment {experiment.experiment}: no case first failed in this period.", markup=False)
            continue
        for table in _fitting(experiment, out.width):
            out.print(table)
        for comparison in experiment.comparisons:
            out.print(f"  {comparison.arm}: {comparison.verdict}", markup=False)
        out.print(experiment.note, markup=False, style="dim")


LABEL_WIDTH = 16                  # labels wrap to this; values never wrap


def _fitting(experiment, width: int) -> list[Table]:
    """The arms side by side, values never wrapped: when they do not fit the terminal, the control beside as
    many arms at a time as fit (at 80 columns, one or two), in several tables."""
    control = [a for a in experiment.arms if a.arm == experiment.control]
    others = [a for a in experiment.arms if a.arm != experiment.control]
    chunks: list[list] = [others]
    for size in range(max(len(others), 1), 0, -1):
        chunks = [others[i:i + size] for i in range(0, max(len(others), 1), size)]
        if all(_width(experiment, control + chunk) <= width for chunk in chunks):
            break
    return [_table(experiment, control + chunk, f" ({i} of {len(chunks)})" if len(chunks) > 1 else "")
            for i, chunk in enumerate(chunks, 1)]


def _header(experiment, arm) -> str:
    return arm.arm + (" (control)" if arm.arm == experiment.control else "")


def _width(experiment, arms: list) -> int:
    """Columns at their widest cell, the labels wrapped to LABEL_WIDTH, and the borders and padding."""
    columns = [[_header(experiment, a)] for a in arms]
    for _, cells in _rows(experiment, arms):
        for column, cell in zip(columns, cells):
            column.append(cell)
    return LABEL_WIDTH + sum(max(cell_len(c) for c in column) for column in columns) + 3 * (len(arms) + 1) + 1


def _table(experiment, arms: list, part: str = "") -> Table:
    table = Table(title=f"Experiment {experiment.experiment}{part}", title_justify="left", title_style="bold",
                  header_style="bold")
    table.add_column("", min_width=LABEL_WIDTH)
    for a in arms:
        table.add_column(_header(experiment, a), no_wrap=True)
    for label, cells in _rows(experiment, arms):
        table.add_row(label, *cells)
    return table


def _rows(experiment, arms: list) -> list[tuple[str, list[str]]]:
    rows = [("customers (the unit randomised)", [f"{a.customers:,}" for a in arms]),
            ("failed invoices (cases)", [f"{a.cases:,}" for a in arms]),
            ("open / ended", [f"{a.open:,} / {a.ended:,}" for a in arms]),
            ("recovered of failed invoices", [f"{a.recovered:,} ({_pct(a.recovered_of_failed)})" for a in arms]),
            ("recovered of ended cases", [f"{a.recovered:,} of {a.ended:,} ({_pct(a.recovered_of_ended)})"
                                          for a in arms])]
    for code in sorted({c.currency for a in arms for c in a.currencies}):
        cells = []
        for a in arms:
            c = next((c for c in a.currencies if c.currency == code), None)
            cells.append("—" if c is None else f"{format_amount(c.amount_recovered, code)} of "
                                                f"{format_amount(c.amount_at_stake, code)}")
        rows.append((f"recovered {code.upper()} (ended cases)", cells))
    rows += [("days to recovery (median / mean)",
              [f"{_num(a.days_to_recovery_median)} / {_num(a.days_to_recovery_mean)}" for a in arms]),
             ("messages per recovered invoice", [f"{_num(a.messages_per_recovered)} ({a.messages:,} sent)"
                                                 for a in arms]),
             ("retries per recovered invoice", [f"{_num(a.retries_per_recovered)} ({a.retries:,} attempts)"
                                                for a in arms])]
    _comparison_rows(lambda label, cells: rows.append((label, cells)), arms,
                     {c.arm: c for c in experiment.comparisons})
    return rows


def _comparison_rows(row, arms: list, by_arm: dict) -> None:
    """The difference from the control, its always-valid interval at the level Holm tests the arm at, and the
    cases needed. A refused comparison shows no difference: 3 of 3 against 0 of 50 is not "+100 points"."""
    compared = [by_arm.get(a.arm) for a in arms]
    row("difference from control", ["—" if c is None or c.ci_low is None else f"{c.difference * 100:+.1f} pts"
                                    for c in compared])
    row("always-valid CI (Holm)", ["—" if c is None or c.ci_low is None else
                                   f"{c.confidence * 100:.4g}%: {c.ci_low * 100:.1f} to {c.ci_high * 100:.1f}"
                                   for c in compared])
    row("cases per arm needed", ["—" if c is None or c.needed_per_arm is None else f"~{c.needed_per_arm:,}"
                                 for c in compared])
