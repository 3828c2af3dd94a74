"""Reconciling what a sync left pending, one piece at a time (tick/run.py `reconcile` runs them): the invoices
changed since the last look, and the cases a signal concerns. The case-changing modules load inside, as in run.py:
an idle tick never gets this far."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dunctl.ledger import Ledger
from dunctl.tick.context import TickContext

if TYPE_CHECKING:
    from dunctl.tick.changes import Applied


def reconcile_invoices(ctx: TickContext, applied: Applied) -> None:
    """Open a case for each pending invoice that failed, follow the ones with a case; each in a transaction of its
    own. The invoices that cannot open a case (paid on the first try, mostly) are only marked reconciled, all in
    one: nothing to read or decide for them."""
    from dunctl.tick import changes as case_changes   # lazy: see dunctl/lazy.py
    from dunctl.tick.reconcile import follow_case, may_open, open_case   # lazy: see dunctl/lazy.py

    ledger = ctx.ledger
    pending = ledger.sync.pending_invoices()
    idle = [invoice.id for invoice, case_id in pending if case_id is None and not may_open(invoice)]
    if idle:
        with ledger.transaction():
            ledger.sync.clear_pending_many(idle)
    for invoice, case_id in pending:
        if case_id is None and not may_open(invoice):
            continue
        with ledger.transaction():
            if case_id is None:
                customer, subscription = ledger.sync.customer_bundle(invoice)
                found = open_case(invoice, customer, subscription, ctx.config, ctx.now)
            else:
                found = follow_case(ledger.cases.record(case_id), invoice, ctx.now)
            case_changes.apply(ledger, found, ctx.now, applied)
            ledger.sync.clear_pending(invoice.id)


def signal_cases(ledger: Ledger, signal) -> list[int]:
    """The cases a signal concerns: by invoice (the simulation's disputes), by subscription, else the customer's
    open and held cases (a dispute on any of its charges among them)."""
    from dunctl.tick.reconcile import on_customer   # lazy: see dunctl/lazy.py

    if signal.kind in ("dispute", "dispute_closed") and not on_customer(signal):
        case = ledger.cases.for_invoice(signal.invoice_id) if signal.invoice_id else None
        return [case["id"]] if case and case["state"] in ("open", "paused") else []
    if signal.kind == "hold_ended":     # a promise or disputed invoice's hold (dunctl/receivables/holds.py)
        case = ledger.cases.for_invoice(signal.invoice_id)
        return [case["id"]] if case else []
    if signal.kind.startswith("subscription_"):
        return ledger.cases.ids_for_subscription(signal.subscription_id) if signal.subscription_id else []
    if signal.customer_id:
        return ledger.cases.open_ids_for_customer(signal.customer_id)
    return []
