"""The ledger's net-terms receivables store (dunctl/receivables): invoices' due dates, the invoices coming due,
and the holds (promises to pay, disputed invoices) on them. All SQL for them is here."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from typing import TYPE_CHECKING

from dunctl.clock import iso

if TYPE_CHECKING:   # an idle tick loads this store and never the sync's records
    from dunctl.model import Invoice

SEND_INVOICE = "send_invoice"


def store_terms(conn: sqlite3.Connection, invoice: Invoice) -> None:
    """Keep the invoice's due date, PDF link and when Stripe recorded its latest payment (only invoices that have a
    due date or a PDF: card invoices stay as they were)."""
    if invoice.due_date is None and invoice.invoice_pdf is None:
        return
    conn.execute("""UPDATE invoices SET due_date = ?, invoice_pdf = coalesce(?, invoice_pdf),
                    amount_paid_at = coalesce(max(?, coalesce(amount_paid_at, '')), amount_paid_at) WHERE id = ?""",
                 [iso(invoice.due_date), invoice.invoice_pdf, iso(invoice.amount_paid_at), invoice.id])


# sync_state: the earliest due date of an open net-terms invoice without a case, when the tick last looked (null:
# there is none); every synced due date lowers it. A tick looks for invoices coming due only once `now` plus the
# lead reaches it, not on every reconcile (dunctl/receivables/tick.py). Absent: never looked, so look.
NEXT_DUE = "net_terms_next_due"
_UNKNOWN = object()


def note_due_date(ledger, due_date: datetime) -> None:
    """A synced invoice has a due date: the next look for invoices coming due is no later than it."""
    known = ledger.get_state(NEXT_DUE, _UNKNOWN)
    if known is not _UNKNOWN and (known is None or iso(due_date) < known):
        ledger.set_state(NEXT_DUE, iso(due_date))


def coming_due_by(ledger, before: str) -> bool:
    """Can an open net-terms invoice without a case fall due before `before` (ISO text)? From the state alone."""
    known = ledger.get_state(NEXT_DUE, _UNKNOWN)
    return known is _UNKNOWN or (known is not None and known <= before)


def mark_and_look_ahead(ledger, before: str) -> None:
    """`mark_coming_due`, then store when to look next: the earliest due date still without a case (those just
    marked among them, so one a segment did not take is marked again on the next look, as before)."""
    mark_coming_due(ledger.conn, before)
    row = ledger.conn.execute(
        """SELECT due_date FROM invoices WHERE collection_method = ? AND status = 'open' AND due_date IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM cases c WHERE c.invoice_id = invoices.id)
           ORDER BY due_date LIMIT 1""", [SEND_INVOICE]).fetchone()
    ledger.set_state(NEXT_DUE, row[0] if row else None)


def mark_coming_due(conn: sqlite3.Connection, before: str) -> int:
    """Make the open net-terms invoices without a case that fall due before `before` (ISO text) pending, so reconciling
    opens their cases: an invoice is synced weeks before its first reminder is due, and nothing changes on it
    when that time comes. One indexed step."""
    return conn.execute(
        """UPDATE invoices SET pending = 1
           WHERE collection_method = ? AND status = 'open' AND due_date IS NOT NULL AND due_date <= ?
             AND pending = 0 AND NOT EXISTS (SELECT 1 FROM cases c WHERE c.invoice_id = invoices.id)""",
        [SEND_INVOICE, before]).rowcount


def retime_case(conn: sqlite3.Connection, case_id: int, due_date: datetime) -> None:
    """The due date moved: the case's steps count from the new one (the case's start is its due date)."""
    conn.execute("UPDATE cases SET first_failed_at = ? WHERE id = ?", [iso(due_date), case_id])


def open_receivables(conn: sqlite3.Connection, ended: tuple[str, ...]) -> list[tuple[str, int, str, str]]:
    """(currency, amount remaining, due date, kind) of everything owed now: every open net-terms invoice (whether
    or not its case has opened yet), and every open card case, whose due date is its first failed attempt."""
    marks = ", ".join("?" * len(ended))
    return [tuple(row) for row in conn.execute(
        f"""SELECT currency, amount_remaining, due_date, 'net_terms' FROM invoices
            WHERE collection_method = ? AND status = 'open' AND due_date IS NOT NULL AND amount_remaining > 0
            UNION ALL
            SELECT currency, amount_remaining, first_failed_at, 'card' FROM cases
            WHERE state NOT IN ({marks}) AND failure_type != 'net_terms' AND amount_remaining > 0""",
        [SEND_INVOICE, *ended])]


def net_terms_sales(conn: sqlite3.Connection, since: datetime, until: datetime) -> list[tuple[str, int, str]]:
    """(currency, amount due, created) of the net-terms invoices issued in [since, until), voided ones aside: the
    sales countback DSO walks back through."""
    return [tuple(row) for row in conn.execute(
        """SELECT currency, amount_due, created_at FROM invoices
           WHERE collection_method = ? AND status != 'void' AND created_at >= ? AND created_at < ?""",
        [SEND_INVOICE, iso(since), iso(until)])]


def add_hold(conn: sqlite3.Connection, *, case_id: int, invoice_id: str, kind: str, until: datetime | None,
             amount: int | None, currency: str, reason: str | None, paid: int, now: datetime, by: str) -> int:
    return conn.execute(
        """INSERT INTO holds(case_id, invoice_id, kind, until, amount, currency, reason, created_at, by,
                             paid_at_start) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [case_id, invoice_id, kind, iso(until), amount, currency, reason, iso(now), by, paid]).lastrowid


def _dicts(cursor: sqlite3.Cursor) -> list[dict]:
    keys = [column[0] for column in cursor.description]
    return [dict(zip(keys, row)) for row in cursor]


def open_hold(conn: sqlite3.Connection, case_id: int) -> dict | None:
    found = _dicts(conn.execute("SELECT * FROM holds WHERE case_id = ? AND ended_at IS NULL ORDER BY id DESC "
                                "LIMIT 1", [case_id]))
    return found[0] if found else None


def holds_to_end(conn: sqlite3.Connection, now: datetime, ended: tuple[str, ...]) -> list[dict]:
    """Open holds whose date passed, whose case ended (the invoice was paid, voided...), or whose case a person
    resumed (it is open again): each ends now."""
    return _dicts(conn.execute(f"SELECT h.* FROM {HOLDS_TO_END.format(', '.join('?' * len(ended)))}",
                               [iso(now), *ended]))


# holds_to_end's rows (`{}`: the ended states' marks; parameters: now, then the ended states)
HOLDS_TO_END = """holds h JOIN cases c ON c.id = h.case_id WHERE h.ended_at IS NULL
            AND ((h.until IS NOT NULL AND h.until <= ?) OR c.state = 'open' OR c.state IN ({}))"""


def end_hold(conn: sqlite3.Connection, hold_id: int, outcome: str, at: datetime) -> None:
    conn.execute("UPDATE holds SET ended_at = ?, outcome = ? WHERE id = ? AND ended_at IS NULL",
                 [iso(at), outcome, hold_id])


def _within(column: str, since: datetime | None, until: datetime | None) -> tuple[str, list[str]]:
    """SQL and parameters for `column` in [since, until); an open end is no bound."""
    sql, params = [], []
    if since is not None:
        sql.append(f"{column} >= ?")
        params.append(iso(since))
    if until is not None:
        sql.append(f"{column} < ?")
        params.append(iso(until))
    return " AND ".join(sql) or "1", params


def hold_counts(conn: sqlite3.Connection, since: datetime | None = None,
                until: datetime | None = None) -> dict[tuple[str, str], int]:
    """(kind, outcome) -> how many holds ended that way in [since, until), by the day each ended; and
    (kind, 'open') -> how many were open at the period's end (recorded before it, ended at or after it, or not)."""
    ended, params = _within("ended_at", since, until)
    counts = {(kind, outcome): n for kind, outcome, n in conn.execute(
        f"SELECT kind, outcome, count(*) FROM holds WHERE ended_at IS NOT NULL AND {ended} GROUP BY kind, outcome",
        params)}
    end = iso(until) if until is not None else None
    counts.update({(kind, "open"): n for kind, n in conn.execute(
        """SELECT kind, count(*) FROM holds WHERE (? IS NULL OR created_at < ?)
           AND (ended_at IS NULL OR (? IS NOT NULL AND ended_at >= ?)) GROUP BY kind""", [end] * 4)})
    return counts


def closed_as_counts(conn: sqlite3.Connection, since: datetime | None = None,
                     until: datetime | None = None) -> list[tuple[str, str, int, int, int]]:
    """(outcome, currency, cases, received, written off) of the cases a person closed saying how in [since,
    until), by the day each was closed, for the report."""
    closed, params = _within("closed_at", since, until)
    return list(conn.execute(
        f"""SELECT closed_as, currency, count(*), sum(coalesce(settled_amount, 0)),
                   sum(max(amount_remaining - coalesce(settled_amount, 0), 0))
            FROM cases WHERE state = 'closed' AND closed_as IS NOT NULL AND {closed}
            GROUP BY closed_as, currency ORDER BY closed_as, currency""", params))


def open_invoices_of(conn: sqlite3.Connection, customer_id: str) -> list[dict]:
    """A customer's open invoices with something left to pay, oldest due first; `due` is the due date of a
    net-terms invoice, the first failed attempt of a card one, else its creation."""
    return _dicts(conn.execute(
        """SELECT id, number, currency, amount_due, amount_paid, amount_remaining, created_at, hosted_invoice_url,
                  invoice_pdf, collection_method, coalesce(due_date, first_failed_at, created_at) AS due
           FROM invoices WHERE customer_id = ? AND status = 'open' AND amount_remaining > 0
           ORDER BY due, id""", [customer_id]))


def statement_rows(conn: sqlite3.Connection, failure_type: str, customer_id: str) -> list[dict]:
    """What a message about this case lists as the customer's statement of account: a net-terms customer's open
    invoices; a card case's messages do without (one query less per message). The tick, `preview --case` and the
    collections packet all render a message with this."""
    return open_invoices_of(conn, customer_id) if failure_type == "net_terms" else []


def holds_of(conn: sqlite3.Connection, case_id: int) -> list[dict]:
    return _dicts(conn.execute("SELECT * FROM holds WHERE case_id = ? ORDER BY id", [case_id]))


def journal_cases(conn: sqlite3.Connection, since: str, until: str) -> list[dict]:
    """Cases with money to book in [since, until): recovered, written off or closed by a person as collected,
    settled or written off in it, or with a part paid in it;
    with the customer's name, the invoice's number, and whether dunctl's own step wrote the invoice off."""
    return _dicts(conn.execute(
        """SELECT c.id, c.invoice_id, c.customer_id, c.currency, c.state, c.amount_paid_at_open, c.amount_recovered,
                  c.amount_remaining, c.recovered_at, c.recovered_by, c.closed_at, c.closed_as, c.settled_amount,
                  i.number, cu.name AS customer_name,
                  EXISTS (SELECT 1 FROM actions a WHERE a.case_id = c.id AND a.action = 'mark_uncollectible'
                          AND a.status = 'done') AS written_off_by_dunctl
           FROM cases c LEFT JOIN invoices i ON i.id = c.invoice_id LEFT JOIN customers cu ON cu.id = c.customer_id
           WHERE (c.state = 'recovered' AND c.recovered_at >= ? AND c.recovered_at < ?)
              OR (c.state = 'written_off' AND c.closed_at >= ? AND c.closed_at < ?)
              OR (c.state = 'closed' AND c.closed_as IS NOT NULL AND c.closed_at >= ? AND c.closed_at < ?)
              OR EXISTS (SELECT 1 FROM timeline t WHERE t.case_id = c.id AND t.kind = 'partial'
                         AND coalesce(json_extract(t.data, '$.paid_at'), t.at) >= ?
                         AND coalesce(json_extract(t.data, '$.paid_at'), t.at) < ?)
           ORDER BY c.id""", [since, until] * 4))


def partial_notes(conn: sqlite3.Connection, case_ids: list[int]) -> list[dict]:
    """Every `partial` timeline line of these cases (dunctl/receivables/cases.py), oldest first."""
    if not case_ids:
        return []
    marks = ", ".join("?" * len(case_ids))
    return _dicts(conn.execute(f"SELECT case_id, at, data FROM timeline WHERE kind = 'partial' AND case_id IN "
                               f"({marks}) ORDER BY case_id, at, id", case_ids))
