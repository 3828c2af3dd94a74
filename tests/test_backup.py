"""`dunctl backup PATH`: a consistent copy through SQLite's backup API, even while another process writes."""

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

from tests.helpers import at, cli, failed_invoice, open_engine_ledger, seed, starter


def ledger_with_cases(tmp_path, invoices: int = 20):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i:02d}", customer_id=f"cus_{i:02d}") for i in range(invoices)])
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    return config


def cases_in(path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return conn.execute("SELECT count(*) FROM cases").fetchone()[0]
    finally:
        conn.close()


def test_backup_writes_a_private_copy_that_opens_and_refuses_to_overwrite(tmp_path):
    config = ledger_with_cases(tmp_path)
    target = tmp_path / "backups" / "dunctl-2026-11-02.db"
    target.parent.mkdir()
    result = cli(config, "backup", str(target), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(target)
    assert cases_in(target) == 20
    assert oct(target.stat().st_mode & 0o777) == "0o600"  # it holds customer emails, like the ledger

    before = target.read_bytes()
    again = cli(config, "backup", str(target))
    assert again.exit_code == 2 and "already exists" in again.stderr and "--force" in again.stderr
    assert target.read_bytes() == before
    assert cli(config, "backup", str(target), "--force").exit_code == 0
    assert cases_in(target) == 20
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary file left behind


def test_backup_to_a_missing_directory_or_onto_the_ledger_is_refused(tmp_path):
    config = ledger_with_cases(tmp_path, invoices=2)
    missing = cli(config, "backup", str(tmp_path / "nope" / "copy.db"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    onto = cli(config, "backup", str(tmp_path / "dunctl.db"), "--force")
    assert onto.exit_code == 2 and "is the ledger itself" in onto.stderr


WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE cases SET segment = 'half-written'")
    conn.execute("DELETE FROM cases WHERE invoice_id > 'in_10'")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.execute("COMMIT")
    print("committed", flush=True)
""")


def test_backup_while_another_process_holds_a_write_transaction(tmp_path):
    config = ledger_with_cases(tmp_path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "dunctl.db"), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        result = cli(config, "backup", str(tmp_path / "copy.db"))
        assert result.exit_code == 0, result.output
        assert writer.poll() is None, "the backup must not wait for the writer"
    finally:
        writer.wait(timeout=30)
    # The copy is the ledger as it was before the writer's transaction: none of it, not half of it.
    conn = sqlite3.connect(tmp_path / "copy.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*), count(DISTINCT segment) FROM cases").fetchone() == (20, 1)
    assert conn.execute("SELECT count(*) FROM cases WHERE segment = 'half-written'").fetchone()[0] == 0
    conn.close()
    assert cases_in(tmp_path / "dunctl.db") == 11  # the writer did commit, after the copy


def done_in(path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM actions WHERE status = 'done'").fetchone()[0]
    finally:
        conn.close()


def test_backup_while_a_tick_runs_in_another_process(tmp_path):
    from tests.test_concurrency import SlowSmtpServer

    with SlowSmtpServer(delay=0.04) as smtp:   # 80 emails take the tick a few seconds: the copies land mid-tick
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host,
                                                         "port": smtp.port}})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i:03d}", customer_id=f"cus_{i:03d}") for i in range(80)])
        ledger.close()
        tick = subprocess.Popen([sys.executable, "-m", "dunctl", "-c", str(config), "tick", "--no-sync", "--now",
                                 at("31m").isoformat()], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "160"})
        copies = []
        try:
            while not smtp.received and tick.poll() is None:   # the copies start once the tick sends
                time.sleep(0.02)
            while tick.poll() is None and len(copies) < 10:
                target = tmp_path / f"copy-{len(copies)}.db"
                before = done_in(tmp_path / "dunctl.db")      # committed when the backup starts (in the WAL too)
                result = cli(config, "backup", str(target))
                assert result.exit_code == 0, result.output
                copies.append((target, before, done_in(tmp_path / "dunctl.db")))
                time.sleep(0.2)
        finally:
            tick.wait(timeout=120)
    assert tick.returncode == 0, tick.stderr
    # some copies were taken while the tick was sending, after it had recorded some results (a plain copy of the
    # file, without its write-ahead log, misses those: it holds none of this tick's work)
    assert any(0 < before and after < 80 for _, before, after in copies), copies
    for copy, before, after in copies:
        conn = sqlite3.connect(copy)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # every case in a copy has its notice recorded or not yet claimed: a copy never holds half a case
        orphans = conn.execute("SELECT count(*) FROM cases c WHERE NOT EXISTS "
                               "(SELECT 1 FROM invoices i WHERE i.id = c.invoice_id)").fetchone()[0]
        assert orphans == 0
        conn.close()
        assert before <= done_in(copy) <= after, (copy, before, after)   # the ledger as it was during the backup
