"""The case store (`ledger.cases`): opening, following, holding and ending cases; their timelines; a tick's
reads of a batch of cases (`bundles`, one query per table); when customers were last contacted."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import fields
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING

from dunctl.clock import from_iso, iso
from dunctl.ledger.sql import ENDED_STATES, IN_LIST_SIZE, Store, pairs, run_in, to_json

if TYPE_CHECKING:   # the typed records load with the first row that needs one: an idle tick builds none (25 ms)
    from dunctl.ledger.records import CaseBundle, CaseRecord, InvoiceRecord


# What `explain` reads from an action's stored row besides the record's fields: why the step ended as it did.
ACTION_ROW_EXTRAS = ("error", "detail")
# How many records `CaseStore._records` keeps for reuse: a demo's whole book (500 customers, their cases and
# actions) several times over, a few megabytes at most.
KNOWN_RECORDS = 50_000
# A batch's cases with what they concern, for `CaseStore._joined`: with their customers and subscriptions, or not.
_CASES = """SELECT c.*, NULL AS "--", i.* FROM cases c LEFT JOIN invoices i ON i.id = c.invoice_id
            WHERE c.id IN ({}) ORDER BY c.id"""
_WHOLE_CASES = """SELECT c.*, NULL AS "--", i.*, NULL AS "--", cu.*, NULL AS "--", s.* FROM cases c
                  LEFT JOIN invoices i ON i.id = c.invoice_id LEFT JOIN customers cu ON cu.id = c.customer_id
                  LEFT JOIN subscriptions s ON s.id = c.subscription_id WHERE c.id IN ({}) ORDER BY c.id"""


def _parts(record_classes: tuple[type, ...], keys: list[str]) -> list[tuple]:
    """(class, where its columns start and end, its reader, where its id is) for each record a `_joined` row holds:
    the columns of each part are separated by a column named "--"."""
    bounds = [-1] + [n for n, key in enumerate(keys) if key == "--"] + [len(keys)]
    return [(cls, start + 1, end, cls.reader(tuple(keys[start + 1:end])), keys.index("id", start + 1))
            for cls, start, end in zip(record_classes, bounds, bounds[1:])]


@cache
def _action_columns(record_class: type) -> str:
    """The columns a bundle's actions are read with: the record's fields and ACTION_ROW_EXTRAS, not `SELECT *`
    (keys, subjects, request ids: nothing that plans or acts reads them from a bundle; a third of the query's cost
    over the demo's 15,000 action rows read)."""
    return ", ".join([f.name for f in fields(record_class) if f.name != "row"] + list(ACTION_ROW_EXTRAS))


class CaseStore(Store):
    def __init__(self, ledger):
        super().__init__(ledger)
        self._sequences: dict[str, str] = {}   # hash -> definition: a stored version never changes
        # hash -> the sequence as the tick parsed it (tick/schedule.py `Sequences`), for as long as this ledger
        # object lives: a demo's 1,560 ticks parse each version once, not once a tick
        self.parsed_sequences: dict[str, object] = {}
        # (record class, id) -> (the row as last read, its record): see `_records`
        self._known: dict[tuple[type, object], tuple[tuple, object]] = {}
        # (query, record classes) -> its columns and its parts, for `_joined`
        self._shapes: dict[tuple[str, tuple[type, ...]], tuple[list[str], list[tuple]]] = {}

    def open(self, *, invoice: InvoiceRecord, segment: str, sequence: str, sequence_hash: str,
                  sequence_def: dict, failure_type: str, decline_code: str | None, now: datetime) -> int:
        self.conn.execute("INSERT OR IGNORE INTO sequence_versions(hash, name, definition) VALUES (?, ?, ?)",
                        [sequence_hash, sequence, to_json(sequence_def)])
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
        """What the invoice says now: the amount still owed and the attempts so far. Written only when either
        changed: every re-synced copy of an invoice is followed, and an UPDATE of these columns runs the report
        rollups' trigger (a dozen statements) even when it stores the same values."""
        self.conn.execute("UPDATE cases SET amount_remaining = ?, attempts = ? WHERE id = ? "
                          "AND (amount_remaining IS NOT ? OR attempts IS NOT ?)",
                          [amount_remaining, attempts, case_id, amount_remaining, attempts])

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

    def hold(self, case_id: int, because: str | None = None) -> None:
        """The subscription is paused or set to cancel outside dunctl: no step runs until it resumes."""
        self._set(case_id, state="paused", next_due_at=None, next_step=None, held_because=because)

    def pause(self, case_id: int) -> None:
        self._set(case_id, state="paused", with_person=1, next_due_at=None, next_step=None)

    def resume(self, case_id: int) -> None:
        self._set(case_id, state="open", with_person=0, held_because=None)

    def unhold(self, case_id: int) -> None:
        self._set(case_id, state="open", held_because=None)

    def mark_churned(self, case_id: int) -> None:
        self._set(case_id, churned=1)

    def end(self, case_id: int, state: str, reason: str, at: datetime, **fields) -> None:
        """Move a case to an ended state; no further step will be planned for it."""
        assert state in ENDED_STATES, state
        self._set(case_id, state=state, close_reason=reason, closed_at=at, next_due_at=None, next_step=None,
                  **fields)

    def schedule(self, case_id: int, next_due_at: datetime | None, next_step: str | None) -> None:
        """When the case is next due: the one indexed column an idle tick reads."""
        self.schedule_many([(case_id, next_due_at, next_step)])

    def schedule_many(self, schedules: Iterable[tuple[int, datetime | None, str | None]]) -> None:
        """(case id, when next due, for what) of several cases in one statement: a tick schedules every case it
        planned."""
        self.conn.executemany("UPDATE cases SET next_due_at = ?, next_step = ? WHERE id = ?",
                              [(iso(due), step, case_id) for case_id, due, step in schedules])

    def set_last_actions(self, actions: Iterable[tuple[int, str]], at: datetime) -> None:
        """(case id, text) for several cases at once, all at `at`."""
        self.conn.executemany("UPDATE cases SET last_action = ?, last_action_at = ? WHERE id = ?",
                              [(text, iso(at), case_id) for case_id, text in actions])

    def get(self, case_id: int) -> dict | None:
        return next(self.rows("SELECT * FROM cases WHERE id = ?", [case_id]), None)

    def in_message(self, message_ref: str) -> list[dict]:
        """The cases one grouped message covered (their actions share its message_ref)."""
        return list(self.rows("SELECT DISTINCT c.* FROM cases c JOIN actions a ON a.case_id = c.id "
                              "WHERE a.message_ref = ? ORDER BY c.first_failed_at, c.invoice_id", [message_ref]))

    def for_invoice(self, invoice_id: str) -> dict | None:
        return next(self.rows("SELECT * FROM cases WHERE invoice_id = ?", [invoice_id]), None)

    def opt_out(self, customer_id: str, channel: str, at: datetime, source: str) -> bool:
        """Record that the customer asked for no more messages on `channel` (an SMS STOP); False if already."""
        with self.ledger.transaction():
            cursor = self.conn.execute("INSERT OR IGNORE INTO optouts(customer_id, channel, at, source) "
                                       "VALUES (?, ?, ?, ?)", [customer_id, channel, iso(at), source])
        return cursor.rowcount > 0

    def opted_out(self, customer_id: str, channel: str) -> bool:
        return next(self.rows("SELECT 1 FROM optouts WHERE customer_id = ? AND channel = ?",
                              [customer_id, channel]), None) is not None

    def record(self, case_id: int) -> CaseRecord | None:
        from dunctl.ledger.records import CaseRecord   # lazy: see dunctl/lazy.py

        return CaseRecord.from_row(self.get(case_id))

    def records(self, case_ids: Iterable[int]) -> dict[int, CaseRecord]:
        """Several cases' records (`record`), in one query."""
        from dunctl.ledger.records import CaseRecord   # lazy: see dunctl/lazy.py

        return {case.id: case for case in self._records(CaseRecord, "SELECT * FROM cases WHERE id IN ({})", case_ids)}

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
        customer was last sent a message), for all of them at once: the cases with their invoices, customers and
        subscriptions in one query, their actions in another (and the contacts in a third): a tick reads a
        batch's cases at once, not one by one.

        `planned`: cases loaded earlier in this tick, before their effects ran. Of those only what a tick's
        effects write is read again: the case, its actions, its invoice and the customer's recent messages. Their
        customer and subscription records are kept: only a sync changes them, and none runs between planning a
        batch and scheduling it. Any record whose row did not change is the one built before (`_joined`)."""
        from dunctl.ledger.records import (   # lazy: see dunctl/lazy.py
            ActionRecord,
            CaseBundle,
            CaseRecord,
            CustomerRecord,
            InvoiceRecord,
            SubscriptionRecord,
        )

        planned = planned or {}
        ids = list(case_ids)
        # each case with its invoice, customer and subscription in one query (a planned case's customer and
        # subscription are kept, so those with the invoice only)
        fresh = [i for i in ids if i not in planned]
        rows = self._joined((CaseRecord, InvoiceRecord, CustomerRecord, SubscriptionRecord), _WHOLE_CASES, fresh) \
            if fresh else []
        if len(fresh) < len(ids):
            rows += [(case, invoice, planned[case.id].customer, planned[case.id].subscription) for case, invoice
                     in self._joined((CaseRecord, InvoiceRecord), _CASES, [i for i in ids if i in planned])]
        if not rows:
            return {}
        cases = [row[0] for row in rows]
        actions: dict[int, list[ActionRecord]] = {c.id: [] for c in cases}
        for record in self._records(ActionRecord, f"SELECT {_action_columns(ActionRecord)} FROM actions "
                                                  "WHERE case_id IN ({}) ORDER BY id", actions):
            actions[record.case_id].append(record)
        contacts = {} if contacts_since is None else self.contacts_of(
            [c.customer_id for c in cases], contacts_since, contact_statuses)
        found = {}
        for case, invoice, customer, subscription in sorted(rows, key=lambda row: row[0].id):
            found[case.id] = CaseBundle(case=case, invoice=invoice, customer=customer, subscription=subscription,
                                        actions=actions[case.id], contacts=tuple(contacts.get(case.customer_id, ())))
        return found

    def _records(self, record_class: type, sql: str, values: Iterable) -> list:
        """`sql`'s rows (over an IN list of `values`, see `rows_in`) as `record_class` records (`_joined`)."""
        return [row[0] for row in self._joined((record_class,), sql, values)]

    def _joined(self, record_classes: tuple[type, ...], sql: str, values: Iterable) -> list[tuple]:
        """`sql`'s rows (over an IN list of `values`, see `rows_in`), each as one record per class: the query
        selects their tables' columns in that order, separated by a column named "--"; a part whose `id` is null
        (a LEFT JOIN that found nothing) is None.
        A part read before by this ledger object and unchanged since gives the record built then: most of a
        tick's rows (a case's actions, its customer, its invoice between payments) are the same tick after tick,
        and building a record (a dict per row, its times and JSON decoded) was a third of reading a bundle.
        Records are read-only, so one can be handed out twice; the part is compared whole, so a changed one is
        always built again."""
        known, found = self._known, []
        if len(known) > KNOWN_RECORDS:
            known.clear()    # a bound on memory, for a tick that reads a large book once
        for cursor in run_in(self.conn, sql, values):
            keys = [column[0] for column in cursor.description]
            shape = self._shapes.get((sql, record_classes))
            if shape is None or shape[0] != keys:    # the parts of a query's rows, worked out once per query
                shape = self._shapes[sql, record_classes] = (keys, _parts(record_classes, keys))
            for row in cursor.fetchall():
                records = []
                for cls, start, end, build, at in shape[1]:
                    key = row[at]
                    if key is None:
                        records.append(None)
                        continue
                    values_ = row[start:end]
                    seen = known.get((cls, key))
                    if seen is None or seen[0] != values_:
                        seen = known[cls, key] = (values_, build(values_))
                    records.append(seen[1])
                found.append(tuple(records))
        return found

    def states(self, case_ids: Iterable[int]) -> dict[int, tuple[str, str]]:
        """case id -> (the case's state, its invoice's status) as stored now, for several cases in one query: what
        the executor re-reads when it claims a batch (an earlier batch, or another process, may have ended or
        paused a case since it was planned)."""
        return {case_id: (state, status) for case_id, state, status in pairs(
            self.conn, "SELECT c.id, c.state, i.status FROM cases c JOIN invoices i ON i.id = c.invoice_id "
            "WHERE c.id IN ({})", case_ids)}

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
        ids = list(dict.fromkeys(i for i in customer_ids if i is not None))
        sent: dict[str, list[datetime]] = {}
        for start in range(0, len(ids), IN_LIST_SIZE // 2):    # each piece is listed twice
            piece = ids[start:start + IN_LIST_SIZE // 2]
            people = ", ".join("?" * len(piece))
            # One delivery per message (a grouped email covers several cases); pre-dunning notices count toward the
            # same contact policy (in monitor mode their `would` too, as steps'). One query for both.
            for customer_id, at in self.conn.execute(
                    f"""SELECT c.customer_id, min(a.finished_at) FROM actions a JOIN cases c ON c.id = a.case_id
                          WHERE c.customer_id IN ({people}) AND a.audience = 'customer' AND a.status IN ({marks})
                            AND a.finished_at >= ?
                          GROUP BY c.customer_id, coalesce(a.message_ref, a.id)
                        UNION ALL
                        SELECT customer_id, finished_at FROM notices
                          WHERE customer_id IN ({people}) AND status IN ({marks}) AND finished_at >= ?""",
                    [*piece, *statuses, iso(since), *piece, *statuses, iso(since)]):
                sent.setdefault(customer_id, []).append(from_iso(at))
        for times in sent.values():
            times.sort()
        return sent

    def ids_for_subscription(self, subscription_id: str, states: tuple[str, ...] = ("open", "paused")
                                  ) -> list[int]:
        marks = ", ".join("?" for _ in states)
        return [row[0] for row in self.conn.execute(
            f"SELECT id FROM cases WHERE subscription_id = ? AND state IN ({marks})", [subscription_id, *states])]

    def open_ids(self) -> list[int]:
        return [row[0] for row in self.conn.execute("SELECT id FROM cases WHERE state = 'open'")]

    def open_ids_for_customer(self, customer_id: str) -> list[int]:
        return [row[0] for row in self.conn.execute(
            "SELECT id FROM cases WHERE customer_id = ? AND state IN ('open', 'paused')", [customer_id])]

    def listed(self, include_ended: bool = False) -> list[dict]:
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

    def of_customer(self, customer_id: str) -> list[dict]:
        return list(self.rows("SELECT * FROM cases WHERE customer_id = ? ORDER BY first_failed_at, id",
                                  [customer_id]))

    def add_timeline(self, case_id: int, at: datetime, kind: str, summary: str, data: dict | None = None) -> None:
        self.conn.execute("INSERT INTO timeline(case_id, at, kind, summary, data) VALUES (?, ?, ?, ?, ?)",
                        [case_id, iso(at), kind, summary, to_json(data) if data else None])

    def timeline(self, case_id: int) -> list[dict]:
        return list(self.rows("SELECT at, kind, summary, data FROM timeline WHERE case_id = ? ORDER BY id",
                                  [case_id]))

    def assign_arm(self, case_id: int, experiment: str, arm: str) -> bool:
        """Record the case's experiment and arm. A case keeps the first arm it was given: False (and nothing
        changes) when it already has one."""
        cursor = self.conn.execute("UPDATE cases SET experiment = ?, arm = ? WHERE id = ? AND experiment IS NULL",
                                   [experiment, arm, case_id])
        return cursor.rowcount == 1

    def any_in_arm(self, arm: str) -> bool:
        return self.conn.execute("SELECT 1 FROM cases WHERE arm = ? LIMIT 1", [arm]).fetchone() is not None

    def keep_only(self, arm: str, in_arm: bool) -> None:
        """Delete every case (with its actions and timeline) but those in `arm` (`in_arm`), or but those not in
        it: for measuring a part of a simulated run on a copy of its ledger (`snapshot_in_memory`), never on
        the file (the ledger's triggers forbid deleting history, and are dropped here)."""
        self._keep_where("arm IS ?" if in_arm else "arm IS NOT ?", arm)

    def keep_net_terms(self, net_terms: bool) -> None:
        """Like `keep_only`, by kind: keep only the net-terms cases (`net_terms`), or only the card cases, so a
        simulated run's card figures and its net-terms figures are each measured on their own cases."""
        self._keep_where("failure_type IS ?" if net_terms else "failure_type IS NOT ?", "net_terms")

    def _keep_where(self, keep: str, value: str) -> None:
        self.conn.execute("PRAGMA foreign_keys = OFF")
        drop = f"SELECT id FROM cases WHERE NOT ({keep})"
        for table in ("actions", "timeline"):
            self.conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_delete")
            if self.conn.execute("SELECT 1 FROM pragma_table_info(?) WHERE name = 'case_id'", [table]).fetchone():
                self.conn.execute(f"DELETE FROM {table} WHERE case_id IN ({drop})", [value])
        self.conn.execute(f"DELETE FROM cases WHERE NOT ({keep})", [value])
