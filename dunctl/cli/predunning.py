"""The report's pre-dunning section, rendered after the recovery tables (dunctl/notices/report.py computes it)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from dunctl.cli.common import out
from dunctl.notices.report import COMPARISON_NOTE, predunning_section


def write_predunning(ledger, period, fmt, output: Path | None) -> None:
    """Table format only: the JSON, CSV and HTML reports are one document each, and carry the section once the
    report's renderers take `PreDunning.to_dict()` (left to the report's owner)."""
    if getattr(fmt, "value", fmt) != "table":
        return
    section = predunning_section(ledger, period.since, period.until)
    if not section.sent_by_kind and not section.renewals_reminded:
        return
    table = Table(title="Pre-dunning", title_justify="left", header_style="bold", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in section.rows():
        table.add_row(name, value)
    if output is None:
        out.print(table)
        out.print(f"Renewals: {COMPARISON_NOTE}.", markup=False, style="dim")
        return
    with output.open("a", encoding="utf-8") as handle:
        console = Console(file=handle, width=160, color_system=None, highlight=False)
        console.print(table)
        console.print(f"Renewals: {COMPARISON_NOTE}.", markup=False)
