"""The ledger: every row dunctl keeps, behind intent-named methods. All SQL lives here (and in report queries).

SQLite through sqlite-utils, WAL mode, schema only through numbered migrations applied on open, file mode 0600
because it holds customer emails. Times are UTC text ('2026-11-03T09:00:00Z'); money is integer minor units.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from sqlite_utils import Database

from dunctl.clock import iso
from dunctl.errors import LockHeld, UsageError
from dunctl.ledger.migrations import migrations
from dunctl.model import Customer, Invoice, PaymentMethod, Signal, Subscription, SyncBatch

OPEN_STATES = ("open", "paused")
ENDED_STATES = ("recovered", "exhausted", "written_off", "voided", "closed")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Ledger:
    def __init__(self, db: Database, path: Path | None = None):
        self.db = db
        self.path = path
        self._lock_fd: int | None = None

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path) -> Ledger:
        """Open (creating with mode 0600 if needed) and migrate the ledger at `path`."""
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = Database(path)
        db.conn.execute("PRAGMA busy_timeout = 10000")
        db.conn.execute("PRAGMA foreign_keys = ON")
        db.enable_wal()
        migrations.apply(db)
        return cls(db, path)

    @classmethod
    def open_existing(cls, path: str | Path) -> Ledger:
        """Open a ledger that must already exist (status, report, case): never create an empty one."""
        if not Path(path).exists():
            raise UsageError(f"no ledger at {path}", "run `dunctl tick` (or `dunctl demo`) first")
        return cls.open(path)

    def close(self) -> None:
        self.release_tick_lock()
        self.db.close()

    # -- the tick lock ---------------------------------------------------------------------------------------

    def acquire_tick_lock(self) -> None:
        """Take the ledger's tick lock or raise LockHeld. The lock is the kernel's, on the ledger file itself:
        a tick that crashes releases it with its process."""
        if self.path is None:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(f"another dunctl tick is running on {self.path}",
                           "this tick did nothing; the next cron run will pick up whatever is due")
        self._lock_fd = fd

    def release_tick_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextmanager
    def tick_lock(self) -> Iterator[None]:
        self.acquire_tick_lock()
        try:
            yield
        finally:
            self.release_tick_lock()

    # -- sync ------------------------------------------------------------------------------------------------

    def get_state(self, name: str, default=None):
        row = self.db.execute("SELECT value FROM sync_state WHERE name = ?", [name]).fetchone()
        return json.loads(row[0]) if row else default

    def set_state(self, name: str, value) -> None:
        self.db.execute("INSERT INTO sync_state(name, value) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [name, _json(value)])

    def apply_batch(self, batch: SyncBatch, now: datetime, cursor_name: str = "cursor") -> int:
        """Store one sync batch and its cursor atomically. Returns how many invoices were new."""
        with self.db.atomic():
            for customer in batch.customers:
                self._upsert_customer(customer, now)
            for method in batch.payment_methods:
                self._upsert_payment_method(method)
            for subscription in batch.subscriptions:
                self._upsert_subscription(subscription)
            new = sum(self._upsert_invoice(invoice, now) for invoice in batch.invoices)
            for signal in batch.signals:
                self._record_signal(signal)
            if batch.cursor is not None:
                self.set_state(cursor_name, batch.cursor)
        return new

    def _upsert_customer(self, c: Customer, now: datetime) -> None:
        self.db.execute(
            """INSERT INTO customers(id, name, email, phone, metadata, preferred_locale, timezone, livemode,
                                     updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET name = excluded.name, email = excluded.email,
                 phone = excluded.phone, metadata = excluded.metadata,
                 preferred_locale = excluded.preferred_locale, timezone = excluded.timezone,
                 livemode = excluded.livemode, updated_at = excluded.updated_at""",
            [c.id, c.name, c.email, c.phone, _json(c.metadata), c.preferred_locale, c.timezone, int(c.livemode),
             iso(now)])

    def _upsert_payment_method(self, pm: PaymentMethod) -> None:
        self.db.execute(
            """INSERT INTO payment_methods(id, customer_id, type, brand, last4, exp_month, exp_year, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, type = excluded.type,
                 brand = excluded.brand, last4 = excluded.last4, exp_month = excluded.exp_month,
                 exp_year = excluded.exp_year, updated_at = excluded.updated_at""",
            [pm.id, pm.customer_id, pm.type, pm.brand, pm.last4, pm.exp_month, pm.exp_year, iso(pm.updated_at)])

    def _upsert_subscription(self, s: Subscription) -> None:
        self.db.execute(
            """INSERT INTO subscriptions(id, customer_id, status, metadata, usage_based, pause_behavior,
                                         canceled_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status,
                 metadata = excluded.metadata, usage_based = excluded.usage_based,
                 pause_behavior = excluded.pause_behavior, canceled_at = excluded.canceled_at""",
            [s.id, s.customer_id, s.status, _json(s.metadata), int(s.usage_based), s.pause_behavior,
             iso(s.canceled_at)])

    def _upsert_invoice(self, inv: Invoice, now: datetime) -> bool:
        existing = self.db.execute("SELECT first_failed_at FROM invoices WHERE id = ?", [inv.id]).fetchone()
        # The first failure never moves later: an event that arrives out of order cannot rewrite history.
        first_failed = inv.first_failed_at or inv.failed_at
        if existing and existing[0] and (first_failed is None or existing[0] < iso(first_failed)):
            first_failed_text = existing[0]
        else:
            first_failed_text = iso(first_failed)
        from dunctl.failures import classify

        decline = asdict(inv.decline) if inv.decline else None
        failure_type = classify(inv.decline) if inv.decline else None
        lines = [{**asdict(line), "period_start": iso(line.period_start), "period_end": iso(line.period_end)}
                 for line in inv.lines or []]
        self.db.execute(
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
             inv.customer_name, inv.payment_method_id, inv.payment_method_type, _json(inv.metadata),
             _json(lines), iso(inv.created), first_failed_text, iso(inv.failed_at),
             _json(decline) if decline else None, failure_type, iso(inv.paid_at), iso(inv.voided_at),
             iso(inv.marked_uncollectible_at), None if inv.auto_advance is None else int(inv.auto_advance),
             int(inv.livemode), iso(now), inv.lines is not None])
        return existing is None

    def _record_signal(self, signal: Signal) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO signals(kind, at, invoice_id, customer_id, detail, source_id, subscription_id, "
            "payment_method_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [signal.kind, iso(signal.at), signal.invoice_id, signal.customer_id, signal.detail, signal.source_id,
             signal.subscription_id, signal.payment_method_id, _json(signal.data or {})])

    def pending_signals(self) -> list[dict]:
        """Signals stored by sync that have not yet been applied to cases, oldest first."""
        return list(self.db.query("SELECT * FROM signals WHERE applied = 0 ORDER BY at, id"))

    def mark_signals_applied(self, ids: list[int]) -> None:
        with self.db.atomic():
            for signal_id in ids:
                self.db.execute("UPDATE signals SET applied = 1 WHERE id = ?", [signal_id])

    def pending_invoices(self) -> list[dict]:
        """Invoices changed since cases were last reconciled, with their case (if any) and customer."""
        return list(self.db.query(
            """SELECT i.*, c.id AS case_id, c.state AS case_state, c.failure_type AS case_failure_type,
                      c.attempts AS case_attempts, c.with_person AS case_with_person,
                      cu.metadata AS customer_metadata
               FROM invoices i
               LEFT JOIN cases c ON c.invoice_id = i.id
               LEFT JOIN customers cu ON cu.id = i.customer_id
               WHERE i.pending = 1"""))

    def clear_pending(self, invoice_ids: list[str]) -> None:
        with self.db.atomic():
            for invoice_id in invoice_ids:
                self.db.execute("UPDATE invoices SET pending = 0 WHERE id = ?", [invoice_id])

    # -- cases -----------------------------------------------------------------------------------------------

    def open_case(self, *, invoice: dict, segment: str, sequence: str, sequence_hash: str, sequence_def: dict,
                  failure_type: str, decline_code: str | None, now: datetime) -> int:
        cursor = self.db.execute(
            """INSERT INTO cases(invoice_id, customer_id, subscription_id, currency, amount_due,
                 amount_paid_at_open, amount_remaining, segment, sequence, sequence_hash, sequence_def,
                 failure_type, first_failure_type, decline_code, attempts, first_failed_at, opened_at,
                 next_due_at, livemode)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [invoice["id"], invoice["customer_id"], invoice["subscription_id"], invoice["currency"],
             invoice["amount_due"], invoice["amount_paid"], invoice["amount_remaining"], segment, sequence,
             sequence_hash, _json(sequence_def), failure_type, failure_type, decline_code,
             invoice["attempt_count"], invoice["first_failed_at"], iso(now), invoice["first_failed_at"],
             invoice["livemode"]])
        return cursor.lastrowid

    def update_case(self, case_id: int, **fields) -> None:
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [iso(v) if isinstance(v, datetime) else v for v in fields.values()]
        self.db.execute(f"UPDATE cases SET {assignments} WHERE id = ?", [*values, case_id])

    def end_case(self, case_id: int, state: str, reason: str, at: datetime, **fields) -> None:
        """Move a case to an ended state; no further step will be planned for it."""
        assert state in ENDED_STATES, state
        self.update_case(case_id, state=state, close_reason=reason, closed_at=at, next_due_at=None,
                         next_step=None, **fields)

    def case(self, case_id: int) -> dict | None:
        return next(self.db.query("SELECT * FROM cases WHERE id = ?", [case_id]), None)

    def case_for_invoice(self, invoice_id: str) -> dict | None:
        return next(self.db.query("SELECT * FROM cases WHERE invoice_id = ?", [invoice_id]), None)

    def invoice(self, invoice_id: str) -> dict | None:
        return next(self.db.query("SELECT * FROM invoices WHERE id = ?", [invoice_id]), None)

    def customer(self, customer_id: str) -> dict | None:
        return next(self.db.query("SELECT * FROM customers WHERE id = ?", [customer_id]), None)

    def payment_method(self, pm_id: str | None) -> dict | None:
        if not pm_id:
            return None
        return next(self.db.query("SELECT * FROM payment_methods WHERE id = ?", [pm_id]), None)

    def subscription(self, sub_id: str | None) -> dict | None:
        if not sub_id:
            return None
        return next(self.db.query("SELECT * FROM subscriptions WHERE id = ?", [sub_id]), None)

    def due_case_ids(self, now: datetime) -> list[int]:
        """The one indexed query a tick with nothing to do costs."""
        return [row[0] for row in self.db.execute(
            # INDEXED BY: without statistics SQLite prefers cases_state, which scans every open case.
            "SELECT id FROM cases INDEXED BY cases_due WHERE state = 'open' AND next_due_at <= ? "
            "ORDER BY next_due_at, id",
            [iso(now)])]

    def open_cases_for_customer(self, customer_id: str) -> list[dict]:
        return list(self.db.query(
            "SELECT * FROM cases WHERE customer_id = ? AND state IN ('open', 'paused')", [customer_id]))

    def cases(self, include_ended: bool = False) -> list[dict]:
        """Cases with their customer, for `status`."""
        where = "" if include_ended else "WHERE c.state IN ('open', 'paused')"
        return list(self.db.query(
            f"""SELECT c.*, cu.name AS customer_name, cu.email AS customer_email,
                       i.number AS invoice_number, i.hosted_invoice_url
                FROM cases c
                LEFT JOIN customers cu ON cu.id = c.customer_id
                LEFT JOIN invoices i ON i.id = c.invoice_id
                {where}
                ORDER BY c.state != 'open', c.next_due_at IS NULL, c.next_due_at, c.id"""))

    def revenue_at_risk(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self.db.execute(
            "SELECT currency, sum(amount_remaining) FROM cases WHERE state IN ('open', 'paused') "
            "GROUP BY currency ORDER BY currency")}

    # -- timeline --------------------------------------------------------------------------------------------

    def add_timeline(self, case_id: int, at: datetime, kind: str, summary: str, data: dict | None = None) -> None:
        self.db.execute("INSERT INTO timeline(case_id, at, kind, summary, data) VALUES (?, ?, ?, ?, ?)",
                        [case_id, iso(at), kind, summary, _json(data) if data else None])

    def timeline(self, case_id: int) -> list[dict]:
        return list(self.db.query("SELECT at, kind, summary, data FROM timeline WHERE case_id = ? ORDER BY id",
                                  [case_id]))

    # -- actions ---------------------------------------------------------------------------------------------

    def actions(self, case_id: int) -> list[dict]:
        return list(self.db.query("SELECT * FROM actions WHERE case_id = ? ORDER BY id", [case_id]))

    def record_decision(self, case_id: int, step_id: str, action: str, status: str, due_at: datetime,
                        now: datetime, key: str, detail: str, tick_id: int | None) -> bool:
        """Record a step that was decided but not executed (skipped, missed). False if the step already has
        a row: someone else got there first."""
        cursor = self.db.execute(
            """INSERT OR IGNORE INTO actions(case_id, step_id, action, status, due_at, finished_at,
                 idempotency_key, detail, tick_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [case_id, step_id, action, status, iso(due_at), iso(now), key, detail, tick_id])
        return cursor.rowcount == 1

    def claim_action(self, case_id: int, step_id: str, action: str, channel: str | None, due_at: datetime,
                     now: datetime, key: str, tick_id: int | None) -> int | None:
        """Claim a step before any effect. Returns the action id, or None when the step is already claimed or
        done. A failed action (status 'failed') is re-claimed for another try."""
        with self.db.atomic():
            cursor = self.db.execute(
                """INSERT OR IGNORE INTO actions(case_id, step_id, action, channel, status, due_at, claimed_at,
                     tries, idempotency_key, tick_id) VALUES (?, ?, ?, ?, 'claimed', ?, ?, 1, ?, ?)""",
                [case_id, step_id, action, channel, iso(due_at), iso(now), key, tick_id])
            if cursor.rowcount == 1:
                return cursor.lastrowid
            cursor = self.db.execute(
                """UPDATE actions SET status = 'claimed', claimed_at = ?, tries = tries + 1, tick_id = ?
                   WHERE case_id = ? AND step_id = ? AND status = 'failed'""",
                [iso(now), tick_id, case_id, step_id])
            if cursor.rowcount == 1:
                return self.db.execute("SELECT id FROM actions WHERE case_id = ? AND step_id = ?",
                                       [case_id, step_id]).fetchone()[0]
        return None

    def record_result(self, action_id: int, status: str, now: datetime, detail: str | None = None,
                      error: str | None = None, recipient: str | None = None,
                      request_id: str | None = None) -> None:
        self.db.execute(
            """UPDATE actions SET status = ?, finished_at = ?, detail = coalesce(?, detail), error = ?,
                 recipient = coalesce(?, recipient), request_id = coalesce(?, request_id) WHERE id = ?""",
            [status, iso(now), detail, error, recipient, request_id, action_id])

    def actions_with_status(self, status: str) -> list[dict]:
        return list(self.db.query(
            """SELECT a.*, c.invoice_id FROM actions a JOIN cases c ON c.id = a.case_id
               WHERE a.status = ? ORDER BY a.id""", [status]))

    def orphaned_claims(self) -> list[dict]:
        """Actions claimed by a tick that never recorded a result (it crashed between claim and effect)."""
        return list(self.db.query("SELECT * FROM actions WHERE status = 'claimed'"))

    # -- ticks -----------------------------------------------------------------------------------------------

    def start_tick(self, now: datetime, dry_run: bool) -> int:
        return self.db.execute("INSERT INTO ticks(now, pid, dry_run) VALUES (?, ?, ?)",
                               [iso(now), os.getpid(), int(dry_run)]).lastrowid

    def finish_tick(self, tick_id: int, opened: int, closed: int, actions: int, failed: int) -> None:
        self.db.execute("UPDATE ticks SET finished = 1, opened = ?, closed = ?, actions = ?, failed = ? "
                        "WHERE id = ?", [opened, closed, actions, failed, tick_id])
