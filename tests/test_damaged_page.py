"""Issue 20 (smaller): a damaged page that no query happens to read passed `status`, `tick` and `report`. `check`
and the start of every tick run SQLite's quick_check, and a damaged ledger stops with exit 2 and the way back
(restore from a backup, `dunctl backup`)."""

import sqlite3

from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, seed, starter


def damaged_ledger(tmp_path):
    """A real ledger after a tick, with the root page of one index (invoices by customer) overwritten: the
    tables still read, so only a check of every page finds it."""
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(3)],
         customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(3)])
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat()).exit_code == 0
    path = tmp_path / "dunctl.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'invoices_customer'").fetchone()[0]
    db.close()
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\x00")             # not a b-tree page type
    return config


def test_check_and_tick_refuse_a_ledger_with_a_damaged_page(tmp_path):
    config = damaged_ledger(tmp_path)
    before = (tmp_path / "dunctl.db").read_bytes()

    ticked = cli(config, "tick", "--no-sync", "--now", at("3h").isoformat())
    assert ticked.exit_code == 2, ticked.output
    assert "is damaged" in ticked.stderr and "dunctl backup" in ticked.stderr and "Traceback" not in ticked.output
    assert (tmp_path / "dunctl.db").read_bytes() == before      # nothing was written

    checked = cli(config, "check")
    assert checked.exit_code == 2, checked.output
    assert "is damaged" in checked.output and "quick_check" in checked.output
