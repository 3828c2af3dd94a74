"""The triggers on actions test their condition without an IN list (m115): SQLite builds a temporary b-tree for
`x IN (<more than two constants>)` every time a trigger's WHEN runs, that is for every result a tick records.
The spelled-out conditions must say what the IN lists said, for every row (tests/test_report_rollups.py checks
the rollups they keep on random ledgers)."""

from __future__ import annotations

import itertools
import sqlite3

from dunctl.ledger import Ledger
from dunctl.ledger.migrations import _DONE_TOUCH, _DONE_TOUCH_EQUALS


def test_no_trigger_on_actions_tests_an_in_list_in_its_condition(tmp_path):
    ledger = Ledger.open(tmp_path / "ledger.db")
    triggers = ledger.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                                   "AND tbl_name = 'actions'").fetchall()
    ledger.close()
    assert len(triggers) == 6
    for name, sql in triggers:
        condition = sql.split(" WHEN ", 1)[1].split(" BEGIN", 1)[0]
        assert " IN (" not in condition, name


def test_the_spelled_out_condition_says_what_the_in_list_said():
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE actions (status TEXT, action TEXT)")
    values = ("done", "failed", None, "email", "sms", "retry", "escalate", "slack", "Email", "")
    conn.executemany("INSERT INTO actions VALUES (?, ?)", itertools.product(values, repeat=2))
    old, new = _DONE_TOUCH.format(r=""), _DONE_TOUCH_EQUALS.format(r="")
    rows = conn.execute(f"SELECT status, action, {old}, {new} FROM actions").fetchall()
    assert len(rows) == len(values) ** 2
    assert all(was == now for _, _, was, now in rows)
    assert sum(now == 1 for *_, now in rows) == 4    # done, and one of the four touches
