"""What pre-dunning costs (issue #25, cause 1): planning a subscription reads its paid invoices through an index,
metered subscriptions are previewed at a cadence that follows how close their usage is to an alert, and the
planning loop stops at the tick's budget."""

from __future__ import annotations

from datetime import timedelta

from dunctl.ledger import Ledger
from tests.helpers import T0, failed_invoice, pay, seed


def _statements_of(ledger: Ledger, call) -> list[str]:
    """The SQL statements `call` runs, with their parameters inlined (sqlite3's trace callback)."""
    ran: list[str] = []
    ledger.conn.set_trace_callback(ran.append)
    try:
        call()
    finally:
        ledger.conn.set_trace_callback(None)
    return [s for s in ran if s.lstrip().upper().startswith("SELECT")]


def test_planning_a_subscription_reads_its_paid_invoices_through_an_index(tmp_path):
    ledger = Ledger.open(tmp_path / "dunctl.db")
    invoices = [failed_invoice(f"in_{n}", customer_id=f"cus_{n % 3}", subscription_id=f"sub_{n % 3}",
                               failed_at=T0 + n * timedelta(days=1)) for n in range(9)]
    seed(ledger, *invoices)
    for invoice in invoices[:5]:
        pay(ledger, invoice, T0 + timedelta(days=10))
    statements = _statements_of(ledger, lambda: ledger.notice_subject("sub_1"))
    assert any("FROM invoices" in s for s in statements)
    plans = {s: " | ".join(row[3] for row in ledger.conn.execute("EXPLAIN QUERY PLAN " + s)) for s in statements}
    scans = {s: plan for s, plan in plans.items() if "SCAN invoices" in plan}
    assert scans == {}
    assert ledger.notice_subject("sub_1")["paid_amounts"] == [4900, 4900]
