"""Build a large ledger fast, straight through SQL (as the tick leaves it), for benchmarks and cost tests."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

from dunctl.clock import iso
from dunctl.config import load_config, sequence_definition, sequence_hash
from dunctl.ledger import Ledger
from dunctl.ledger.sql import to_json
from tests.helpers import T0, starter


SCRATCH = Path(__file__).resolve().parent / ".work"


def scratch() -> tempfile.TemporaryDirectory:
    """A scratch directory beside the benchmarks (git-ignored), not in /tmp: on the project's machine creating a
    file in /tmp costs 0.15-0.26 ms of CPU against 0.02 ms on the same disk elsewhere (measured with 1,000
    create+rename pairs), which would bill the outbox's file system to dunctl. A deployment keeps its outbox
    and ledger in its own directory, as here."""
    SCRATCH.mkdir(exist_ok=True)
    return tempfile.TemporaryDirectory(dir=SCRATCH)


def build(directory: Path, cases: int, actions_per_case: int = 3, due: int = 0) -> tuple[Path, Ledger]:
    """N open cases of the standard sequence with a few finished actions each; `due` of them due at T0+1h, the
    rest due in two days."""
    config_path = starter(directory)
    config = load_config(config_path)
    ledger = Ledger.open(config.ledger_path)
    standard = config.sequences["standard"]
    digest = sequence_hash(standard)
    first, later = iso(T0), iso(T0 + timedelta(days=2))
    conn = ledger.conn
    with ledger.transaction():
        conn.execute("INSERT INTO sequence_versions(hash, name, definition) VALUES (?, 'standard', ?)",
                     [digest, to_json(sequence_definition(standard))])
        conn.executemany(
            "INSERT INTO customers(id, name, email, metadata, updated_at) VALUES (?, ?, ?, '{}', ?)",
            ((f"cus_{i}", f"Customer {i}", f"c{i}@example.com", first) for i in range(cases)))
        conn.executemany(
            """INSERT INTO invoices(id, customer_id, currency, amount_due, amount_paid, amount_remaining, status,
                 attempt_count, created_at, first_failed_at, failed_at, failure_type, hosted_invoice_url, synced_at,
                 pending) VALUES (?, ?, 'usd', 4900, 0, 4900, 'open', 1, ?, ?, ?, 'card_soft', ?, ?, 0)""",
            ((f"in_{i}", f"cus_{i}", first, first, first, f"https://pay.test/in_{i}", first) for i in range(cases)))
        conn.executemany(
            """INSERT INTO cases(invoice_id, customer_id, currency, amount_due, amount_remaining, segment, sequence,
                 sequence_hash, sequence_def, failure_type, first_failure_type, attempts, first_failed_at,
                 opened_at, next_step, next_due_at) VALUES (?, ?, 'usd', 4900, 4900, 'default', 'standard', ?, '',
                 'card_soft', 'card_soft', 1, ?, ?, ?, ?)""",
            ((f"in_{i}", f"cus_{i}", digest, first, first, "notice" if i < due else "retry-1",
              iso(T0 + timedelta(minutes=30)) if i < due else later) for i in range(cases)))
        steps = ["x-1", "x-2", "x-3", "x-4", "x-5", "x-6"][:actions_per_case]
        conn.executemany(
            """INSERT INTO actions(case_id, kind, step_id, action, status, due_at, finished_at, idempotency_key)
               VALUES (?, 'step', ?, 'email', 'done', ?, ?, ?)""",
            ((case_id, step, first, first, f"k-{case_id}-{step}") for case_id in range(due + 1, cases + 1)
             for step in steps))
    return config_path, ledger
