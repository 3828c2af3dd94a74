"""What waits for a tick, in one statement: the look each part of a tick takes before its own work.

A tick asks the ledger a dozen small questions (claims a dead tick left, holds ending, signals or invoices to
reconcile, cases due, follow-ups, notices to plan or send, actions waiting for a person). Asked one by one, an idle
tick was a dozen statements and the Python around each; here they are the scalar subqueries of one, each reading
the partial index its own query reads. The answers hold while nothing is written: the tick asks again (one
statement) only after a write (`Ledger.conn.total_changes` moved), so in a tick that does nothing they are taken
once, and a part that finds work still reads its rows with its own query.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import NamedTuple

from dunctl.clock import iso
from dunctl.ledger.receivables import HOLDS_TO_END
from dunctl.ledger.sql import ENDED_STATES


class Waiting(NamedTuple):
    """One look at what waits (each a bool but `unknown`, a count), and the connection's total_changes then. A part
    is None when a write since the look may have changed it (TickContext.wrote): asked again."""

    claimed_actions: bool     # actions claimed by a tick that died (journal settle)
    claimed_notices: bool     # notices claimed by a tick that died
    holds_end: bool           # a hold ends, or its end waits to be applied (receivables/tick.py)
    signals: bool             # a signal waits to be applied
    invoices: bool            # an invoice waits to be reconciled
    cases: bool               # an open case is due
    follow_ups: bool          # an ended case's follow-up is due again (Ledger.due_follow_ups)
    plan: bool                # a subscription's notices are due to be planned
    notices: bool             # a notice is due to be sent
    unknown: int              # actions waiting for a person
    changes: int


# Ledger.due_follow_ups's two parts (parameters :now, :tries, :failed): one waiting until now, or a system effect
# that failed, with tries left, last tried before :failed. Both read partial indexes.
FOLLOW_UPS_WAITING = "actions a INDEXED BY actions_waiting WHERE a.status = 'waiting' AND a.due_at <= :now"
FOLLOW_UPS_FAILED = """actions a INDEXED BY actions_attention JOIN cases c ON c.id = a.case_id
    WHERE a.status IN ('failed', 'claimed', 'unknown') AND a.status = 'failed' AND a.kind = 'system'
      AND a.tries < :tries AND a.finished_at <= :failed
      AND c.state = 'recovered' AND (a.step_id = 'recovered' OR a.step_id LIKE 'lift-%')"""

# Each part is the EXISTS of the query the part runs itself (same WHERE, same index), so the two agree.
_PARTS = {
    "claimed_actions": "EXISTS (SELECT 1 FROM actions INDEXED BY actions_claimed WHERE status = 'claimed')",
    "claimed_notices": "EXISTS (SELECT 1 FROM notices INDEXED BY notices_claimed WHERE status = 'claimed')",
    "holds_end": f"""EXISTS (SELECT 1 FROM {HOLDS_TO_END.replace("?", ":now", 1).format(", ".join(
        f":s{n}" for n in range(len(ENDED_STATES))))})
      OR EXISTS (SELECT 1 FROM signals WHERE applied = 0 AND kind = 'hold_ended')""",
    "signals": "EXISTS (SELECT 1 FROM signals WHERE applied = 0)",
    "invoices": "EXISTS (SELECT 1 FROM invoices WHERE pending = 1)",
    "cases": "EXISTS (SELECT 1 FROM cases INDEXED BY cases_due WHERE state = 'open' AND next_due_at <= :now)",
    "follow_ups": f"EXISTS (SELECT 1 FROM {FOLLOW_UPS_WAITING}) OR EXISTS (SELECT 1 FROM {FOLLOW_UPS_FAILED})",
    "plan": "EXISTS (SELECT 1 FROM subscriptions INDEXED BY subscriptions_notices_due WHERE notices_due_at <= :now)",
    "notices": "EXISTS (SELECT 1 FROM notices INDEXED BY notices_due WHERE next_due_at <= :now)",
    "unknown": "(SELECT count(*) FROM actions INDEXED BY actions_unknown WHERE status = 'unknown')",
}
assert tuple(_PARTS) == Waiting._fields[:-1]
_WAITING = "SELECT " + ",\n    ".join(_PARTS.values())
_ONE = {what: f"SELECT {sql}" for what, sql in _PARTS.items()}
_STATES = {f"s{n}": state for n, state in enumerate(ENDED_STATES)}


def look(conn: sqlite3.Connection, params: dict) -> Waiting:
    """What waits now (`params`: this module's `params`)."""
    row = conn.execute(_WAITING, params).fetchone()
    return Waiting(*map(bool, row[:-1]), row[-1], conn.total_changes)


def ask(conn: sqlite3.Connection, what: str, params: dict):
    """One part of `look` (a field of Waiting) alone: a third to a tenth of the whole look's cost, for a part
    asked after a write when few parts are left to ask."""
    value = conn.execute(_ONE[what], params).fetchone()[0]
    return value if what == "unknown" else bool(value)


def params(now: datetime, failed_before: datetime, max_tries: int) -> dict:
    """The parameters of a look or an ask (`failed_before`, `max_tries`: as for Ledger.due_follow_ups), made once
    for all of a tick's questions (2-3 a tick; a demo asks 5,000)."""
    return {"now": iso(now), "failed": iso(failed_before), "tries": max_tries, **_STATES}
