"""The sync store (`ledger.sync`): what a sync batch writes (customers, payment methods, subscriptions,
invoices, signals, the cursor), what reconciling reads back of it, and the ledger's copy of those Stripe objects."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from dunctl.clock import iso
from dunctl.errors import StaleLedger
from dunctl.failures import classify
from dunctl.ledger.receivables import note_due_date, store_terms
from dunctl.ledger.sql import Store, to_json

if TYPE_CHECKING:   # the typed records load with the first row that needs one: an idle tick builds none (25 ms)
    from dunctl.ledger.records import CustomerRecord, InvoiceRecord, SignalRecord, SubscriptionRecord
    from dunctl.model import Customer, Invoice, PaymentMethod, Signal, Subscription, SyncBatch


# A pending invoice reconciling can act on: one with a case, or one that may open a case (an open invoice, or a
# net-terms one: what tick/reconcile.py `may_open` requires before it asks more; tests/test_demo_cost.py checks the
# two agree). Written with IS: a card invoice's collection_method may be null.
_RECONCILABLE = "{case} OR {i}.status IS 'open' OR {i}.collection_method IS 'send_invoice'"


class SyncStore(Store):
    def apply_batch(self, batch: SyncBatch, now: datetime, cursor_name: str = "cursor",
                    accept_stale: bool = False) -> int:
        """Store one sync batch and its cursor atomically. Returns how many invoices were new. Refuses (StaleLedger)
        a batch showing dunctl's own requests this ledger has no record of, unless `accept_stale`."""
        if batch.dunctl_keys and not accept_stale:
            unknown = self.unknown_keys(batch.dunctl_keys)
            if unknown:
                raise StaleLedger(
                    f"the ledger {self.ledger.path} is older than the Stripe account: Stripe shows {len(unknown)} request(s) "
                    f"dunctl made that this ledger has no record of (e.g. {unknown[0]}); using it would repeat "
                    "messages and steps already done",
                    "restore the newest backup; or, to adopt this ledger knowingly, run once with "
                    "--accept-stale-ledger (steps in the catch-up window may run again)")
        with self.ledger.transaction():
            for customer in batch.customers:
                self._upsert_customer(customer, now)
            for method in batch.payment_methods:
                self._upsert_payment_method(method)
            for subscription in batch.subscriptions:
                self._upsert_subscription(subscription)
            known = self._first_failures([invoice.id for invoice in batch.invoices]) if batch.invoices else {}
            new = sum(self._upsert_invoice(invoice, now, known) for invoice in batch.invoices)
            for signal in batch.signals:
                self._record_signal(signal)
            if batch.invoices:
                # Reconciling marks these first anyway (and reads nothing of them): marked here, a batch of
                # renewals paid on the first try leaves nothing pending, and the tick does not reconcile at all.
                self.clear_unreconcilable()
            if batch.cursor is not None:
                self.ledger.set_state(cursor_name, batch.cursor)
        return new

    def unknown_keys(self, keys: list[str]) -> list[str]:
        """Of dunctl's idempotency keys seen at Stripe, those this ledger never recorded. A key belongs to its
        action's whatever the gateway added (`~` and a hash of the parameters, a link's '-link') and whichever
        try made it (':2' and on: the ledger keeps the latest try's key)."""
        unknown = []
        for key in dict.fromkeys(keys):
            if "-sys-mark-" in key:
                continue   # dunctl's note on the invoice: what it says is taken over instead (dunctl/adoption.py)
            base = re.sub(r"(:\d+)$", "", re.sub(r"(-link)?(~[0-9a-f]{8})?$", "", key))
            if self.conn.execute("SELECT 1 FROM actions WHERE idempotency_key = ? OR (substr(idempotency_key, 1, ?) "
                                 "= ? || ':') LIMIT 1", [base, len(base) + 1, base]).fetchone() is None:
                unknown.append(key)
        return unknown

    def _upsert_customer(self, c: Customer, now: datetime) -> None:
        self.conn.execute(
            """INSERT INTO customers(id, name, email, phone, metadata, preferred_locale, timezone, livemode,
                                     updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET name = excluded.name, email = excluded.email,
                 phone = excluded.phone, metadata = excluded.metadata,
                 preferred_locale = excluded.preferred_locale, timezone = excluded.timezone,
                 livemode = excluded.livemode, updated_at = excluded.updated_at""",
            [c.id, c.name, c.email, c.phone, to_json(c.metadata), c.preferred_locale, c.timezone, int(c.livemode),
             iso(now)])

    def _upsert_payment_method(self, pm: PaymentMethod) -> None:
        self.conn.execute(
            """INSERT INTO payment_methods(id, customer_id, type, brand, last4, exp_month, exp_year, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, type = excluded.type,
                 brand = excluded.brand, last4 = excluded.last4, exp_month = excluded.exp_month,
                 exp_year = excluded.exp_year, updated_at = excluded.updated_at""",
            [pm.id, pm.customer_id, pm.type, pm.brand, pm.last4, pm.exp_month, pm.exp_year, iso(pm.updated_at)])

    def _upsert_subscription(self, s: Subscription) -> None:
        # A copy that changes nothing is not written: an update naming canceled_at runs the churn rollup's
        # trigger even when the value stays the same, and the demo syncs each subscription again at every renewal.
        self.conn.execute(
            """INSERT INTO subscriptions(id, customer_id, status, metadata, usage_based, pause_behavior,
                                         canceled_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status,
                 metadata = excluded.metadata, usage_based = excluded.usage_based,
                 pause_behavior = excluded.pause_behavior, canceled_at = excluded.canceled_at
               WHERE (subscriptions.customer_id, subscriptions.status, subscriptions.metadata,
                      subscriptions.usage_based, subscriptions.pause_behavior, subscriptions.canceled_at)
                     IS NOT (excluded.customer_id, excluded.status, excluded.metadata, excluded.usage_based,
                             excluded.pause_behavior, excluded.canceled_at)""",
            [s.id, s.customer_id, s.status, to_json(s.metadata), int(s.usage_based), s.pause_behavior,
             iso(s.canceled_at)])

    def _first_failures(self, invoice_ids: list[str]) -> dict[str, tuple]:
        """invoice id -> (its stored first_failed_at,) for those of `invoice_ids` the ledger has, in one query: a
        batch's invoices were a query each before their upsert (one statement text for any number of ids)."""
        return {invoice_id: (first,) for invoice_id, first in self.conn.execute(
            "SELECT id, first_failed_at FROM invoices WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(invoice_ids)])}

    def _upsert_invoice(self, inv: Invoice, now: datetime, known: dict[str, tuple]) -> bool:
        """`known`: `_first_failures` of the batch, kept up to date here (an invoice twice in a batch finds its first
        upsert's row, as a query would)."""
        existing = known.get(inv.id)
        # The first failure never moves later: an event that arrives out of order cannot rewrite history.
        first_failed = inv.first_failed_at or inv.failed_at
        if existing and existing[0] and (first_failed is None or existing[0] < iso(first_failed)):
            first_failed_text = existing[0]
        else:
            first_failed_text = iso(first_failed)
        # A Decline is flat (codes as text): its fields as they are, without asdict's deep copy of each value (half
        # the CPU of storing a failed invoice)
        decline = dict(vars(inv.decline)) if inv.decline else None
        failure_type = classify(inv.decline) if inv.decline else None
        # An InvoiceLine is flat: its fields as they are, without asdict's deep copy (a third of a sync's CPU)
        lines = [{**vars(line), "period_start": iso(line.period_start), "period_end": iso(line.period_end)}
                 for line in inv.lines or []]
        self.conn.execute(
            """INSERT INTO invoices(id, customer_id, subscription_id, number, currency, amount_due, amount_paid,
                 amount_remaining, status, billing_reason, collection_method, attempt_count, next_payment_attempt,
                 hosted_invoice_url, customer_email, customer_name, payment_method_id, payment_method_type,
                 metadata, lines, created_at, first_failed_at, failed_at, decline, failure_type, paid_at,
                 voided_at, uncollectible_at, auto_advance, livemode, synced_at, pending)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id,
                 subscription_id = excluded.subscription_id, number = excluded.number,
                 currency = excluded.currency, amount_due = excluded.amount_due,
                 amount_paid = excluded.amount_paid, amount_remaining = excluded.amount_remaining,
                 status = CASE WHEN invoices.status IN ('paid', 'void') THEN invoices.status
                               ELSE excluded.status END,
                 billing_reason = excluded.billing_reason,
                 collection_method = excluded.collection_method,
                 attempt_count = max(invoices.attempt_count, excluded.attempt_count),
                 next_payment_attempt = excluded.next_payment_attempt,
                 hosted_invoice_url = coalesce(excluded.hosted_invoice_url, invoices.hosted_invoice_url),
                 customer_email = excluded.customer_email, customer_name = excluded.customer_name,
                 payment_method_id = excluded.payment_method_id,
                 payment_method_type = coalesce(excluded.payment_method_type, invoices.payment_method_type),
                 metadata = excluded.metadata,
                 lines = CASE WHEN ? THEN excluded.lines ELSE invoices.lines END,
                 first_failed_at = excluded.first_failed_at,
                 failed_at = coalesce(max(coalesce(excluded.failed_at, ''), coalesce(invoices.failed_at, '')),
                                      invoices.failed_at),
                 decline = CASE WHEN excluded.decline IS NOT NULL
                                 AND coalesce(excluded.failed_at, '') >= coalesce(invoices.failed_at, '')
                           THEN excluded.decline ELSE invoices.decline END,
                 failure_type = CASE WHEN excluded.decline IS NOT NULL
                                 AND coalesce(excluded.failed_at, '') >= coalesce(invoices.failed_at, '')
                           THEN excluded.failure_type ELSE invoices.failure_type END,
                 paid_at = coalesce(excluded.paid_at, invoices.paid_at),
                 voided_at = coalesce(excluded.voided_at, invoices.voided_at),
                 uncollectible_at = coalesce(excluded.uncollectible_at, invoices.uncollectible_at),
                 auto_advance = excluded.auto_advance, livemode = excluded.livemode,
                 synced_at = excluded.synced_at, pending = 1""",
            [inv.id, inv.customer_id, inv.subscription_id, inv.number, inv.currency, inv.amount_due,
             inv.amount_paid, inv.amount_remaining, inv.status, inv.billing_reason, inv.collection_method,
             inv.attempt_count, iso(inv.next_payment_attempt), inv.hosted_invoice_url, inv.customer_email,
             inv.customer_name, inv.payment_method_id, inv.payment_method_type, to_json(inv.metadata),
             to_json(lines), iso(inv.created), first_failed_text, iso(inv.failed_at),
             to_json(decline) if decline else None, failure_type, iso(inv.paid_at), iso(inv.voided_at),
             iso(inv.marked_uncollectible_at), None if inv.auto_advance is None else int(inv.auto_advance),
             int(inv.livemode), iso(now), inv.lines is not None])
        known[inv.id] = (first_failed_text,)
        store_terms(self.conn, inv)
        if inv.due_date is not None:
            note_due_date(self.ledger, inv.due_date)
        return existing is None

    def _record_signal(self, signal: Signal) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO signals(kind, at, invoice_id, customer_id, detail, source_id, subscription_id, "
            "payment_method_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [signal.kind, iso(signal.at), signal.invoice_id, signal.customer_id, signal.detail, signal.source_id,
             signal.subscription_id, signal.payment_method_id, to_json(signal.data or {})])

    def pending_signals(self) -> list[SignalRecord]:
        """Signals stored by sync that have not yet been applied to cases, oldest first."""
        rows = list(self.rows("SELECT * FROM signals WHERE applied = 0 ORDER BY at, id"))
        if not rows:
            return []
        from dunctl.ledger.records import SignalRecord   # lazy: see dunctl/lazy.py

        return [SignalRecord.from_row(row) for row in rows]

    def mark_signal_applied(self, signal_id: int) -> None:
        self.conn.execute("UPDATE signals SET applied = 1 WHERE id = ?", [signal_id])

    def pending_invoices(self, reconcilable: bool = False) -> list[tuple[InvoiceRecord, int | None]]:
        """Invoices changed since cases were last reconciled, each with its case id (None: no case yet). With
        `reconcilable`, only those `clear_unreconcilable` leaves."""
        rows = list(self.rows(f"""SELECT i.*, c.id AS case_id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id
                                  WHERE i.pending = 1 AND ({_RECONCILABLE.format(case="c.id IS NOT NULL", i="i") if reconcilable else 1})"""))
        if not rows:
            return []
        from dunctl.ledger.records import InvoiceRecord   # lazy: see dunctl/lazy.py

        return [(InvoiceRecord.from_row(row), row["case_id"]) for row in rows]

    def pending_noted_invoices(self, key: str) -> list[tuple[str, dict, int | None]]:
        """Of the open invoices changed since cases were last reconciled, those whose metadata has `key` (the note
        dunctl leaves on invoices, dunctl/adoption.py): (invoice id, metadata, case id or None)."""
        return [(row[0], json.loads(row[1] or "{}"), row[2]) for row in self.conn.execute(
            """SELECT i.id, i.metadata, c.id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id
               WHERE i.pending = 1 AND i.status = 'open' AND json_extract(i.metadata, '$.' || ?) IS NOT NULL""",
            [key])]

    def clear_unreconcilable(self) -> None:
        """Mark reconciled, without reading them, the pending invoices that have no case and cannot open one: neither
        open nor net-terms (paid on the first try, mostly; tick/reconcile.py `may_open` asks more of the rest)."""
        self.conn.execute(f"""UPDATE invoices SET pending = 0 WHERE pending = 1 AND NOT ({_RECONCILABLE.format(
            case='EXISTS (SELECT 1 FROM cases c WHERE c.invoice_id = invoices.id)', i='invoices')})""")

    def clear_pending(self, invoice_id: str) -> None:
        self.conn.execute("UPDATE invoices SET pending = 0 WHERE id = ?", [invoice_id])

    def clear_pending_many(self, invoice_ids: Iterable[str]) -> None:
        self.conn.executemany("UPDATE invoices SET pending = 0 WHERE id = ?", [[i] for i in invoice_ids])

    def invoice(self, invoice_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM invoices WHERE id = ?", [invoice_id]), None)

    def customer(self, customer_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM customers WHERE id = ?", [customer_id]), None)

    def time_zones(self, customer_ids: Iterable[str]) -> dict[str, str | None]:
        """customer id -> its time zone (None: not set), for those the ledger has, in one query: the notices due in
        a tick are each checked against their customer's quiet hours."""
        return dict(self.conn.execute("SELECT id, timezone FROM customers WHERE id IN (SELECT value FROM json_each(?))",
                                      [json.dumps(list(dict.fromkeys(customer_ids)))]))

    def payment_method(self, pm_id: str | None) -> dict | None:
        if not pm_id:
            return None
        return next(self.rows("SELECT * FROM payment_methods WHERE id = ?", [pm_id]), None)

    def subscription(self, sub_id: str | None) -> dict | None:
        if not sub_id:
            return None
        return next(self.rows("SELECT * FROM subscriptions WHERE id = ?", [sub_id]), None)

    def invoice_record(self, invoice_id: str) -> InvoiceRecord | None:
        from dunctl.ledger.records import InvoiceRecord   # lazy: see dunctl/lazy.py

        return InvoiceRecord.from_row(self.invoice(invoice_id))

    def customer_bundle(self, invoice: InvoiceRecord) -> tuple[CustomerRecord | None, SubscriptionRecord | None]:
        from dunctl.ledger.records import CustomerRecord, SubscriptionRecord   # lazy: see dunctl/lazy.py

        return (CustomerRecord.from_row(self.customer(invoice.customer_id)),
                SubscriptionRecord.from_row(self.subscription(invoice.subscription_id)))

    def customer_subscriptions(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM subscriptions WHERE customer_id = ? ORDER BY id", [customer_id]))

    def note_dispute(self, customer_id: str, dispute_id: str, summary: str | None) -> None:
        """A dispute on one of the customer's charges opened (`summary`: what it is) or closed (None)."""
        row = self.conn.execute("SELECT open_disputes FROM customers WHERE id = ?", [customer_id]).fetchone()
        if row is None:
            return
        disputes = json.loads(row[0] or "{}")
        if summary is None:
            disputes.pop(dispute_id, None)
        else:
            disputes[dispute_id] = summary
        self.conn.execute("UPDATE customers SET open_disputes = ? WHERE id = ?",
                          [json.dumps(disputes) if disputes else None, customer_id])
