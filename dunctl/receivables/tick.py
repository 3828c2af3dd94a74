"""The tick's part in receivables, before reconciling: bring the net-terms invoices coming due, and the promises
and disputes that ended, to it. Light on purpose: an idle tick runs this and imports nothing more than the ledger
store (the case-changing modules load only when there is something to change)."""

from __future__ import annotations

from dunctl.ledger import receivables as store


def bring_coming_due(ctx) -> bool:
    """Open net-terms invoices without a case whose first reminder is near become pending, so reconciling opens
    their cases (dunctl/receivables/cases.py); promises and disputes whose date passed, or whose case ended,
    become signals (dunctl/receivables/holds.py), which reconciling then applies. True when anything waits to be
    reconciled. With nothing to do, no statement of its own: the look for invoices coming due runs only once one
    can be (the earliest due date is kept in the ledger's state), and whether any hold ends or any signal or
    invoice waits is the tick's one look at what waits (TickContext.waits)."""
    ledger = ctx.ledger
    before = ctx.coming_due_before
    if before is not None and store.coming_due_by(ledger, before):
        with ledger.transaction():
            store.mark_and_look_ahead(ledger, before)
    holds_end, signals, invoices = ctx.waits("holds_end"), ctx.waits("signals"), ctx.waits("invoices")
    if holds_end:
        from dunctl.receivables import holds   # lazy: see dunctl/lazy.py

        holds.signal_ended_holds(ledger, ctx.now)
        return True
    return signals or invoices
