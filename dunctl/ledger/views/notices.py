"""The SQL behind what `status` shows of pre-dunning notices and the report's pre-dunning section."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import TYPE_CHECKING

from dunctl.clock import iso
from dunctl.ledger.sql import rows
from dunctl.ledger.views.period import Period

if TYPE_CHECKING:
    from dunctl.ledger import Ledger


def due_within(ledger: Ledger, until: datetime) -> list[dict]:
    """Notices still to be sent before `until`, with their customer, for `status`."""
    return list(ledger.rows(
        """SELECT n.*, cu.name AS customer_name, cu.email AS customer_email FROM notices n
           LEFT JOIN customers cu ON cu.id = n.customer_id
           WHERE n.next_due_at IS NOT NULL AND n.next_due_at <= ? ORDER BY n.next_due_at, n.id""",
        [iso(until)]))


def sent_by_kind(conn: sqlite3.Connection, sent: Period) -> dict[str, int]:
    """Notices sent in the period (by when they were sent), by kind."""
    where, params = sent.where("n.finished_at")
    return dict(conn.execute(f"SELECT kind, count(*) FROM notices n WHERE status = 'done' AND {where} "
                             "GROUP BY kind", params).fetchall())


def expiry_notices(conn: sqlite3.Connection, sent: Period) -> list[dict]:
    """Cards sent an expiry notice in the period, once each (however many offsets): when first, and the expiry."""
    where, params = sent.where("n.finished_at")
    return list(rows(conn,
        f"""SELECT n.object_id, n.period, n.customer_id, min(n.finished_at) AS first_sent,
                   json_extract(n.data, '$.card.expires_at') AS expires_at
            FROM notices n WHERE n.kind = 'card_expiring' AND n.status = 'done' AND {where}
            GROUP BY n.object_id, n.period""", params))


def card_updated_between(conn: sqlite3.Connection, customer_id: str, after: str, before: str) -> bool:
    """Did the provider report a payment-method change for the customer in (after, before)?"""
    return conn.execute(
        "SELECT 1 FROM signals WHERE kind = 'payment_method_updated' AND customer_id = ? AND at > ? AND at < ? "
        "LIMIT 1", [customer_id, after, before]).fetchone() is not None


def renewals(conn: sqlite3.Connection, created: Period, window_days: int) -> list[dict]:
    """Renewal invoices created in the period: status, attempts, whether a case opened, and whether a renewal
    reminder was sent for the period they belong to (ended within `window_days` of their creation)."""
    where, params = created.where("i.created_at")
    return list(rows(conn,
        f"""SELECT i.id, i.status, i.attempt_count,
                   (SELECT count(*) FROM cases c WHERE c.invoice_id = i.id) AS failed,
                   EXISTS (SELECT 1 FROM notices n WHERE n.kind = 'upcoming_renewal' AND n.status = 'done'
                           AND n.subscription_id = i.subscription_id
                           AND datetime(i.created_at) BETWEEN datetime(n.period, '-{window_days} days')
                                                        AND datetime(n.period, '+{window_days} days')) AS reminded
            FROM invoices i WHERE i.billing_reason = 'subscription_cycle' AND i.subscription_id IS NOT NULL
              AND {where}""", params))


def large_charge_notices(conn: sqlite3.Connection, sent: Period) -> list[dict]:
    where, params = sent.where("n.finished_at")
    return list(rows(conn, f"""SELECT n.subscription_id, n.period FROM notices n
                               WHERE n.kind = 'large_charge' AND n.status = 'done' AND {where}""", params))


def failed_after(conn: sqlite3.Connection, subscription_id: str, period: str, window_days: int) -> bool:
    """Did an invoice of the subscription created within `window_days` of `period` open a case?"""
    return conn.execute(
        f"""SELECT 1 FROM cases c JOIN invoices i ON i.id = c.invoice_id WHERE i.subscription_id = ?
            AND datetime(i.created_at) BETWEEN datetime(?, '-{window_days} days') AND datetime(?, '+{window_days} days')
            LIMIT 1""", [subscription_id, period, period]).fetchone() is not None
