"""The notice store (`ledger.notices`): pre-dunning notices planned, deferred, cancelled and superseded, and
what their planner reads. Claiming and recording a notice's send is the effect journal's (on the Ledger)."""

from __future__ import annotations

import json
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, NamedTuple

from dunctl.clock import iso
from dunctl.ledger.sql import Store, to_json

if TYPE_CHECKING:
    from dunctl.model import SyncBatch


class _Plan(NamedTuple):
    """One notice for plan(), as plan_many() reads a dunctl.notices.planner.NoticePlan."""
    kind: str
    object_id: str
    period: str
    offset: str
    due_at: datetime
    key: str
    data: dict
    status: str
    detail: str | None


class NoticeStore(Store):
    def __init__(self, ledger):
        super().__init__(ledger)
        # subscription id -> (its stored usage preview's text, that text parsed): the preview a planning stores is
        # the one the next planning of the subscription reads (2,242 looks in a demo), parsed again only when the
        # text differs. Shared: read it, never change it.
        self._previews: dict[str, tuple[str, dict]] = {}

    def preview(self, subject: dict) -> dict | None:
        """The subscription's latest upcoming-invoice preview as the ledger keeps it, parsed only for a metered one
        (nothing plans with the preview of another), once per stored text."""
        sub = subject["subscription"]
        text = sub.get("usage_preview") if sub.get("usage_based") else None
        if not text:
            return None
        kept = self._previews.get(sub["id"])
        if kept is not None and kept[0] == text:
            return kept[1]
        value = json.loads(text)
        self._previews[sub["id"]] = (text, value)
        return value

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
        return self.subjects([subscription_id]).get(subscription_id)

    def subjects(self, subscription_ids: list[str]) -> dict[str, dict]:
        """subject() of each subscription that exists, by id, in one query: a tick plans its due subscriptions
        together, and four queries each were a fifth of planning's CPU in the demo."""
        return self._subjects(self.conn.execute(_SUBJECTS + _BY_IDS, [json.dumps(subscription_ids)]))

    def due_subjects(self, now: datetime, limit: int) -> dict[str, dict]:
        """subject() of the first `limit` subscriptions whose notices are due to be planned
        (Ledger.subscriptions_to_plan's, in its order), by id, in one query: a tick that plans a few subscriptions
        reads them as it finds them."""
        return self._subjects(self.conn.execute(_DUE_SUBJECTS, [iso(now), limit]), ("notices_due_at", "id"))

    def _subjects(self, cursor, order_by: tuple[str, ...] = ()) -> dict[str, dict]:
        """The subjects of a _SUBJECTS query's rows, in the order of their subscription's `order_by` columns, if
        any: sorted here, a few rows of a tick, rather than by the query, whose sort copied every whole row (its
        usage preview, its customer, its card) into a temporary b-tree."""
        found = {}
        names = [column[0] for column in cursor.description]
        customer_at, method_at = names.index(_CUSTOMER), names.index(_METHOD)
        if order_by:
            cursor = sorted(cursor, key=itemgetter(*map(names[:customer_at].index, order_by)))
        # each part's column names, sliced once per query, not once per row
        sub_names, customer_names = names[:customer_at], names[customer_at + 1:method_at]
        method_names, last = names[method_at + 1:-1], len(names) - 1
        for row in cursor:
            sub = dict(zip(sub_names, row[:customer_at]))
            customer = _joined(customer_names, row[customer_at + 1:method_at])
            method = _joined(method_names, row[method_at + 1:last])
            # the mean of the last three paid periods: their order does not matter, only which three
            paid = [int(amount) for amount in row[-1].split(",")] if row[-1] else []
            # (not its notices: the planner never reads them, and they grow with every period)
            found[sub["id"]] = {"subscription": sub, "customer": customer, "payment_method": method,
                                "paid_amounts": paid}
        return found

    def plan(self, *, kind: str, object_id: str, period: str, offset: str, customer_id: str,
                    subscription_id: str | None, due_at: datetime, now: datetime, key: str, data: dict,
                    status: str = "pending", detail: str | None = None) -> bool:
        """Add a notice unless its (kind, object, period, offset) exists. False when it already did. (Not by a
        planning: the subscription's next planning writes what it calls for, whatever its last one did.)"""
        before = self.conn.total_changes
        self.plan_many([(subscription_id, customer_id, _Plan(kind, object_id, period, offset, due_at, key, data,
                                                              status, detail))], now)
        added = self.conn.total_changes > before
        self.conn.execute("UPDATE subscriptions SET notices_basis = NULL WHERE id = ?", [subscription_id])
        return added

    def plan_many(self, planned: list[tuple], now: datetime) -> None:
        """plan() for many: (subscription id, customer id, plan), the plan with the attributes of a
        dunctl.notices.planner.NoticePlan. Each notice is added once, under its (kind, object, period, offset)."""
        at = iso(now)
        self.conn.executemany(
            """INSERT OR IGNORE INTO notices(kind, object_id, period, "offset", customer_id, subscription_id, status,
                 due_at, next_due_at, planned_at, finished_at, idempotency_key, detail, data)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [[p.kind, p.object_id, p.period, p.offset, customer_id, subscription_id, p.status, iso(p.due_at),
              iso(p.due_at) if p.status == "pending" else None, at, None if p.status == "pending" else at, p.key,
              p.detail, to_json(p.data)] for subscription_id, customer_id, p in planned])

    def cancel(self, subscription_id: str, keep: set[int], now: datetime, reason: str) -> int:
        """Pending notices of a subscription that its facts no longer call for (card replaced, renewal moved,
        subscription cancelled): never sent."""
        rows = self.conn.execute("SELECT id FROM notices WHERE subscription_id = ? AND status IN ('pending', 'failed')",
                               [subscription_id]).fetchall()
        gone = [row[0] for row in rows if row[0] not in keep]
        self._cancel([(notice_id, reason) for notice_id in gone], now)
        return len(gone)

    def cancel_unplanned(self, planned: dict[str, tuple[set[tuple], str]], now: datetime) -> None:
        """cancel() for many subscriptions: subscription id -> (the (kind, object, period, offset) of every notice
        its planning called for, why the others are not). Its pending or failed notices not among them are
        cancelled."""
        rows = self.conn.execute(
            """SELECT id, subscription_id, kind, object_id, period, "offset" FROM notices
               WHERE subscription_id IN (SELECT value FROM json_each(?)) AND status IN ('pending', 'failed')""",
            [json.dumps(list(planned))])
        gone = [(notice_id, planned[sub_id][1]) for notice_id, sub_id, *key in rows
                if tuple(key) not in planned[sub_id][0]]
        self._cancel(gone, now)

    def _cancel(self, gone: list[tuple[int, str]], now: datetime) -> None:
        self.conn.executemany("UPDATE notices SET status = 'cancelled', next_due_at = NULL, finished_at = ?, "
                              "detail = ? WHERE id = ?", [(iso(now), reason, notice_id) for notice_id, reason in gone])

    def id_of(self, kind: str, object_id: str, period: str, offset: str) -> int | None:
        row = self.conn.execute('SELECT id FROM notices WHERE kind = ? AND object_id = ? AND period = ? AND "offset" = ?',
                              [kind, object_id, period, offset]).fetchone()
        return row[0] if row else None

    def planned(self, subscriptions: list[tuple[str, datetime | None, dict | None, str | None]],
                now: datetime) -> None:
        """Each subscription planned: (id, when it is planned again (None: when sync changes it), the usage
        preview fetched for it now, or None, the digest of the notices it called for (notices_basis)), one statement
        for all."""
        rows = []
        for subscription_id, at, preview, basis in subscriptions:
            text = None if preview is None else to_json(preview)
            if text is not None:
                self._previews[subscription_id] = (text, preview)
            rows.append((iso(at), None if preview is None else iso(now), text, basis, subscription_id))
        self.conn.executemany(
            "UPDATE subscriptions SET notices_due_at = ?, usage_checked_at = COALESCE(?, usage_checked_at), "
            "usage_preview = COALESCE(?, usage_preview), notices_basis = ? WHERE id = ?", rows)

    def forget_bases(self) -> None:
        """Every subscription's next planning writes what it calls for (notices reopened on the switch to live may
        be ones it cancels)."""
        self.conn.execute("UPDATE subscriptions SET notices_basis = NULL WHERE notices_basis IS NOT NULL")

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
        self.supersede_usage_alerts_many([(subscription_id, period, top)], now)

    def supersede_usage_alerts_many(self, tops: list[tuple[str, str, str]], now: datetime) -> None:
        """supersede_usage_alerts() for many: (subscription id, period, the offset of the alert sent)."""
        self.conn.executemany(
            """UPDATE notices SET status = 'skipped', next_due_at = NULL, finished_at = ?,
                 detail = 'superseded by the ' || ? || ' alert' WHERE subscription_id = ? AND kind = 'usage_alert'
                 AND period = ? AND "offset" != ? AND status IN ('pending', 'failed')""",
            [(iso(now), top, subscription_id, period, top) for subscription_id, period, top in tops])


# A subscription, its customer and the card its next payment uses (its own default, else the customer's), and the
# amounts of its last three paid invoices (through the invoices_subscription index, as text: "4900,4900,5100").
# The ids come as one JSON array, not an IN list of their number of `?`: one statement text for every number of
# subscriptions, which sqlite3's statement cache keeps (preparing this one costs three times running it).
# Of each row, the columns the notice planner reads (dunctl/notices/planner.py, planning.py; NoticeStore.preview),
# not all: the whole rows (37 columns) were a third of reading a tick's subjects. A column the planner comes to
# read is added here, or it reads None.
_CUSTOMER, _METHOD = "-- customer", "-- payment method"     # where the joined rows' columns start
_SUBSCRIPTION_COLUMNS = ("id", "customer_id", "status", "metadata", "usage_based", "current_period_end", "interval",
                         "amount", "currency", "cancel_at_period_end", "notices_due_at", "usage_checked_at",
                         "usage_preview", "notices_basis")
_CUSTOMER_COLUMNS = ("id", "metadata")
_CARD_COLUMNS = ("id", "type", "brand", "last4", "exp_month", "exp_year")
_SUBJECTS = f"""SELECT {", ".join("s." + name for name in _SUBSCRIPTION_COLUMNS)}, NULL AS "{_CUSTOMER}",
    {", ".join("c." + name for name in _CUSTOMER_COLUMNS)}, NULL AS "{_METHOD}",
    {", ".join("p." + name for name in _CARD_COLUMNS)},
    (SELECT group_concat(amount_paid) FROM (SELECT amount_paid FROM invoices WHERE subscription_id = s.id
       AND status = 'paid' AND amount_paid > 0 ORDER BY created_at DESC LIMIT 3))
  FROM subscriptions s LEFT JOIN customers c ON c.id = s.customer_id
  LEFT JOIN payment_methods p ON p.id = COALESCE(NULLIF(s.default_payment_method, ''), c.default_payment_method)
"""
_BY_IDS = "WHERE s.id IN (SELECT value FROM json_each(?))"
# The first due ones are picked (and ordered) by their ids alone through the index, then joined: ordered after the
# join, a backlog's every subject would be read to sort them. (Their order: NoticeStore.due_subjects sorts them.)
_DUE_SUBJECTS = _SUBJECTS.replace(
    "FROM subscriptions s", """FROM (SELECT id FROM subscriptions INDEXED BY subscriptions_notices_due WHERE notices_due_at <= ?
                ORDER BY notices_due_at, id LIMIT ?) due JOIN subscriptions s ON s.id = due.id""", 1)


def _joined(names: list[str], values: tuple) -> dict | None:
    """A joined table's columns of a _SUBJECTS row as that table's row (None: the LEFT JOIN found none)."""
    part = dict(zip(names, values))
    return part if part.get("id") is not None else None
