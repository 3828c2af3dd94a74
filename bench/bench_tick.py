"""How much a tick costs when a large ledger has little or nothing due.

    python bench/bench_tick.py [--cases 200000]

Builds a ledger of N open cases (none due), then times an idle tick and counts the SQL statements it runs, then
makes 100 cases due and times the tick that sends their emails (file transport). Prints the figures.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.clock import iso  # noqa: E402
from dunctl.config import load_config, sequence_definition, sequence_hash  # noqa: E402
from dunctl.tick import build_channels, run_tick  # noqa: E402
from dunctl.ledger import Ledger, _json  # noqa: E402
from tests.helpers import T0, starter  # noqa: E402


def build(directory: Path, cases: int) -> tuple[Path, Ledger]:
    config_path = starter(directory)
    config = load_config(config_path)
    ledger = Ledger.open(config.ledger_path)
    standard = config.sequences["standard"]
    definition, digest = _json(sequence_definition(standard)), sequence_hash(standard)
    first = iso(T0)
    later = iso(T0 + timedelta(days=2))
    with ledger.db.atomic():
        ledger.db.conn.executemany(
            "INSERT INTO customers(id, name, email, metadata, updated_at) VALUES (?, ?, ?, '{}', ?)",
            ((f"cus_{i}", f"Customer {i}", f"c{i}@example.com", first) for i in range(cases)))
        ledger.db.conn.executemany(
            """INSERT INTO invoices(id, customer_id, currency, amount_due, amount_paid, amount_remaining, status,
                 attempt_count, created_at, first_failed_at, failed_at, failure_type, hosted_invoice_url, synced_at,
                 pending) VALUES (?, ?, 'usd', 4900, 0, 4900, 'open', 1, ?, ?, ?, 'card_soft', ?, ?, 0)""",
            ((f"in_{i}", f"cus_{i}", first, first, first, f"https://pay.test/in_{i}", first) for i in range(cases)))
        ledger.db.conn.executemany(
            """INSERT INTO cases(invoice_id, customer_id, currency, amount_due, amount_remaining, segment, sequence,
                 sequence_hash, sequence_def, failure_type, first_failure_type, attempts, first_failed_at,
                 opened_at, next_step, next_due_at) VALUES (?, ?, 'usd', 4900, 4900, 'default', 'standard', ?, ?,
                 'card_soft', 'card_soft', 1, ?, ?, 'retry-1', ?)""",
            ((f"in_{i}", f"cus_{i}", digest, definition, first, first, later) for i in range(cases)))
    return config_path, ledger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_path, ledger = build(Path(tmp), args.cases)
        config = load_config(config_path)
        statements: list[str] = []
        ledger.db._tracer = lambda sql, params: statements.append(sql)
        now = T0 + timedelta(hours=1)
        started = time.perf_counter()
        result = run_tick(ledger, config, None, build_channels(config, {}), now, sync=False)
        idle = time.perf_counter() - started
        assert not result.did_something
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        ledger.db._tracer = None

        with ledger.db.atomic():
            ledger.db.execute("UPDATE cases SET next_due_at = ? WHERE id <= 100", [iso(T0)])
        started = time.perf_counter()
        result = run_tick(ledger, config, None, build_channels(config, {}), now, sync=False)
        busy = time.perf_counter() - started
        sent = sum(a.status == "done" for a in result.actions)
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
          f"{__import__('os').cpu_count()} cores")
    print(f"ledger: {args.cases:,} open cases, none due")
    print(f"idle tick: {idle * 1000:.1f} ms, {len(statements)} SQL statements ({len(reads)} reads)")
    print(f"tick with 100 cases due: {busy * 1000:.0f} ms, {sent} emails written ({busy / max(sent, 1) * 1000:.1f} ms each)")


if __name__ == "__main__":
    main()
