"""The ledger: every row dunctl keeps, behind intent-named methods. All SQL of dunctl lives in this package.

`Ledger` is the facade: it opens the file (`file.py`: connect, pragmas, migrate under the lock), runs
transactions, holds the tick lock, answers the few queries an idle tick runs, and hands out the effect journals
(journal.py). Stores made on first use carry the rest: `ledger.sync` (sync.py: what a sync batch writes, the copies of Stripe objects),
`ledger.cases` (cases.py) and `ledger.notices` (notices.py). Read models for commands live under `views/`.

SQLite in WAL mode, schema only through numbered migrations (sqlite-utils' migrations, applied on open), file
mode 0600 because it holds customer emails. The hot path talks to `sqlite3` directly, in autocommit mode with
explicit transactions: sqlite-utils wraps every query in a savepoint (three statements for one read) and costs a
cron tick 40 ms to import, so it loads only to migrate, and for callers that want its API (`Ledger.db`).
Times are UTC text ('2026-11-03T09:00:00Z'); money is integer minor units.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import cached_property
from pathlib import Path

from dunctl.clock import from_iso, iso
from dunctl.ledger import file, image, quiet
from dunctl.ledger.cases import CaseStore
from dunctl.ledger.file import SCHEMA, applied_migrations, boot_id, connect
from dunctl.ledger.journal import JOURNALS
from dunctl.ledger.notices import NoticeStore
from dunctl.ledger.sql import ENDED_STATES, OPEN_STATES, pairs, rows
from dunctl.ledger.sync import SyncStore
from dunctl.ledger.transaction import Transaction as _Transaction   # not exported (tests/test_exported_members.py)
from dunctl.errors import LockHeld
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dunctl.effect import Journal

_UNPARSED = object()
_SENT_OR_TRIED = ("email", "sms", "retry")   # the actions `Ledger.sent_and_tried` lists

__all__ = ["ENDED_STATES", "OPEN_STATES", "SCHEMA", "CaseStore", "Ledger", "NoticeStore", "SyncStore",
           "applied_migrations", "connect"]


def apply_migrations(conn: sqlite3.Connection) -> None:
    """Every pending migration. A new ledger is copied from the image of one when there is one for this schema
    (dunctl/ledger/image.py); else sqlite-utils (90 ms to import) loads here, only when a migration is pending:
    an idle tick on an up-to-date ledger never needs it."""
    if image.restore(conn):
        return
    from dunctl.ledger.migrations import migrations   # lazy: see dunctl/lazy.py
    from dunctl.ledger.scripts import ScriptDatabase   # lazy: see dunctl/lazy.py

    fresh = not applied_migrations(conn)
    migrations.apply(ScriptDatabase(conn))
    if fresh:
        image.keep(conn)


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
        # sync_state's rows (JSON text) read in one query, kept while this object holds the tick lock: no other
        # process writes the ledger's state then, and a tick reads it a dozen times (mode, cursor, account...).
        self._states: dict[str, str] | None = None
        self._values: dict[str, object] = {}      # stored text -> its value, for texts of str, number or null
        self._depth = 0
        self._db = None
        self._light = False                    # light_transaction may skip the fsync (a tick knows its boot id)
        self._relaxed = False                  # synchronous=NORMAL since the last light_transaction
        self.durable = True                    # False: rebuilt by re-running (a simulation); no commit waits on disk
        # case id -> `sent_and_tried`, read with a batch's claims (`read_sent_and_tried`), until the next ordinary
        # transaction (which records results): the actions it lists change only there
        self._sent: dict[int, list[dict]] = {}
        self._journals: dict[str, Journal] = {}

    @property
    def db(self):
        """The same connection through sqlite-utils' API (tests, ad-hoc queries); loaded on first use."""
        if self._db is None:
            from sqlite_utils import Database   # lazy: see dunctl/lazy.py

            self._db = Database(self.conn)
        return self._db

    def rows(self, sql: str, params=()) -> Iterator[dict]:
        """The rows of one query as dicts, column name to value."""
        return rows(self.conn, sql, params)

    # -- the stores, made on first use ------------------------------------------------------------------------

    @cached_property
    def sync(self) -> SyncStore:
        return SyncStore(self)

    @cached_property
    def cases(self) -> CaseStore:
        return CaseStore(self)

    @cached_property
    def notices(self) -> NoticeStore:
        return NoticeStore(self)

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> Ledger:
        """Open and migrate the ledger at `path` (see `dunctl.ledger.file.open_file`)."""
        path = Path(path)
        conn, file_fd = file.open_file(path, apply_migrations, create=create)
        return cls(conn, path, file_fd)

    @classmethod
    def open_existing(cls, path: str | Path) -> Ledger:
        """Open a ledger that must already exist and hold its schema (tick, sync, status, report, case): a
        missing or zero-byte ledger is refused, never silently replaced by an empty one."""
        return cls.open(path, create=False)

    @classmethod
    def in_memory(cls) -> Ledger:
        """An empty ledger in memory (a dry run before the first tick creates no file)."""
        return cls(file.memory_connection(apply_migrations))

    @classmethod
    @contextmanager
    def open_read_only(cls, path: str | Path) -> Iterator[Ledger]:
        """The ledger through a read-only connection (previews): SQLite refuses any write. Refused like `open`
        when the file is unusable, damaged or written by a newer dunctl."""
        path = Path(path)
        problem = file.ledger_file_problem(path, must_exist=True)
        if problem:
            raise problem
        with file.read_only_connection(path) as conn:
            yield cls(conn, path)

    def snapshot_in_memory(self) -> Ledger:
        """A consistent copy of this ledger in memory (SQLite's backup API): a dry run works on it, so it never
        writes the file nor holds a write transaction that would block the cron tick."""
        conn = connect(":memory:")
        self.conn.backup(conn)
        return Ledger(conn)

    def skip_fsync(self) -> None:
        """Commit without waiting for the disk, for good: only for a ledger that is rebuilt by re-running (a
        simulation's). Not durable: a tick's light commits would otherwise turn the next ordinary one back to
        FULL, an fsync each."""
        self.durable = False
        self.conn.execute("PRAGMA synchronous = OFF")

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

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
            # A ledger in memory (a simulation's, a dry run's copy) is this process's alone: nobody else can write
            # its state, so it is kept as under the lock, and from one tick to the next (a demo's 1,560 ticks read
            # it once, not once each). A read-only connection on a file is not: the cron tick may write the file
            # under it.
            if self.path is None:
                self._locked = True
            return
        try:
            fcntl.flock(self._file_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another dunctl tick is running on {self.path}",
                           "this tick did nothing; the next cron run will pick up whatever is due") from None
        self._locked = True
        self._states = None

    def release_tick_lock(self) -> None:
        if self.path is not None:
            self._states = None
        if self._locked and self._file_fd is not None:
            fcntl.flock(self._file_fd, fcntl.LOCK_UN)
        self._locked = False

    @contextmanager
    def tick_lock(self) -> Iterator[None]:
        self.acquire_tick_lock()
        try:
            yield
        finally:
            self.release_tick_lock()

    # -- state kept between runs (the sync cursor, the account, ...) -------------------------------------------

    def get_state(self, name: str, default=None):
        if not self._locked:
            return file.read_state(self.conn, name, default)
        if self._states is None:
            self._states = dict(self.conn.execute("SELECT name, value FROM sync_state"))
        text = self._states.get(name)
        if text is None:
            return default
        value = self._values.get(text, _UNPARSED)
        if value is _UNPARSED:
            value = json.loads(text)
            if value is None or isinstance(value, (str, int, float)):
                if len(self._values) >= 256:    # the cursor's text changes with every sync: keep the recent ones
                    self._values.clear()
                self._values[text] = value      # kept parsed: the cursor and the modes are read on every tick
        return value                            # a dict or a list is a fresh copy each time: callers may change it

    def set_state(self, name: str, value) -> None:
        text = file.write_state(self.conn, name, value)
        if self._states is not None:
            self._states[name] = text

    # -- transactions ----------------------------------------------------------------------------------------

    def transaction(self) -> _Transaction:
        """One write transaction, started IMMEDIATE so a concurrent writer waits at BEGIN (busy_timeout) instead
        of failing halfway. Nested calls become savepoints of the outer transaction. Its commit is durable (and
        makes the light commits before it durable too: they are earlier in the same write-ahead log)."""
        return _Transaction(self)

    def light_transaction(self) -> _Transaction:
        """A transaction whose commit survives the process dying (kill -9, out of memory) but perhaps not the
        machine losing power: in WAL mode with synchronous=NORMAL the commit reaches the OS without waiting for
        the disk (measured: 0.01 ms of CPU, against 0.2 ms of CPU and 4 ms of waiting for an fsync); the next
        ordinary commit makes it durable too.
        Light only inside a tick that recorded the machine's boot id (`start_tick`): after a reboot,
        `settles_by_started` tells the next tick not to trust what such commits said. Otherwise an ordinary one."""
        return _Transaction(self, light=True)

    # -- what is due: the queries an idle tick runs -------------------------------------------------------------

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

    # -- actions ---------------------------------------------------------------------------------------------

    def journal(self, name: str) -> Journal:
        """Where the executor claims and records one family of effects: `actions` (a case's steps and dunctl's
        own effects) or `notices` (pre-dunning), both in dunctl/ledger/journal.py."""
        journal = self._journals.get(name)
        if journal is None:      # one each, made on first use: a journal keeps nothing but its ledger
            journal = self._journals[name] = JOURNALS[name](self)
        return journal

    def actions(self, case_id: int) -> list[dict]:
        return list(self.rows("SELECT * FROM actions WHERE case_id = ? ORDER BY id", [case_id]))

    def step_done(self, case_id: int, step_id: str) -> bool:
        """Did the case's step run (done)? One step of the actions' unique index: reconciling asks it of every open
        invoice a sync brings back with dunctl's note, which read all of the case's actions for it."""
        return self.conn.execute("SELECT EXISTS (SELECT 1 FROM actions WHERE case_id = ? AND kind = 'step' "
                                 "AND step_id = ? AND status = 'done')", [case_id, step_id]).fetchone()[0] == 1

    def sent_and_tried(self, case_id: int) -> list[dict]:
        """A case's delivered emails and SMS and its retries that ran (action, step_id, finished_at), oldest
        first: what a message says was sent and tried. Three columns of the done actions only: every column of
        every action, as `actions` reads them, cost a message three times as much."""
        known = self._sent.get(case_id)
        if known is not None:
            return [dict(row) for row in known]    # fresh copies, as a query gives: callers may change theirs
        # the action filtered here, not by an IN list in SQL: SQLite builds a table for the list at every run
        return [row for row in self.rows("SELECT action, step_id, finished_at FROM actions WHERE case_id = ? "
                                         "AND status = 'done' ORDER BY id", [case_id])
                if row["action"] in _SENT_OR_TRIED]

    def read_sent_and_tried(self, case_ids: Iterable[int]) -> None:
        """`sent_and_tried` of several cases in one query, kept until the next ordinary transaction: the executor
        reads its batch's inside the transaction that claims them. A read per message on its own was a read
        transaction of its own (four lock calls) between two commits; and the done actions it lists change only
        when results are recorded, in an ordinary transaction, which drops what was kept."""
        sent: dict[int, list[dict]] = {case_id: [] for case_id in case_ids if case_id is not None}
        for case_id, action, step_id, finished_at in pairs(
                self.conn, "SELECT case_id, action, step_id, finished_at FROM actions WHERE case_id IN ({}) "
                           "AND status = 'done' ORDER BY id", sent):
            if action in _SENT_OR_TRIED:
                sent[case_id].append({"action": action, "step_id": step_id, "finished_at": finished_at})
        self._sent.update(sent)

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
        effect that failed, with tries left, last tried before `failed_before`. Both read partial indexes; the
        case ids are made distinct here, not by a UNION's temporary b-tree (a third of the statement's cost, on
        every tick), in the order it gave them."""
        return sorted({row[0] for row in self.conn.execute(
            f"SELECT a.case_id FROM {quiet.FOLLOW_UPS_WAITING} UNION ALL SELECT a.case_id FROM {quiet.FOLLOW_UPS_FAILED}",
            {"now": iso(now), "tries": max_tries, "failed": iso(failed_before)})})

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

    def subscriptions_to_plan(self, now: datetime) -> list[str]:
        """Subscriptions whose notices are due to be planned again (changed, or a usage check due)."""
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM subscriptions INDEXED BY subscriptions_notices_due WHERE notices_due_at <= ? "
            "ORDER BY notices_due_at, id", [iso(now)])]

    def due_notices(self, now: datetime) -> list[dict]:
        """The one indexed query an idle tick costs for notices."""
        return list(self.rows("SELECT * FROM notices INDEXED BY notices_due WHERE next_due_at <= ? "
                                  "ORDER BY next_due_at, id", [iso(now)]))
