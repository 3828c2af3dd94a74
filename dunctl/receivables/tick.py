"""The tick's part in receivables, before reconciling: bring the net-terms invoices coming due, and the promises
and disputes that ended, to it."""

from __future__ import annotations

from dunctl.ledger import receivables as store
from dunctl.receivables import holds
from dunctl.receivables.cases import lead, takes_net_terms
from dunctl.tick import reconcile

# reconciling applies a hold's end like any provider signal, to the case of its invoice
reconcile._SIGNALS["hold_ended"] = holds.hold_ended


def bring_coming_due(ctx) -> None:
    """Open net-terms invoices without a case whose first reminder is near become pending, so reconciling opens
    their cases (dunctl/receivables/cases.py); promises and disputes whose date passed, or whose case ended,
    become signals (dunctl/receivables/holds.py)."""
    holds.signal_ended_holds(ctx.ledger, ctx.now)
    if not any(takes_net_terms(segment) for segment in ctx.config.file.segments):
        return
    with ctx.ledger.transaction():
        store.mark_coming_due(ctx.ledger.conn, ctx.now + lead(ctx.config))
