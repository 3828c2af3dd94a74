"""The tick's part in net-terms receivables: bring the invoices coming due to reconciling."""

from __future__ import annotations

from dunctl.ledger import receivables as store
from dunctl.receivables.cases import lead


def bring_coming_due(ctx) -> None:
    """Open net-terms invoices without a case whose first reminder is near become pending, so reconciling opens
    their cases (dunctl/receivables/cases.py). Nothing to do when no segment takes net-terms invoices."""
    if not any(segment.when and "collection_method" in segment.when for segment in ctx.config.file.segments):
        return
    with ctx.ledger.transaction():
        store.mark_coming_due(ctx.ledger.conn, ctx.now + lead(ctx.config))
