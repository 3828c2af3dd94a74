# Over 500 lines: the one Ledger class still holds every query; the facade-plus-stores split (ledger/file.py, stores, views/) is issue #22.
"""The ledger: every row dunctl keeps, behind intent-named methods. All SQL lives here (and in report queries).

SQLite in WAL mode, schema only through numbered migrations (sqlite-utils' migrations, applied on open), file
mode 0600 because it holds customer emails. The hot path talks to `sqlite3` directly, in autocommit mode with
explicit transactions: sqlite-utils wraps every query in a savepoint (three statements for one read) and costs a
cron tick 40 ms to import, so it loads only to migrate, and for callers that want its API (`Ledger.db`).
Times are UTC text ('2026-11-03T09:00:00Z'); money is integer minor units.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import sqlite3

from dunctl.clock import from_iso, iso
from dunctl.errors import LockHeld, StaleLedger
from dunctl.ledger.journal import JOURNALS
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the typed records load with the first row that needs one: an idle tick builds none (25 ms)
    from dunctl.effect import Journal
    from dunctl.ledger.records import CaseBundle, CaseRecord, CustomerRecord, InvoiceRecord, SignalRecord, \
        SubscriptionRecord
    from dunctl.model import Customer, Invoice, PaymentMethod, Signal, Subscription, SyncBatch

OPEN_STATES = ("open", "paused")
IN_LIST_SIZE = 500   # values per IN list: well within SQLite's limit on a statement's parameters
ENDED_STATES = ("recovered", "exhausted", "written_off", "voided", "closed")


# The migrations this dunctl ships, in order; dunctl/ledger/migrations.py registers them and refuses to load if
# the two lists differ. Opening a ledger compares its applied names with these: sqlite-utils loads only when a
# migration is pending.
SCHEMA = ("m001_initial", "m002_report_index", "m003_tick_core", "m101_stripe_signal_fields", "m103_experiments",
          "m102_report_rollups", "m104_notices", "m105_i20_adopt_ledger_id",
          "m106_i20_endings_follow_ups", "m107_i25_perf_invoices_by_subscription",
          "m108_i20_interrupts_started", "m109_i21_cards",
          "m110_i2x_msgs_b_sms_optouts")
MIGRATIONS_TABLE = "_sqlite_migrations"


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """The names of the migrations applied to this ledger, oldest first (none for a new file)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [MIGRATIONS_TABLE]).fetchone():
        return [row[0] for row in conn.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = 'dunctl' ORDER BY rowid")]
    return []


def connect(target: str | Path, **options) -> sqlite3.Connection:
    """A connection in autocommit mode: a statement outside `Ledger.transaction()` commits on its own, one
    inside it commits with the transaction."""
    return sqlite3.connect(target, isolation_level=None, **options)


@functools.lru_cache(maxsize=1)   # a process never outlives the boot it started in: read once, not every tick
def boot_id() -> str | None:
    """This boot of the machine (Linux), to tell a process that died from a machine that restarted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class Ledger:
    def __init__(self, conn: sqlite3.Connection, path: Path | None = None, file_fd: int | None = None):
        self.conn = conn
        self.path = path
        # One descriptor on the ledger file, open as long as the connection: the tick and migration locks are
        # flock()s on it. Closing any other descriptor on the file would drop SQLite's own POSIX locks held by
        # this process, and another process closing its connection could then delete the write-ahead log under
        # this one ("disk I/O error").
        self._file_fd = file_fd
        self._locked = False
        self._depth = 0
        self._db = None
        self._sequences: dict[str, str] = {}   # hash -> definition: a stored version never changes
        self._light = False                    # light_transaction may skip the fsync (a tick knows its boot id)
        self._relaxed = False                  # synchronous=NORMAL since the last light_transaction
        self.durable = True                    # False: rebuilt by re-running (a simulation); no commit waits on disk

    @property
    def db(self):
        """The same connection through sqlite-utils' API (tests, ad-hoc queries); loaded on first use."""
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn)
        return self._db

    def rows(self, sql: str, params=()) -> Iterator[dict]:
        """The rows of one query as dicts, column name to value."""
        cursor = self.conn.execute(sql, params)
        keys = [column[0] for column in cursor.description]
        return (dict(zip(keys, row)) for row in cursor)

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Ledger:
        """Open and migrate the ledger at `path`, creating it (mode 0600, with its schema) when `create` is true
        and it does not exist. A file this user cannot use, a damaged file or one written by a newer dunctl is
        refused (UsageError) before anything is written to it."""
        from dunctl import preflight

        path = Path(path)
        problem = preflight.ledger_file_problem(path, must_exist=not create)
        if problem:
            raise problem
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        file_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        conn = None
        try:
            conn = connect(path)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA foreign_keys = ON")
            applied = applied_migrations(conn)
            unknown = [name for name in applied if name not in SCHEMA]
            if unknown:
                raise preflight.newer_ledger_error(path, unknown)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = wal")
            if len(applied) != len(SCHEMA):
                cls._migrate(conn, path, file_fd)
        except BaseException as exc:
            if conn is not None:
                conn.close()
            os.close(file_fd)   # only after the connection: see __init__
            if not isinstance(exc, sqlite3.Error):
                raise
            if created:  # a half-made ledger would later be taken for a real one
                path.unlink(missing_ok=True)
            raise preflight.sqlite_error(exc, path) from None
        return cls(conn, path, file_fd)

    @staticmethod
    def _migrate(conn: sqlite3.Connection, path: Path, file_fd: int) -> None:
        """Apply pending migrations under the ledger's lock: of processes racing on a new or upgraded ledger,
        one migrates and the others exit 3 (LockHeld) instead of crashing halfway through a schema change."""
        from sqlite_utils import Database

        from dunctl.ledger.migrations import migrations

        try:
            fcntl.flock(file_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another dunctl is using {path} while its schema needs setting up or upgrading",
                           "nothing was done; run the command again in a moment") from None
        try:
            migrations.apply(Database(conn))
        finally:
            fcntl.flock(file_fd, fcntl.LOCK_UN)

    @classmethod
    def open_existing(cls, path: str | Path) -> Ledger:
        """Open a ledger that must already exist and hold its schema (tick, sync, status, report, case): a
        missing or zero-byte ledger is refused, never silently replaced by an empty one."""
        return cls.open(path, create=False)

    @classmethod
    def in_memory(cls) -> Ledger:
        """An empty ledger in memory (a dry run before the first tick creates no file)."""
        from sqlite_utils import Database

        from dunctl.ledger.migrations import migrations

        conn = connect(":memory:")
        migrations.apply(Database(conn))
        return cls(conn)

    def snapshot_in_memory(self) -> Ledger:
        """A consistent copy of this ledger in memory (SQLite's backup API): a dry run works on it, so it never
        writes the file nor holds a write transaction that would block the cron tick."""
        conn = connect(":memory:")
        self.conn.backup(conn)
        return Ledger(conn)

    def close(self) -> None:
        self.release_tick_lock()
        self.conn.close()
        if self._file_fd is not None:
            os.close(self._file_fd)
            self._file_fd = None

    # -- the tick lock ---------------------------------------------------------------------------------------

    def acquire_tick_lock(self) -> None:
        """Take the ledger's tick lock or raise LockHeld. The lock is the kernel's, on the ledger file itself:
        a tick that crashes releases it with its process."""
        if self._file_fd is None:
            return
        try:
            fcntl.flock(self._file_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another dunctl tick is running on {self.path}",
                           "this tick did nothing; the next cron run will pick up whatever is due") from None
        self._locked = True

    def release_tick_lock(self) -> None:
        if self._locked:
            fcntl.flock(self._file_fd, fcntl.LOCK_UN)
            self._locked = False

    @contextmanager
    def tick_lock(self) -> Iterator[None]:
        self.acquire_tick_lock()
        try:
            yield
        finally:
            self.release_tick_lock()

    # -- sync ------------------------------------------------------------------------------------------------

    def get_state(self, name: str, default=None):
        row = self.conn.execute("SELECT value FROM sync_state WHERE name = ?", [name]).fetchone()
        return json.loads(row[0]) if row else default

    def set_state(self, name: str, value) -> None:
        self.conn.execute("INSERT INTO sync_state(name, value) VALUES (?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [name, _json(value)])

    def apply_batch(self, batch: SyncBatch, now: datetime, cursor_name: str = "cursor",
                    accept_stale: bool = False) -> int:
        """Store one sync batch and its cursor atomically. Returns how many invoices were new. Refuses (StaleLedger)
        a batch showing dunctl's own requests this ledger has no record of, unless `accept_stale`."""
        if batch.dunctl_keys and not accept_stale:
            unknown = self.unknown_keys(batch.dunctl_keys)
            if unknown:
                raise StaleLedger(
                    f"the ledger {self.path} is older than the Stripe account: Stripe shows {len(unknown)} request(s) "
                    f"dunctl made that this ledger has no record of (e.g. {unknown[0]}); using it would repeat "
                    "messages and steps already done",
                    "restore the newest backup; or, to adopt this ledger knowingly, run once with "
                    "--accept-stale-ledger (steps in the catch-up window may run again)")
        with self.transaction():
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
            [c.id, c.name, c.email, c.phone, _json(c.metadata), c.preferred_locale, c.timezone, int(c.livemode),
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
        self.conn.execute(
            """INSERT INTO subscriptions(id, customer_id, status, metadata, usage_based, pause_behavior,
                                         canceled_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status,
                 metadata = excluded.metadata, usage_based = excluded.usage_based,
                 pause_behavior = excluded.pause_behavior, canceled_at = excluded.canceled_at""",
            [s.id, s.customer_id, s.status, _json(s.metadata), int(s.usage_based), s.pause_behavior,
             iso(s.canceled_at)])

    def _upsert_invoice(self, inv: Invoice, now: datetime) -> bool:
        existing = self.conn.execute("SELECT first_failed_at FROM invoices WHERE id = ?", [inv.id]).fetchone()
        # The first failure never moves later: an event that arrives out of order cannot rewrite history.
        first_failed = inv.first_failed_at or inv.failed_at
        if existing and existing[0] and (first_failed is None or existing[0] < iso(first_failed)):
            first_failed_text = existing[0]
        else:
            first_failed_text = iso(first_failed)
        from dunctl.failures import classify

        decline = asdict(inv.decline) if inv.decline else None
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
             inv.customer_name, inv.payment_method_id, inv.payment_method_type, _json(inv.metadata),
             _json(lines), iso(inv.created), first_failed_text, iso(inv.failed_at),
             _json(decline) if decline else None, failure_type, iso(inv.paid_at), iso(inv.voided_at),
             iso(inv.marked_uncollectible_at), None if inv.auto_advance is None else int(inv.auto_advance),
             int(inv.livemode), iso(now), inv.lines is not None])
        return existing is None

    def _record_signal(self, signal: Signal) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO signals(kind, at, invoice_id, customer_id, detail, source_id, subscription_id, "
            "payment_method_id, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [signal.kind, iso(signal.at), signal.invoice_id, signal.customer_id, signal.detail, signal.source_id,
             signal.subscription_id, signal.payment_method_id, _json(signal.data or {})])

    def pending_signals(self) -> list[SignalRecord]:
        """Signals stored by sync that have not yet been applied to cases, oldest first."""
        rows = list(self.rows("SELECT * FROM signals WHERE applied = 0 ORDER BY at, id"))
        if not rows:
            return []
        from dunctl.ledger.records import SignalRecord

        return [SignalRecord.from_row(row) for row in rows]

    def mark_signal_applied(self, signal_id: int) -> None:
        self.conn.execute("UPDATE signals SET applied = 1 WHERE id = ?", [signal_id])

    def pending_invoices(self) -> list[tuple[InvoiceRecord, int | None]]:
        """Invoices changed since cases were last reconciled, each with its case id (None: no case yet)."""
        rows = list(self.rows("""SELECT i.*, c.id AS case_id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id
                                 WHERE i.pending = 1"""))
        if not rows:
            return []
        from dunctl.ledger.records import InvoiceRecord

        return [(InvoiceRecord.from_row(row), row["case_id"]) for row in rows]

    def pending_noted_invoices(self, key: str) -> list[tuple[str, dict, int | None]]:
        """Of the open invoices changed since cases were last reconciled, those whose metadata has `key` (the note
        dunctl leaves on invoices, dunctl/adoption.py): (invoice id, metadata, case id or None)."""
        return [(row[0], json.loads(row[1] or "{}"), row[2]) for row in self.conn.execute(
            """SELECT i.id, i.metadata, c.id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id
               WHERE i.pending = 1 AND i.status = 'open' AND json_extract(i.metadata, '$.' || ?) IS NOT NULL""",
            [key])]

    def clear_pending(self, invoice_id: str) -> None:
        self.conn.execute("UPDATE invoices SET pending = 0 WHERE id = ?", [invoice_id])

    # -- transactions ----------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, started IMMEDIATE so a concurrent writer waits at BEGIN (busy_timeout) instead
        of failing halfway. Nested calls become savepoints of the outer transaction. Its commit is durable (and
        makes the light commits before it durable too: they are earlier in the same write-ahead log)."""
        if self._relaxed and not self.conn.in_transaction:
            self.conn.execute("PRAGMA synchronous = FULL")
            self._relaxed = False
        with self._begin():
            yield

    @contextmanager
    def _begin(self) -> Iterator[None]:
        conn = self.conn
        if conn.in_transaction:
            name = f"sp{id(conn)}_{self._depth}"
            self._depth += 1
            conn.execute(f"SAVEPOINT {name}")
            try:
                yield
            except BaseException:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
                raise
            finally:
                self._depth -= 1
            conn.execute(f"RELEASE {name}")
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    @contextmanager
    def light_transaction(self) -> Iterator[None]:
        """A transaction whose commit survives the process dying (kill -9, out of memory) but perhaps not the
        machine losing power: in WAL mode with synchronous=NORMAL the commit reaches the OS without waiting for
        the disk (measured: 0.01 ms of CPU, against 0.2 ms of CPU and 4 ms of waiting for an fsync); the next
        ordinary commit makes it durable too.
        Light only inside a tick that recorded the machine's boot id (`start_tick`): after a reboot,
        `settles_by_started` tells the next tick not to trust what such commits said. Otherwise an ordinary one."""
        if self._light and self.durable and not self._relaxed and not self.conn.in_transaction:
            self.conn.execute("PRAGMA synchronous = NORMAL")   # until the next ordinary transaction
            self._relaxed = True
        with self._begin():
            yield

    # -- cases -----------------------------------------------------------------------------------------------

    def open_case(self, *, invoice: InvoiceRecord, segment: str, sequence: str, sequence_hash: str,
                  sequence_def: dict, failure_type: str, decline_code: str | None, now: datetime) -> int:
        self.conn.execute("INSERT OR IGNORE INTO sequence_versions(hash, name, definition) VALUES (?, ?, ?)",
                        [sequence_hash, sequence, _json(sequence_def)])
        cursor = self.conn.execute(
            """INSERT INTO cases(invoice_id, customer_id, subscription_id, currency, amount_due,
                 amount_paid_at_open, amount_remaining, segment, sequence, sequence_hash, sequence_def,
                 failure_type, first_failure_type, decline_code, attempts, first_failed_at, opened_at,
                 next_due_at, livemode)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?)""",
            [invoice.id, invoice.customer_id, invoice.subscription_id, invoice.currency,
             invoice.amount_due, invoice.amount_paid, invoice.amount_remaining, segment, sequence,
             sequence_hash, failure_type, failure_type, decline_code,
             invoice.attempt_count, iso(invoice.first_failed_at), iso(now), iso(invoice.first_failed_at),
             invoice.livemode])
        return cursor.lastrowid

    def sequence_definition(self, sequence_hash: str) -> dict:
        """The sequence as it was when a case opened (stored once per version, read once per ledger object)."""
        if sequence_hash in self._sequences:
            return json.loads(self._sequences[sequence_hash])   # a fresh copy: callers may change theirs
        row = self.conn.execute("SELECT definition FROM sequence_versions WHERE hash = ?", [sequence_hash]).fetchone()
        if row is None:  # a case written by hand (benchmarks, older tools) still carries its own copy
            row = self.conn.execute("SELECT sequence_def FROM cases WHERE sequence_hash = ? AND sequence_def != '' "
                                  "LIMIT 1", [sequence_hash]).fetchone()
        if row is None:
            raise LookupError(f"sequence version {sequence_hash} is not in the ledger")
        self._sequences[sequence_hash] = row[0]
        return json.loads(row[0])

    def _set(self, case_id: int, **fields) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [iso(v) if isinstance(v, datetime) else v for v in fields.values()]
        self.conn.execute(f"UPDATE cases SET {assignments} WHERE id = ?", [*values, case_id])

    def follow_invoice(self, case_id: int, *, amount_remaining: int, attempts: int) -> None:
        """What the invoice says now: the amount still owed and the attempts so far."""
        self._set(case_id, amount_remaining=amount_remaining, attempts=attempts)

    def reclassify(self, case_id: int, failure_type: str, decline_code: str | None) -> None:
        self._set(case_id, failure_type=failure_type, decline_code=decline_code)
        # The invoice says the same from now on: a later copy of it with no new decline (a metadata change, such
        # as dunctl's own note) must not turn the case back to what the older decline said (an inactive mandate).
        self.conn.execute("UPDATE invoices SET failure_type = ? WHERE id = (SELECT invoice_id FROM cases WHERE id = ?)",
                          [failure_type, case_id])

    def record_attempt(self, case_id: int, attempts: int, decline_code: str | None = None) -> None:
        if decline_code is None:
            self._set(case_id, attempts=attempts)
        else:
            self._set(case_id, attempts=attempts, decline_code=decline_code)

    def note_payment_method_change(self, case_id: int, at: datetime, payment_method_id: str | None = None) -> None:
        self._set(case_id, payment_method_changed_at=at, payment_method_changed_to=payment_method_id)

    def hand_to_person(self, case_id: int, at: datetime, disputed: bool = False) -> None:
        """A person holds the case: escalated (it stays open) or disputed (it is paused, dunning stops)."""
        if disputed:
            self._set(case_id, failure_type="dispute", with_person=1, disputed_at=at, state="paused",
                      next_due_at=None, next_step=None)
        else:
            self._set(case_id, with_person=1, escalated_at=at)

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

    def hold_case(self, case_id: int, because: str | None = None) -> None:
        """The subscription is paused or set to cancel outside dunctl: no step runs until it resumes."""
        self._set(case_id, state="paused", next_due_at=None, next_step=None, held_because=because)

    def pause_case(self, case_id: int) -> None:
        self._set(case_id, state="paused", with_person=1, next_due_at=None, next_step=None)

    def resume_case(self, case_id: int) -> None:
        self._set(case_id, state="open", with_person=0, held_because=None)

    def unhold_case(self, case_id: int) -> None:
        self._set(case_id, state="open", held_because=None)

    def mark_churned(self, case_id: int) -> None:
        self._set(case_id, churned=1)

    def end_case(self, case_id: int, state: str, reason: str, at: datetime, **fields) -> None:
        """Move a case to an ended state; no further step will be planned for it."""
        assert state in ENDED_STATES, state
        self._set(case_id, state=state, close_reason=reason, closed_at=at, next_due_at=None, next_step=None,
                  **fields)

    def schedule(self, case_id: int, next_due_at: datetime | None, next_step: str | None) -> None:
        """When the case is next due: the one indexed column an idle tick reads."""
        self._set(case_id, next_due_at=next_due_at, next_step=next_step)

    def set_last_actions(self, actions: Iterable[tuple[int, str]], at: datetime) -> None:
        """(case id, text) for several cases at once, all at `at`."""
        self.conn.executemany("UPDATE cases SET last_action = ?, last_action_at = ? WHERE id = ?",
                              [(text, iso(at), case_id) for case_id, text in actions])

    def case(self, case_id: int) -> dict | None:
        return next(self.rows("SELECT * FROM cases WHERE id = ?", [case_id]), None)

    def cases_in_message(self, message_ref: str) -> list[dict]:
        """The cases one grouped message covered (their actions share its message_ref)."""
        return list(self.rows("SELECT DISTINCT c.* FROM cases c JOIN actions a ON a.case_id = c.id "
                              "WHERE a.message_ref = ? ORDER BY c.first_failed_at, c.invoice_id", [message_ref]))

    def case_for_invoice(self, invoice_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM cases WHERE invoice_id = ?", [invoice_id]), None)

    def invoice(self, invoice_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM invoices WHERE id = ?", [invoice_id]), None)

    def customer(self, customer_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM customers WHERE id = ?", [customer_id]), None)

    def opt_out(self, customer_id: str, channel: str, at: datetime, source: str) -> bool:
        """Record that the customer asked for no more messages on `channel` (an SMS STOP); False if already."""
        with self.transaction():
            cursor = self.conn.execute("INSERT OR IGNORE INTO optouts(customer_id, channel, at, source) "
                                       "VALUES (?, ?, ?, ?)", [customer_id, channel, iso(at), source])
        return cursor.rowcount > 0

    def opted_out(self, customer_id: str, channel: str) -> bool:
        return next(self.rows("SELECT 1 FROM optouts WHERE customer_id = ? AND channel = ?",
                              [customer_id, channel]), None) is not None

    def payment_method(self, pm_id: str | None) -> dict | None:
        if not pm_id:
            return None
        return next(self.rows("SELECT * FROM payment_methods WHERE id = ?", [pm_id]), None)

    def subscription(self, sub_id: str | None) -> dict | None:
        if not sub_id:
            return None
        return next(self.rows("SELECT * FROM subscriptions WHERE id = ?", [sub_id]), None)

    def invoice_record(self, invoice_id: str) -> InvoiceRecord | None:
        from dunctl.ledger.records import InvoiceRecord

        return InvoiceRecord.from_row(self.invoice(invoice_id))

    def case_record(self, case_id: int) -> CaseRecord | None:
        from dunctl.ledger.records import CaseRecord

        return CaseRecord.from_row(self.case(case_id))

    def bundle(self, case_id: int, contacts_since: datetime | None = None,
               contact_statuses: tuple[str, ...] = ("done",)) -> CaseBundle | None:
        """One case with its invoice, customer, subscription and actions, read once (and, for the contact
        policy, when the customer was last sent a message)."""
        return self.bundles([case_id], contacts_since, contact_statuses).get(case_id)

    def refreshed(self, bundle: CaseBundle, contacts_since: datetime | None = None,
                  contact_statuses: tuple[str, ...] = ("done",)) -> CaseBundle | None:
        """`bundle` after its case's effects ran (see `bundles`' `planned`)."""
        return self.bundles([bundle.case.id], contacts_since, contact_statuses,
                            planned={bundle.case.id: bundle}).get(bundle.case.id)

    def bundles(self, case_ids: Iterable[int], contacts_since: datetime | None = None,
                contact_statuses: tuple[str, ...] = ("done",), planned: Mapping[int, CaseBundle] | None = None
                ) -> dict[int, CaseBundle]:
        """Cases with their invoices, customers, subscriptions and actions (and, for the contact policy, when each
        customer was last sent a message), with one query per table for all of them: a tick reads a batch's
        cases at once, not one by one.

        `planned`: cases loaded earlier in this tick, before their effects ran. Of those only what a tick's
        effects write is read again: the case, its actions, its invoice (rebuilt only when the row changed) and
        the customer's recent messages. Their customer and subscription records are kept: only a sync changes
        them, and none runs between planning a batch and scheduling it."""
        from dunctl.ledger.records import (
            ActionRecord,
            CaseBundle,
            CaseRecord,
            CustomerRecord,
            InvoiceRecord,
            SubscriptionRecord,
        )

        planned = planned or {}
        cases = [CaseRecord.from_row(row) for row in self._rows_in("SELECT * FROM cases WHERE id IN ({})",
                                                                    case_ids)]
        if not cases:
            return {}
        invoices = {row["id"]: row for row in self._rows_in("SELECT * FROM invoices WHERE id IN ({})",
                                                             [c.invoice_id for c in cases])}
        unplanned = [c for c in cases if c.id not in planned]
        customers = {row["id"]: CustomerRecord.from_row(row) for row in self._rows_in(
            "SELECT * FROM customers WHERE id IN ({})", [c.customer_id for c in unplanned])}
        subscriptions = {row["id"]: SubscriptionRecord.from_row(row) for row in self._rows_in(
            "SELECT * FROM subscriptions WHERE id IN ({})", [c.subscription_id for c in unplanned])}
        actions: dict[int, list[ActionRecord]] = {c.id: [] for c in cases}
        for row in self._rows_in("SELECT * FROM actions WHERE case_id IN ({}) ORDER BY id", actions):
            actions[row["case_id"]].append(ActionRecord.from_row(row))
        contacts = {} if contacts_since is None else self.contacts_of(
            [c.customer_id for c in cases], contacts_since, contact_statuses)
        found = {}
        for case in cases:
            row, before = invoices.get(case.invoice_id), planned.get(case.id)
            if before is None:
                invoice = InvoiceRecord.from_row(row)
                customer, subscription = customers.get(case.customer_id), subscriptions.get(case.subscription_id)
            else:
                invoice = before.invoice if before.invoice is not None and row == before.invoice.row \
                    else InvoiceRecord.from_row(row)
                customer, subscription = before.customer, before.subscription
            found[case.id] = CaseBundle(case=case, invoice=invoice, customer=customer, subscription=subscription,
                                        actions=actions[case.id], contacts=tuple(contacts.get(case.customer_id, ())))
        return found

    def case_states(self, case_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """case id -> (the case's state, its invoice's status) as stored now, for several cases in one query: what
        the executor re-reads when it claims a batch (an earlier batch, or another process, may have ended or
        paused a case since it was planned)."""
        return {case_id: (state, status) for case_id, state, status in self._pairs(
            "SELECT c.id, c.state, i.status FROM cases c JOIN invoices i ON i.id = c.invoice_id "
            "WHERE c.id IN ({})", case_ids)}

    def _in(self, sql: str, values: Iterable, params: list | tuple = ()) -> Iterator[sqlite3.Cursor]:
        """`sql`, whose `{}` is an IN list, run for every distinct value (None left out) in pieces within SQLite's
        limit on parameters; `params` follow the list."""
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        for start in range(0, len(distinct), IN_LIST_SIZE):
            piece = distinct[start:start + IN_LIST_SIZE]
            yield self.conn.execute(sql.format(", ".join("?" * len(piece))), [*piece, *params])

    def _pairs(self, sql: str, values: Iterable, params: list | tuple = ()) -> Iterator[tuple]:
        """`_in`'s rows as tuples."""
        for cursor in self._in(sql, values, params):
            yield from cursor

    def _rows_in(self, sql: str, values: Iterable) -> list[dict]:
        """`_in`'s rows as dicts, column name to value."""
        rows = []
        for cursor in self._in(sql, values):
            keys = [column[0] for column in cursor.description]
            rows += [dict(zip(keys, row)) for row in cursor.fetchall()]
        return rows

    def customer_contacts(self, customer_id: str, since: datetime, statuses: tuple[str, ...] = ("done",)
                          ) -> list[datetime]:
        """When the customer was sent a message (across all its cases) since `since`: one entry per delivery,
        however many cases' steps it covered."""
        return self.contacts_of([customer_id], since, statuses).get(customer_id, [])

    def contacts_of(self, customer_ids: Iterable[str], since: datetime, statuses: tuple[str, ...] = ("done",)
                    ) -> dict[str, list[datetime]]:
        """`customer_contacts` for several customers at once: customer id -> times, oldest first (customers sent
        nothing are left out)."""
        marks = ", ".join("?" * len(statuses))
        sent: dict[str, list[datetime]] = {}
        for customer_id, at in self._pairs(
                f"""SELECT c.customer_id, min(a.finished_at) FROM actions a JOIN cases c ON c.id = a.case_id
                    WHERE c.customer_id IN ({{}}) AND a.audience = 'customer' AND a.status IN ({marks})
                      AND a.finished_at >= ?
                    GROUP BY c.customer_id, coalesce(a.message_ref, a.id)""", customer_ids, [*statuses, iso(since)]):
            sent.setdefault(customer_id, []).append(from_iso(at))
        # Pre-dunning notices count toward the same contact policy (in monitor mode their `would` too, as steps')
        for customer_id, at in self._pairs(
                f"SELECT customer_id, finished_at FROM notices WHERE customer_id IN ({{}}) AND status IN ({marks}) "
                "AND finished_at >= ?", customer_ids, [*statuses, iso(since)]):
            sent.setdefault(customer_id, []).append(from_iso(at))
        for times in sent.values():
            times.sort()
        return sent

    def customer_bundle(self, invoice: InvoiceRecord) -> tuple[CustomerRecord | None, SubscriptionRecord | None]:
        from dunctl.ledger.records import CustomerRecord, SubscriptionRecord

        return (CustomerRecord.from_row(self.customer(invoice.customer_id)),
                SubscriptionRecord.from_row(self.subscription(invoice.subscription_id)))

    def due_case_ids(self, now: datetime) -> list[int]:
        """The one indexed query a tick with nothing to do costs."""
        return [row[0] for row in self.conn.execute(
            # INDEXED BY: without statistics SQLite prefers cases_state, which scans every open case.
            "SELECT id FROM cases INDEXED BY cases_due WHERE state = 'open' AND next_due_at <= ? "
            "ORDER BY next_due_at, id",
            [iso(now)])]

    def due_cases_by_customer(self, now: datetime) -> list[tuple[int, str]]:
        """(case id, customer id) of the cases due now, one customer's together (for one conversation each)."""
        return [(row[0], row[1]) for row in self.conn.execute(
            "SELECT id, customer_id FROM cases INDEXED BY cases_due WHERE state = 'open' AND next_due_at <= ? "
            "ORDER BY customer_id, next_due_at, id", [iso(now)])]

    def case_ids_for_subscription(self, subscription_id: str, states: tuple[str, ...] = ("open", "paused")
                                  ) -> list[int]:
        marks = ", ".join("?" for _ in states)
        return [row[0] for row in self.conn.execute(
            f"SELECT id FROM cases WHERE subscription_id = ? AND state IN ({marks})", [subscription_id, *states])]

    def open_case_ids(self) -> list[int]:
        return [row[0] for row in self.conn.execute("SELECT id FROM cases WHERE state = 'open'")]

    def open_case_ids_for_customer(self, customer_id: str) -> list[int]:
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM cases WHERE customer_id = ? AND state IN ('open', 'paused')", [customer_id])]

    def cases(self, include_ended: bool = False) -> list[dict]:
        """Cases with their customer, for `status`."""
        where = "" if include_ended else "WHERE c.state IN ('open', 'paused')"
        return list(self.rows(
            f"""SELECT c.*, cu.name AS customer_name, cu.email AS customer_email,
                       i.number AS invoice_number, i.hosted_invoice_url
                FROM cases c
                LEFT JOIN customers cu ON cu.id = c.customer_id
                LEFT JOIN invoices i ON i.id = c.invoice_id
                {where}
                ORDER BY c.state != 'open', c.next_due_at IS NULL, c.next_due_at, c.id"""))

    def revenue_at_risk(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self.conn.execute(
            "SELECT currency, sum(amount_remaining) FROM cases WHERE state IN ('open', 'paused') "
            "GROUP BY currency ORDER BY currency")}

    # -- timeline --------------------------------------------------------------------------------------------

    def add_timeline(self, case_id: int, at: datetime, kind: str, summary: str, data: dict | None = None) -> None:
        self.conn.execute("INSERT INTO timeline(case_id, at, kind, summary, data) VALUES (?, ?, ?, ?, ?)",
                        [case_id, iso(at), kind, summary, _json(data) if data else None])

    def timeline(self, case_id: int) -> list[dict]:
        return list(self.rows("SELECT at, kind, summary, data FROM timeline WHERE case_id = ? ORDER BY id",
                                  [case_id]))

    # -- actions ---------------------------------------------------------------------------------------------

    def journal(self, name: str) -> Journal:
        """Where the executor claims and records one family of effects: `actions` (a case's steps and dunctl's
        own effects) or `notices` (pre-dunning), both in dunctl/ledger/journal.py."""
        return JOURNALS[name](self)

    def actions(self, case_id: int) -> list[dict]:
        return list(self.rows("SELECT * FROM actions WHERE case_id = ? ORDER BY id", [case_id]))

    def record_decision(self, case_id: int, kind: str, step_id: str, action: str, status: str, due_at: datetime,
                        now: datetime, key: str, detail: str, tick_id: int | None,
                        audience: str | None = None) -> bool:
        """Record a step that was decided but not executed (skipped, missed). False if the step already has
        a finished row: someone else got there first."""
        cursor = self.conn.execute(
            """INSERT INTO actions(case_id, kind, step_id, action, audience, status, due_at, finished_at,
                 idempotency_key, detail, tick_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT(case_id, kind, step_id) DO UPDATE SET status = excluded.status,
                 finished_at = excluded.finished_at, detail = excluded.detail, tick_id = excluded.tick_id
               WHERE actions.status = 'would'""",
            [case_id, kind, step_id, action, audience, status, iso(due_at), iso(now), key, detail, tick_id])
        return cursor.rowcount == 1

    def record_done_elsewhere(self, case_id: int, step_id: str, action: str, audience: str | None,
                              due_at: datetime, finished_at: datetime, key: str, detail: str) -> bool:
        """A step Stripe's invoice shows was done by another ledger, or by this one before it was restored from an
        older copy (dunctl/adoption.py): done at `finished_at`, never run again. False when the step was done
        here already, or is claimed by a running effect."""
        cursor = self.conn.execute(
            """INSERT INTO actions(case_id, kind, step_id, action, audience, status, due_at, finished_at,
                 idempotency_key, detail) VALUES (?, 'step', ?, ?, ?, 'done', ?, ?, ?, ?)
               ON CONFLICT(case_id, kind, step_id) DO UPDATE SET status = 'done', prior_status = NULL,
                 finished_at = excluded.finished_at, detail = excluded.detail, error = NULL
               WHERE actions.status NOT IN ('done', 'claimed')""",
            [case_id, step_id, action, audience, iso(due_at), iso(finished_at), key, detail])
        return cursor.rowcount == 1

    def defer_action(self, case_id: int, kind: str, step_id: str, action: str, channel: str | None,
                     audience: str | None, due_at: datetime, key: str) -> bool:
        """An effect of an ended case that must wait (a thank-you inside quiet hours): `waiting` until `due_at`,
        when `due_follow_ups` finds it. False when it already has a row."""
        cursor = self.conn.execute(
            """INSERT OR IGNORE INTO actions(case_id, kind, step_id, action, channel, audience, status, due_at,
                 idempotency_key) VALUES (?, ?, ?, ?, ?, ?, 'waiting', ?, ?)""",
            [case_id, kind, step_id, action, channel, audience, iso(due_at), key])
        return cursor.rowcount == 1

    def due_follow_ups(self, now: datetime, failed_before: datetime, max_tries: int) -> list[int]:
        """Ended cases with a follow-up due again (dunctl/tick/endings.py): one waiting until now, or a system
        effect that failed, with tries left, last tried before `failed_before`. Both read partial indexes."""
        return [row[0] for row in self.conn.execute(
            """SELECT a.case_id FROM actions a INDEXED BY actions_waiting
                 WHERE a.status = 'waiting' AND a.due_at <= ?
               UNION
               SELECT a.case_id FROM actions a INDEXED BY actions_attention JOIN cases c ON c.id = a.case_id
                 WHERE a.status IN ('failed', 'claimed', 'unknown') AND a.status = 'failed' AND a.kind = 'system'
                   AND a.tries < ? AND a.finished_at <= ?
                   AND c.state = 'recovered' AND (a.step_id = 'recovered' OR a.step_id LIKE 'lift-%')""",
            [iso(now), max_tries, iso(failed_before)])]

    def resolve_unknown(self, action_id: int, *, sent: bool, note: str, now: datetime) -> None:
        """A person settles an `unknown` action: it was sent (done), or it runs once more under a new key."""
        if sent:
            self.conn.execute("UPDATE actions SET status = 'done', finished_at = ?, error = NULL, detail = ? "
                            "WHERE id = ? AND status = 'unknown'", [iso(now), note, action_id])
        else:
            self.conn.execute("UPDATE actions SET status = 'resend', resends = resends + 1, finished_at = ?, "
                            "error = NULL, detail = ? WHERE id = ? AND status = 'unknown'",
                            [iso(now), note, action_id])

    def actions_with_status(self, status: str) -> list[dict]:
        return list(self.rows(
            """SELECT a.*, c.invoice_id FROM actions a JOIN cases c ON c.id = a.case_id
               WHERE a.status = ? ORDER BY a.id""", [status]))

    def unknown_count(self) -> int:
        """How many actions wait for a person (`case resolve`): one step of a partial index, on every tick."""
        return self.conn.execute("SELECT count(*) FROM actions INDEXED BY actions_unknown WHERE status = 'unknown'"
                                 ).fetchone()[0]

    def unknown_claimed_before(self, before: datetime) -> list[dict]:
        """Actions with an unknown outcome claimed before `before`, oldest first, with their invoice and case
        state (`case resolve --all-sent / --all-not-sent`)."""
        return list(self.rows(
            """SELECT a.*, c.invoice_id, c.state AS case_state FROM actions a INDEXED BY actions_unknown
               JOIN cases c ON c.id = a.case_id WHERE a.status = 'unknown' AND a.claimed_at < ?
               ORDER BY a.claimed_at, a.id""", [iso(before)]))

    # -- ticks -----------------------------------------------------------------------------------------------

    def start_tick(self, now: datetime, dry_run: bool) -> int:
        boot = boot_id()
        self._light = boot is not None and self.path is not None
        return self.conn.execute("INSERT INTO ticks(now, pid, dry_run, boot_id) VALUES (?, ?, ?, ?)",
                               [iso(now), os.getpid(), int(dry_run), boot]).lastrowid

    def settles_by_started(self, tick_id: int | None) -> bool:
        """Can a claim this tick left behind be judged by its "started" mark? Yes when the tick's commits were
        all durable (no boot id: no light commits), or the machine has not rebooted since (a process that dies
        loses nothing it committed). After a reboot a light "started" mark may be lost: every claim counts as
        started."""
        if tick_id is None:
            return True
        row = self.conn.execute("SELECT boot_id FROM ticks WHERE id = ?", [tick_id]).fetchone()
        return row is None or row[0] is None or row[0] == boot_id()

    def finish_tick(self, tick_id: int, opened: int, closed: int, actions: int, failed: int) -> None:
        self.conn.execute("UPDATE ticks SET finished = 1, opened = ?, closed = ?, actions = ?, failed = ? "
                        "WHERE id = ?", [opened, closed, actions, failed, tick_id])

    def last_tick_at(self) -> datetime | None:
        """When the last finished tick ran (its clock), for explaining missed steps."""
        row = self.conn.execute("SELECT now FROM ticks WHERE finished = 1 AND dry_run = 0 ORDER BY id DESC LIMIT 1"
                              ).fetchone()
        return from_iso(row[0]) if row else None

    # -- notices (pre-dunning, dunctl/notices) ---------------------------------------------------------------

    def apply_notice_batch(self, batch: SyncBatch, now: datetime) -> None:
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

    def subscriptions_to_plan(self, now: datetime) -> list[str]:
        """Subscriptions whose notices are due to be planned again (changed, or a usage check due)."""
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM subscriptions INDEXED BY subscriptions_notices_due WHERE notices_due_at <= ? "
            "ORDER BY notices_due_at, id", [iso(now)])]

    def notice_subject(self, subscription_id: str) -> dict | None:
        """A subscription with its customer and the card its next payment will use (its own default, else the
        customer's), read once for the notice planner."""
        sub = self.subscription(subscription_id)
        if sub is None:
            return None
        customer = self.customer(sub["customer_id"])
        method_id = sub.get("default_payment_method") or (customer or {}).get("default_payment_method")
        paid = [row[0] for row in self.conn.execute(
            "SELECT amount_paid FROM invoices WHERE subscription_id = ? AND status = 'paid' AND amount_paid > 0 "
            "ORDER BY created_at DESC LIMIT 3", [subscription_id])]
        # (not its notices: the planner never reads them, and they grow with every period)
        return {"subscription": sub, "customer": customer, "payment_method": self.payment_method(method_id),
                "paid_amounts": paid}

    def plan_notice(self, *, kind: str, object_id: str, period: str, offset: str, customer_id: str,
                    subscription_id: str | None, due_at: datetime, now: datetime, key: str, data: dict,
                    status: str = "pending", detail: str | None = None) -> bool:
        """Add a notice unless its (kind, object, period, offset) exists. False when it already did."""
        finished = status != "pending"
        cursor = self.conn.execute(
            """INSERT OR IGNORE INTO notices(kind, object_id, period, "offset", customer_id, subscription_id, status,
                 due_at, next_due_at, planned_at, finished_at, idempotency_key, detail, data)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [kind, object_id, period, offset, customer_id, subscription_id, status, iso(due_at),
             None if finished else iso(due_at), iso(now), iso(now) if finished else None, key, detail, _json(data)])
        return cursor.rowcount == 1

    def cancel_notices(self, subscription_id: str, keep: set[int], now: datetime, reason: str) -> int:
        """Pending notices of a subscription that its facts no longer call for (card replaced, renewal moved,
        subscription cancelled): never sent."""
        rows = self.conn.execute("SELECT id FROM notices WHERE subscription_id = ? AND status IN ('pending', 'failed')",
                               [subscription_id]).fetchall()
        gone = [row[0] for row in rows if row[0] not in keep]
        for notice_id in gone:
            self.conn.execute("UPDATE notices SET status = 'cancelled', next_due_at = NULL, finished_at = ?, "
                            "detail = ? WHERE id = ?", [iso(now), reason, notice_id])
        return len(gone)

    def notice_id(self, kind: str, object_id: str, period: str, offset: str) -> int | None:
        row = self.conn.execute('SELECT id FROM notices WHERE kind = ? AND object_id = ? AND period = ? AND "offset" = ?',
                              [kind, object_id, period, offset]).fetchone()
        return row[0] if row else None

    def set_notices_due(self, subscription_id: str, at: datetime | None) -> None:
        self.conn.execute("UPDATE subscriptions SET notices_due_at = ? WHERE id = ?", [iso(at), subscription_id])

    def record_usage_preview(self, subscription_id: str, preview: dict, at: datetime) -> None:
        self.conn.execute("UPDATE subscriptions SET usage_checked_at = ?, usage_preview = ? WHERE id = ?",
                        [iso(at), _json(preview), subscription_id])

    def due_notices(self, now: datetime) -> list[dict]:
        """The one indexed query an idle tick costs for notices."""
        return list(self.rows("SELECT * FROM notices INDEXED BY notices_due WHERE next_due_at <= ? "
                                  "ORDER BY next_due_at, id", [iso(now)]))

    def notice(self, notice_id: int) -> dict | None:
        return next(self.rows("SELECT * FROM notices WHERE id = ?", [notice_id]), None)

    def defer_notice(self, notice_id: int, until: datetime, reason: str) -> None:
        self.conn.execute("UPDATE notices SET next_due_at = ?, detail = ? WHERE id = ?", [iso(until), reason, notice_id])

    def notices_due_within(self, now: datetime, until: datetime) -> list[dict]:
        """Notices still to be sent before `until`, with their customer, for `status`."""
        return list(self.rows(
            """SELECT n.*, cu.name AS customer_name, cu.email AS customer_email FROM notices n
               LEFT JOIN customers cu ON cu.id = n.customer_id
               WHERE n.next_due_at IS NOT NULL AND n.next_due_at <= ? ORDER BY n.next_due_at, n.id""",
            [iso(until)]))

    def customer_notices(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM notices WHERE customer_id = ? ORDER BY due_at, id", [customer_id]))

    def customer_cases(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM cases WHERE customer_id = ? ORDER BY first_failed_at, id",
                                  [customer_id]))

    def customer_subscriptions(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM subscriptions WHERE customer_id = ? ORDER BY id", [customer_id]))

    def would_notice_groups(self) -> list[dict]:
        """Every notice of a (kind, object, period) that monitor mode recorded as `would`, for the switch to live
        (once per switch: not a tick's cost)."""
        return list(self.rows(
            """SELECT n.* FROM notices n WHERE EXISTS (SELECT 1 FROM notices w WHERE w.status = 'would'
                 AND w.kind = n.kind AND w.object_id = n.object_id AND w.period = n.period) ORDER BY n.id"""))

    def reopen_notice(self, notice_id: int, now: datetime, detail: str) -> None:
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
