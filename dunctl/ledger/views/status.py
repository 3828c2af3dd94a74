"""The SQL behind `dunctl status`: one page of cases, most at risk first, without reading them all.

The page is chosen from the cases table alone (a top-N sort SQLite keeps to N rows), then only those N rows are
joined to their customer and invoice. Counts and revenue at risk come from the report rollups when no filter is
given; with a filter they are one pass over the open cases, in SQLite, never in Python.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from dunctl.ledger.sql import ENDED_STATES, OPEN_STATES, conjunction

_OPEN = "state IN ({})".format(", ".join(f"'{s}'" for s in OPEN_STATES))
# Most revenue at risk first. Amounts of different currencies are never compared in raw minor units (¥3,800, about
# $25, would outrank $33.99): with exchange rates (`report.fx`) they are ranked in the base currency, otherwise
# within each currency, the currencies' first cases first (issue 24).
AT_RISK = "amount_remaining"
STATES = (*OPEN_STATES, *ENDED_STATES)


@dataclass(frozen=True)
class CaseFilter:
    """Which cases `status` lists: open ones (or every case with include_ended), narrowed by the options."""

    include_ended: bool = False
    segment: str | None = None
    state: str | None = None
    failure_type: str | None = None

    @property
    def only_open(self) -> bool:
        return not self.include_ended and not self.state

    @property
    def narrowed(self) -> bool:
        return bool(self.segment or self.state or self.failure_type)

    def where(self, alias: str = "") -> tuple[str, list[str]]:
        return conjunction([(f"{alias}state = ?", self.state), (f"{alias}{_OPEN}", self.only_open),
                            (f"{alias}segment = ?", self.segment), (f"{alias}failure_type = ?", self.failure_type)])


def at_risk_order(factors: dict[str, float] | None) -> tuple[str, list]:
    """The SQL value cases are ranked by: the amount in the base currency's minor units at `factors` (minor unit
    of a currency -> minor units of the base; a currency without one ranks last), or, with no rates, the case's
    rank within its own currency."""
    if factors is None:
        return (f"row_number() OVER (PARTITION BY {_OPEN}, currency ORDER BY {AT_RISK} DESC, first_failed_at, id)",
                [])
    cases = " ".join("WHEN ? THEN ?" for _ in factors)
    params = [v for pair in factors.items() for v in pair]
    return (f"-({AT_RISK} * CASE currency {cases} ELSE NULL END)" if factors else "NULL"), params


def case_page(conn: sqlite3.Connection, which: CaseFilter, limit: int | None,
              factors: dict[str, float] | None = None) -> Iterator[dict]:
    """The matching cases, open before ended, most revenue at risk first (`at_risk_order`), with customer name and
    email; all of them, streamed, when limit is None."""
    where, params = which.where()
    rank, rank_params = at_risk_order(factors)
    keys = ("" if which.only_open else "{p}is_open DESC, ") + \
        "{p}at_risk_rank IS NULL, {p}at_risk_rank, {p}currency, {p}first_failed_at, {p}id"
    # Ascending rank, ties by currency code, then as before. A NULL (no rate) sorts first ascending: put it last.
    page = f"""SELECT id, is_open, at_risk_rank, currency, first_failed_at FROM (
                 SELECT id, currency, first_failed_at, {_OPEN} AS is_open, {rank} AS at_risk_rank
                 FROM cases WHERE {where})
               ORDER BY {keys.format(p="")}"""
    params = [*rank_params, *params]
    if limit is not None:
        page += " LIMIT ?"
        params = [*params, limit]
    cursor = conn.execute(
        f"""SELECT c.invoice_id, c.customer_id, cu.name AS customer_name, cu.email AS customer_email,
                   c.amount_remaining, c.currency, c.failure_type, c.decline_code, c.segment, c.sequence, c.state,
                   c.with_person, c.opened_at, c.first_failed_at, c.last_action, c.next_step, c.next_due_at,
                   c.held_because, c.closed_as
            FROM ({page}) AS p
            JOIN cases c ON c.id = p.id
            LEFT JOIN customers cu ON cu.id = c.customer_id
            ORDER BY {keys.format(p="p.")}""", params)
    names = [d[0] for d in cursor.description]
    for row in cursor:
        yield dict(zip(names, row))


def case_count(conn: sqlite3.Connection, which: CaseFilter) -> int:
    if not which.narrowed:
        states = "" if which.include_ended else f"WHERE {_OPEN}"
        return conn.execute(f"SELECT coalesce(sum(cases), 0) FROM report_cases {states}").fetchone()[0]
    where, params = which.where()
    return conn.execute(f"SELECT count(*) FROM cases WHERE {where}", params).fetchone()[0]


def revenue_at_risk(conn: sqlite3.Connection, which: CaseFilter = CaseFilter()) -> dict[str, int]:
    """Amount remaining on the matching open and paused cases, per currency."""
    if not which.narrowed:
        rows = conn.execute(f"SELECT currency, sum(remaining) FROM report_cases WHERE {_OPEN} "
                            "GROUP BY currency HAVING sum(cases) > 0 ORDER BY currency")
    else:
        where, params = which.where()
        rows = conn.execute(f"SELECT currency, sum(amount_remaining) FROM cases WHERE {where} AND {_OPEN} "
                            "GROUP BY currency ORDER BY currency", params)
    return {currency: amount for currency, amount in rows}


def attention_counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(actions with an unknown outcome, failed actions awaiting a retry), from the partial index on status: its
    condition as migration m116 writes it, and as a ledger not migrated yet has it (a read-only preview)."""
    row = conn.execute("SELECT coalesce(sum(status = 'unknown'), 0), coalesce(sum(status = 'failed'), 0) "
                       "FROM actions WHERE (status = 'failed' OR status = 'claimed' OR status = 'unknown') "
                       "AND status IN ('failed', 'claimed', 'unknown')").fetchone()
    return row[0], row[1]


def unknown_actions(conn: sqlite3.Connection) -> list[dict]:
    """Actions whose outcome is unknown (a tick stopped between claim and result), oldest first: each waits for a
    person (`dunctl case resolve`), so there are few. From the partial index on status."""
    cursor = conn.execute("""SELECT c.invoice_id, a.step_id, a.action FROM actions a JOIN cases c ON c.id = a.case_id
                             WHERE a.status = 'unknown' ORDER BY a.id""")
    return [{"invoice_id": invoice_id, "step_id": step_id, "action": action} for invoice_id, step_id, action in cursor]
