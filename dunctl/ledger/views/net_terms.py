"""The ledger's SQL for what happened to net-terms invoices (collection_method send_invoice) in a simulated run or
a replayed history: when each was issued, fell due and was paid, the reminders customers received about them, the
cases handed to collections; and the net-terms invoices a backtest replays."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dunctl.ledger.receivables import SEND_INVOICE
from dunctl.ledger.views.period import Period
from dunctl.ledger.views.report import customer_message

if TYPE_CHECKING:
    from dunctl.ledger import Ledger


def invoices(ledger: Ledger) -> list[dict]:
    """Every net-terms invoice with a due date, voided ones aside: customer, currency, created_at, due_date,
    paid_at, status."""
    return list(ledger.rows(
        """SELECT id, customer_id, currency, amount_due, created_at, due_date, paid_at, status FROM invoices
           WHERE collection_method = ? AND due_date IS NOT NULL AND status != 'void' ORDER BY created_at, id""",
        [SEND_INVOICE]))


def reminders_and_hand_offs(ledger: Ledger) -> tuple[int, int]:
    """(messages customers received on net-terms cases, a grouped email once; cases handed to collections)."""
    row = ledger.conn.execute(
        f"""SELECT (SELECT count(DISTINCT coalesce(a.message_ref, 'action:' || a.id)) FROM actions a
                      JOIN cases c ON c.id = a.case_id
                     WHERE c.failure_type = 'net_terms' AND {customer_message('a')}),
                   (SELECT count(DISTINCT a.case_id) FROM actions a JOIN cases c ON c.id = a.case_id
                     WHERE c.failure_type = 'net_terms' AND a.action = 'hand_off' AND a.status = 'done')"""
    ).fetchone()
    return row[0], row[1]


def history(ledger: Ledger, since: str | None = None, until: str | None = None) -> list[dict]:
    """The net-terms invoices issued in [since, until), with their customers, oldest first: what a backtest
    replays besides the failed card invoices."""
    where, params = Period(since, until).where("i.created_at")
    return list(ledger.rows(
        f"""SELECT i.id AS invoice_id, i.customer_id, i.currency, i.amount_due, i.number, i.created_at, i.due_date,
                  i.lines, cu.name, cu.email, cu.phone, cu.metadata AS customer_metadata, cu.preferred_locale,
                  cu.timezone
             FROM invoices i LEFT JOIN customers cu ON cu.id = i.customer_id
            WHERE i.collection_method = ? AND i.due_date IS NOT NULL AND i.status != 'void' AND {where}
            ORDER BY i.created_at, i.id""", [SEND_INVOICE, *params]))


def any_net_terms_case(ledger: Ledger) -> bool:
    return ledger.conn.execute("SELECT 1 FROM cases WHERE failure_type = 'net_terms' LIMIT 1").fetchone() is not None
