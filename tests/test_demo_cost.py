"""What keeps the demo's hourly ticks cheap (issue #25): a tick pays for what changed, not for what exists.
Counted (SQL statements, compilations), not timed."""

from __future__ import annotations

from datetime import timedelta

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0, failed_invoice, seed, starter


def reconciled(ledger: Ledger, config, now) -> int:
    """How many times one tick looked for changes to reconcile (each look reads the pending signals)."""
    statements: list[str] = []
    ledger.conn.set_trace_callback(statements.append)
    try:
        run_tick(ledger, config, None, build_channels(config, {}), now, sync=False)
    finally:
        ledger.conn.set_trace_callback(None)
    return sum(1 for s in statements if s.startswith("SELECT * FROM signals WHERE applied = 0"))


def test_a_tick_with_nothing_due_reconciles_once_and_one_that_acted_twice(tmp_path):
    config = load_config(starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "outbox"}}))
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        # the case opens and its first email is due at 1h: the tick acts, then reconciles what its effects changed
        assert reconciled(ledger, config, T0 + timedelta(hours=1)) == 2
        # an hour later nothing is due and nothing changed: one look, not a second one after no effects
        assert reconciled(ledger, config, T0 + timedelta(hours=2)) == 1
    finally:
        ledger.close()

