"""The notice store (`ledger.notices`): pre-dunning notices planned, deferred, cancelled and superseded, and
what their planner reads. Claiming and recording a notice's send is the effect journal's (on the Ledger)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from dunctl.clock import iso
from dunctl.ledger.sql import Store, to_json

if TYPE_CHECKING:
    from dunctl.model import SyncBatch


class NoticeStore(Store):
    def apply_batch(self, batch: SyncBatch, now: datetime) -> None:
        """What pre-dunning keeps from a sync batch (billing terms, default payment methods), and which
        subscriptions must have their notices planned again: those changed, and those of a changed customer or
        card. Call inside the batch's transaction, after apply_batch."""
        due = iso(now)
        for s in batch.subscriptions:
            self.conn.execute(
                """UPDATE subscriptions SET current_period_start = ?, current_period_end = ?,
                     default_payment_method = ?, interval = ?, amount = ?, currency = ?, cancel_at_period_end = ?,
                     notices_due_at = ? WHERE id = ?""",
                [iso(s.current_period_start), iso(s.current_period_end), s.default_payment_method_id, s.interval,
                 s.amount, s.currency, int(s.cancel_at_period_end), due, s.id])
        customers = {c.id for c in batch.customers}
        for c in batch.customers:
            self.conn.execute("UPDATE customers SET default_payment_method = ? WHERE id = ?",
                            [c.default_payment_method_id, c.id])
        customers |= {m.customer_id for m in batch.payment_methods if m.customer_id}
        customers |= {s.customer_id for s in batch.signals if s.customer_id and s.kind != "dispute"}
        for customer_id in customers:
            self.conn.execute("UPDATE subscriptions SET notices_due_at = ? WHERE customer_id = ?", [due, customer_id])

    def subject(self, subscription_id: str) -> dict | None:
        """A subscription with its customer and the card its next payment will use (its own default, else the
        customer's), read once for the notice planner."""
        sub = self.ledger.sync.subscription(subscription_id)
        if sub is None:
            return None
        customer = self.ledger.sync.customer(sub["customer_id"])
        method_id = sub.get("default_payment_method") or (customer or {}).get("default_payment_method")
        paid = [row[0] for row in self.conn.execute(
            "SELECT amount_paid FROM invoices WHERE subscription_id = ? AND status = 'paid' AND amount_paid > 0 "
            "ORDER BY created_at DESC LIMIT 3", [subscription_id])]
        # (not its notices: the planner never reads them, and they grow with every period)
        return {"subscription": sub, "customer": customer, "payment_method": self.ledger.sync.payment_method(method_id),
                "paid_amounts": paid}

    def plan(self, *, kind: str, object_id: str, period: str, offset: str, customer_id: str,
                    subscription_id: str | None, due_at: datetime, now: datetime, key: str, data: dict,
                    status: str = "pending", detail: str | None = None) -> bool:
        """Add a notice unless its (kind, object, period, offset) exists. False when it already did."""
        finished = status != "pending"
        cursor = self.conn.execute(
            """INSERT OR IGNORE INTO notices(kind, object_id, period, "offset", customer_id, subscription_id, status,
                 due_at, next_due_at, planned_at, finished_at, idempotency_key, detail, data)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [kind, object_id, period, offset, customer_id, subscription_id, status, iso(due_at),
             None if finished else iso(due_at), iso(now), iso(now) if finished else None, key, detail, to_json(data)])
        return cursor.rowcount == 1

    def cancel(self, subscription_id: str, keep: set[int], now: datetime, reason: str) -> int:
        """Pending notices of a subscription that its facts no longer call for (card replaced, renewal moved,
        subscription cancelled): never sent."""
        rows = self.conn.execute("SELECT id FROM notices WHERE subscription_id = ? AND status IN ('pending', 'failed')",
                               [subscription_id]).fetchall()
        gone = [row[0] for row in rows if row[0] not in keep]
        for notice_id in gone:
            self.conn.execute("UPDATE notices SET status = 'cancelled', next_due_at = NULL, finished_at = ?, "
                            "detail = ? WHERE id = ?", [iso(now), reason, notice_id])
        return len(gone)

    def id_of(self, kind: str, object_id: str, period: str, offset: str) -> int | None:
        row = self.conn.execute('SELECT id FROM notices WHERE kind = ? AND object_id = ? AND period = ? AND "offset" = ?',
                              [kind, object_id, period, offset]).fetchone()
        return row[0] if row else None

    def set_due(self, subscription_id: str, at: datetime | None) -> None:
        self.conn.execute("UPDATE subscriptions SET notices_due_at = ? WHERE id = ?", [iso(at), subscription_id])

    def record_usage_preview(self, subscription_id: str, preview: dict, at: datetime) -> None:
        self.conn.execute("UPDATE subscriptions SET usage_checked_at = ?, usage_preview = ? WHERE id = ?",
                        [iso(at), to_json(preview), subscription_id])

    def get(self, notice_id: int) -> dict | None:
        return next(self.rows("SELECT * FROM notices WHERE id = ?", [notice_id]), None)

    def defer(self, notice_id: int, until: datetime, reason: str) -> None:
        self.conn.execute("UPDATE notices SET next_due_at = ?, detail = ? WHERE id = ?", [iso(until), reason, notice_id])

    def of_customer(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM notices WHERE customer_id = ? ORDER BY due_at, id", [customer_id]))

    def would_groups(self) -> list[dict]:
        """Every notice of a (kind, object, period) that monitor mode recorded as `would`, for the switch to live
        (once per switch: not a tick's cost)."""
        return list(self.rows(
            """SELECT n.* FROM notices n WHERE EXISTS (SELECT 1 FROM notices w WHERE w.status = 'would'
                 AND w.kind = n.kind AND w.object_id = n.object_id AND w.period = n.period) ORDER BY n.id"""))

    def reopen(self, notice_id: int, now: datetime, detail: str) -> None:
        """A `would` notice to be sent for real by the next executor run (the config switched to live)."""
        self.conn.execute("UPDATE notices SET status = 'pending', next_due_at = ?, finished_at = NULL, detail = ? "
                          "WHERE id = ? AND status = 'would'", [iso(now), detail, notice_id])

    def supersede_usage_alerts(self, subscription_id: str, period: str, top: str, now: datetime) -> None:
        """Usage alerts of a period still waiting (quiet hours, contact policy) when a higher threshold is crossed:
        only the highest is sent."""
        self.conn.execute(
            """UPDATE notices SET status = 'skipped', next_due_at = NULL, finished_at = ?,
                 detail = 'superseded by the ' || ? || ' alert' WHERE subscription_id = ? AND kind = 'usage_alert'
                 AND period = ? AND "offset" != ? AND status IN ('pending', 'failed')""",
            [iso(now), top, subscription_id, period, top])
