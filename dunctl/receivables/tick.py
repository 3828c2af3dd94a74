"""The tick's part in receivables, before reconciling: bring the net-terms invoices coming due, and the promises
and disputes that ended, to it. Light on purpose: an idle tick runs this and imports nothing more than the ledger
store (the case-changing modules load only when there is something to change)."""

from __future__ import annotations

from dunctl.ledger import ENDED_STATES
from dunctl.ledger import receivables as store
from dunctl.receivables.terms import lead, takes_net_terms


def bring_coming_due(ctx) -> None:
    """Open net-terms invoices without a case whose first reminder is near become pending, so reconciling opens
    their cases (dunctl/receivables/cases.py); promises and disputes whose date passed, or whose case ended,
    become signals (dunctl/receivables/holds.py), which reconciling then applies."""
    conn = ctx.ledger.conn
    if store.holds_to_end(conn, ctx.now, ENDED_STATES) or store.hold_signals_pending(conn):
        from dunctl.receivables import holds   # lazy: see dunctl/lazy.py

        holds.signal_ended_holds(ctx.ledger, ctx.now)
    if not any(takes_net_terms(segment) for segment in ctx.config.file.segments):
        return
    store.mark_coming_due(conn, ctx.now + lead(ctx.config))   # one statement: a transaction of its own
