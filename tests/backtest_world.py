"""Books of failed invoices played on the real SimulatedAccount (its customer model, its luck), worked by a fixed
schedule shaped like the shipped `standard` sequence, and read back as the rows `history_queries.case_touches`
returns. A thousand cases cost a fraction of a second, where the engine ticking hourly costs seconds per hundred:
what lets a test fit the backtest's model to ledgers of known parameters, many times over."""

from __future__ import annotations

import heapq
import json
from datetime import datetime, timedelta, timezone

from dunctl.backtest_model import CaseRecord, records
from dunctl.clock import iso
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.assumptions import Assumptions

START = datetime(2026, 11, 2, tzinfo=timezone.utc)
# (days after the failure, action, audience); retries only on soft declines, as the shipped segments do.
SCHEDULE = ((1 / 48, "email", "customer"), (2, "retry", None), (3, "email", "customer"), (4, "email", "customer"),
            (6, "retry", None), (8, "sms", "customer"), (11, "retry", None), (12, "email", "customer"),
            (15, "escalate", "internal"), (21, "pause_subscription", None), (21, "email", "customer"),
            (26, "email", "customer"), (30, "cancel_subscription", None), (30, "email", "customer"))
FOLLOW_DAYS = 45
SOFT_SHARE = 0.7          # the rest are expired cards: no retries, the customer must give a new card


def play(assumptions: Assumptions, *, seed: int, cases: int) -> list[CaseRecord]:
    """`cases` failed invoices, one per customer, failing an hour apart, each worked by SCHEDULE until paid."""
    account = SimulatedAccount([], seed=seed, start=START, assumptions=assumptions)
    due: list[tuple[datetime, int, int, str, str | None]] = []
    ids, soft, touches, by_retry = [], [], {}, set()
    for n in range(cases):
        failed = START + timedelta(hours=n % 48)
        is_soft = (n * 7919) % 100 < SOFT_SHARE * 100
        invoice_id = account.script_failure(1000, "usd", "insufficient_funds" if is_soft else "expired_card",
                                            "card", failed, f"c{n}@example.test")
        ids.append(invoice_id)
        soft.append(is_soft)
        touches[invoice_id] = []
        for k, (days, action, audience) in enumerate(SCHEDULE):
            if action != "retry" or is_soft:
                heapq.heappush(due, (failed + timedelta(days=days), n, k, action, audience))
    while due:
        at, n, _, action, audience = heapq.heappop(due)
        account.advance_to(at)
        invoice_id = ids[n]
        invoice = account.invoice_state(invoice_id)
        if invoice.status != "open":
            continue
        _act(account, invoice, at, action, audience, touches[invoice_id], by_retry)
    account.advance_to(START + timedelta(days=FOLLOW_DAYS + 2))
    return records([_row(account, invoice_id, is_soft, touches[invoice_id], invoice_id in by_retry)
                    for invoice_id, is_soft in zip(ids, soft)])


def _act(account: SimulatedAccount, invoice, at: datetime, action: str, audience: str | None, touched: list,
         by_retry: set) -> None:
    key = f"{invoice.id}/{action}/{at.isoformat()}"
    if action == "retry":
        if account.pay_invoice(invoice.id, key).succeeded:
            by_retry.add(invoice.id)
        return
    if action in ("email", "sms"):
        account.message_delivered(invoice.id, action, at, personalised=True)
    elif action == "escalate":
        account.escalated(invoice.id, at)
    elif action == "pause_subscription":
        account.pause_subscription(invoice.subscription_id, "void", key)
    else:
        account.cancel_subscription(invoice.subscription_id, "unpaid", key)
    touched.append([iso(at), action, audience or "customer"])


def _row(account: SimulatedAccount, invoice_id: str, soft: bool, touched: list, by_retry: bool) -> dict:
    invoice = account.invoice_state(invoice_id)
    paid = invoice.status == "paid"
    return {"invoice_id": invoice_id, "failure_type": "card_soft" if soft else "card_update",
            "state": "recovered" if paid else "open", "recovered_by": "retry" if by_retry else "customer",
            "first_failed_at": iso(invoice.first_failed_at), "recovered_at": iso(invoice.paid_at) if paid else None,
            "attempts": invoice.attempt_count, "touches": json.dumps(touched)}
