"""What a tick reads again, and what it builds again (issue #25): the invoices a sync left pending once a look, a
planned case's actions only where its effects changed them."""

from __future__ import annotations

from datetime import timedelta

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0, failed_invoice, seed, starter


def test_the_pending_invoices_are_read_once_a_look(tmp_path):
    config = load_config(starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "outbox"}}))
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        statements: list[str] = []
        ledger.conn.set_trace_callback(statements.append)
        result = run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(minutes=5), sync=False)
        ledger.conn.set_trace_callback(None)
        assert result.opened        # the failed invoice opened its case
        assert sum(1 for s in statements if s.startswith("SELECT i.*, c.id AS case_id")) == 1
    finally:
        ledger.close()


def test_a_planned_cases_unchanged_actions_are_kept_and_a_changed_one_read_again(tmp_path):
    """After a batch's effects, a case is read again (`bundles(planned=...)`): its actions the effects left as
    they were are the records already built, like its invoice; one that changed is built from its new row."""
    config = load_config(starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "outbox"}}))
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        run_tick(ledger, config, None, build_channels(config, {}), T0 + timedelta(hours=1), sync=False)
        (case_id,) = ledger.cases.open_ids()
        before = ledger.cases.bundles([case_id])[case_id]
        assert before.actions
        again = ledger.cases.bundles([case_id], planned={case_id: before})[case_id]
        assert all(a is b for a, b in zip(again.actions, before.actions, strict=True))
        first = before.actions[0]
        ledger.conn.execute("UPDATE actions SET tries = tries + 1 WHERE id = ?", [first.id])
        changed = ledger.cases.bundles([case_id], planned={case_id: before})[case_id].actions[0]
        assert changed is not first and changed.tries == first.tries + 1
    finally:
        ledger.close()
