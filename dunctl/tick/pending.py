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
    """Open a case for each pending invoice that failed, follow the ones with a case, and mark every one
    reconciled, all in one transaction (a busy demo tick had one per invoice) with their cases read in one query.
    What it writes is derived from the invoices alone, which stay pending until it commits: a tick that dies
    halfway leaves them for the next one to reconcile again, as before."""
    from dunctl.tick import changes as case_changes   # lazy: see dunctl/lazy.py
    from dunctl.tick.reconcile import follow_case, may_open, open_case   # lazy: see dunctl/lazy.py

    ledger = ctx.ledger
    with ledger.transaction():
        # the invoices that cannot open a case (paid on the first try, mostly): nothing to read or decide
        ledger.sync.clear_unreconcilable()
        pending = ledger.sync.pending_invoices(reconcilable=True)
        todo = [(invoice, case_id) for invoice, case_id in pending if case_id is not None or may_open(invoice)]
        # read before any is followed: following an invoice changes its own case only (a case per invoice)
        cases = ledger.cases.records(case_id for _, case_id in todo if case_id is not None)
        for invoice, case_id in todo:
            if case_id is None:
                customer, subscription = ledger.sync.customer_bundle(invoice)
                found = open_case(invoice, customer, subscription, ctx.config, ctx.now)
            else:
                found = follow_case(cases[case_id], invoice, ctx.now)
            case_changes.apply(ledger, found, ctx.now, applied)
        ledger.sync.clear_pending_many(invoice.id for invoice, _ in pending)


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
