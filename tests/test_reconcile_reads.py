"""What reconciling reads (issue #25): the invoices a sync left pending are read, and built into records, once a
look, not once to see whether there are any and again to reconcile them."""

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
