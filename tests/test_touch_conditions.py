"""The conditions SQLite evaluates for every row written to actions (the partial index actions_attention's, the
report triggers' WHEN) have no IN list (m116): SQLite builds a temporary b-tree for `x IN (<more than two
constants>)` every time such a condition runs, three times for each email a tick sends. The spelled-out
conditions must say what the IN lists said, for every row (tests/test_report_rollups.py checks the rollups the
triggers keep on random ledgers), and the queries that read the index must still read it."""

from __future__ import annotations

import itertools
import sqlite3

from dunctl.ledger import Ledger
from dunctl.ledger.migrations import _DONE_TOUCH, _DONE_TOUCH_EQUALS, ATTENTION
from dunctl.ledger.views.status import attention_counts


def test_no_condition_evaluated_per_row_of_actions_has_an_in_list(tmp_path):
    ledger = Ledger.open(tmp_path / "ledger.db")
    found = ledger.conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'actions' "
                                "AND (type = 'trigger' OR sql LIKE '% WHERE %')").fetchall()
    ledger.close()
    assert sorted(kind for kind, *_ in found).count("trigger") == 6
    assert "actions_attention" in {name for _, name, _ in found}
    for kind, name, sql in found:
        condition = sql.split(" WHEN " if kind == "trigger" else " WHERE ", 1)[1].split(" BEGIN", 1)[0]
        assert " IN (" not in condition, name


def test_the_attention_counts_still_read_the_partial_index(tmp_path):
    ledger = Ledger.open(tmp_path / "ledger.db")
    read = []
    ledger.conn.set_trace_callback(read.append)
    assert attention_counts(ledger.conn) == (0, 0)
    ledger.conn.set_trace_callback(None)
    plan = ledger.conn.execute("EXPLAIN QUERY PLAN " + read[-1]).fetchall()
    ledger.close()
    assert "actions_attention" in str(plan)


def test_the_spelled_out_condition_says_what_the_in_list_said():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE actions (status TEXT, action TEXT)")
    values = ("done", "failed", "claimed", "unknown", None, "email", "sms", "retry", "escalate", "slack", "Email", "")
    conn.executemany("INSERT INTO actions VALUES (?, ?)", itertools.product(values, repeat=2))
    old, new = _DONE_TOUCH.format(r=""), _DONE_TOUCH_EQUALS.format(r="")
    rows = conn.execute(f"SELECT status, action, {old}, {new} FROM actions").fetchall()
    assert len(rows) == len(values) ** 2
    assert all(was == now for _, _, was, now in rows)
    assert sum(now == 1 for *_, now in rows) == 4    # done, and one of the four touches
    was = "status IN ('failed', 'claimed', 'unknown')"
    rows = conn.execute(f"SELECT {was}, {ATTENTION} FROM actions").fetchall()
    assert all(old == new for old, new in rows) and sum(new == 1 for _, new in rows) == 3 * len(values)
