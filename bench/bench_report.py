"""How long `dunctl report` takes on a big ledger, and how much memory it needs.

    .venv/bin/python bench/bench_report.py [--cases 1000000] [--keep PATH] [--reuse PATH] [--proposed-index]

Builds a ledger of N cases (default one million) with four actions each, generated inside SQLite by a recursive
query (seconds, not minutes), then times `build_report` with every breakdown (and for one quarter, and the headline alone), and reports peak
Python memory (tracemalloc) and the process's peak resident size. Target: the full report under 2 s.
`--proposed-index` adds the covering index proposed for a migration (see docs/metrics.md, "Speed").
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.ledger import Ledger  # noqa: E402
from dunctl.report import Period, build_report, headline  # noqa: E402

NOW = datetime(2026, 12, 31, tzinfo=timezone.utc)

# The index proposed for a migration (docs/metrics.md, "Speed"): the cube's GROUP BY streams from it in order,
# without reading or sorting the table. `--proposed-index` adds it when the migrations do not (yet).
PROPOSED_INDEX = """CREATE INDEX IF NOT EXISTS cases_report ON cases(segment, first_failure_type, sequence, currency,
    substr(first_failed_at, 1, 7), state, first_failed_at, recovered_at, amount_due, amount_paid_at_open,
    amount_recovered, amount_remaining, with_person, attempts, recovered_attempt)"""

# Pseudo-random but deterministic columns from the row number i: h(i, salt) is a well-mixed integer.
_H = "((({i} * 2654435761 + {salt} * 40503) % 4294967296) * 2246822519 % 4294967296)"


def _h(salt: int, i: str = "i") -> str:
    return _H.format(i=i, salt=salt)


def build(path: Path, cases: int) -> None:
    Ledger.open(path).close()          # the schema, exactly as the migrations make it
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA foreign_keys = OFF")
    states = "CASE {h} % 20 WHEN 0 THEN 'open' WHEN 1 THEN 'paused' WHEN 2 THEN 'exhausted' " \
             "WHEN 3 THEN 'written_off' WHEN 4 THEN 'voided' WHEN 5 THEN 'closed' " \
             "WHEN 6 THEN 'exhausted' ELSE 'recovered' END".format(h=_h(1))
    with db:
        db.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {cases}),
            base AS (
              SELECT i, {states} AS state,
                     strftime('%Y-%m-%dT%H:%M:%SZ', '2026-01-01', '+' || ({_h(2)} % 31536000) || ' seconds')
                       AS first_failed_at,
                     {_h(3)} % 40 * 86400 / 1.3 AS to_recovery,
                     CASE {_h(4)} % 10 WHEN 0 THEN 'eur' WHEN 1 THEN 'gbp' ELSE 'usd' END AS currency,
                     1000 + {_h(5)} % 200000 AS amount_due
              FROM n)
            INSERT INTO cases(id, invoice_id, customer_id, subscription_id, currency, amount_due,
                              amount_paid_at_open, amount_remaining, amount_recovered, segment, sequence,
                              sequence_hash, sequence_def, failure_type, first_failure_type, attempts, state,
                              with_person, first_failed_at, opened_at, closed_at, recovered_at,
                              recovered_attempt, recovered_by, churned)
            SELECT i, 'in_' || i, 'cus_' || (i % 700000), 'sub_' || (i % 700000), currency, amount_due, 0,
                   CASE WHEN state IN ('open', 'paused') THEN amount_due ELSE 0 END,
                   CASE WHEN state = 'recovered' THEN amount_due ELSE 0 END,
                   CASE i % 4 WHEN 0 THEN 'enterprise' WHEN 1 THEN 'update-card' ELSE 'default' END,
                   CASE i % 4 WHEN 0 THEN 'high-value' WHEN 1 THEN 'update-payment-method' ELSE 'standard' END,
                   'h', '{{}}',
                   CASE i % 5 WHEN 0 THEN 'card_hard' WHEN 1 THEN 'card_update' ELSE 'card_soft' END,
                   CASE i % 5 WHEN 0 THEN 'card_hard' WHEN 1 THEN 'card_update' ELSE 'card_soft' END,
                   1 + i % 5, state, CASE WHEN state IN ('paused', 'closed') OR i % 11 = 0 THEN 1 ELSE 0 END,
                   first_failed_at, first_failed_at,
                   CASE WHEN state NOT IN ('open', 'paused')
                        THEN strftime('%Y-%m-%dT%H:%M:%SZ', first_failed_at, '+' || to_recovery || ' seconds') END,
                   CASE WHEN state = 'recovered'
                        THEN strftime('%Y-%m-%dT%H:%M:%SZ', first_failed_at, '+' || to_recovery || ' seconds') END,
                   CASE WHEN state = 'recovered' AND i % 3 > 0 THEN 1 + i % 5 END,
                   CASE WHEN state = 'recovered' THEN 'retry' END,
                   CASE WHEN state = 'exhausted' AND i % 3 = 0 THEN 1 ELSE 0 END
            FROM base""")
        # Four steps per case: notice at 1 h, retry at 1 d, reminder at 3 d, escalation at 15 d.
        for step, action, channel, offset in (("notice", "email", "email", 3600), ("retry-1", "retry", "stripe", 86400),
                                              ("reminder", "email", "email", 259200),
                                              ("escalate", "escalate", "slack", 1296000)):
            db.execute(f"""
                INSERT INTO actions(case_id, step_id, action, channel, status, due_at, finished_at,
                                    idempotency_key)
                SELECT id, '{step}', '{action}', '{channel}',
                       CASE WHEN id % 17 = 0 THEN 'failed' ELSE 'done' END,
                       strftime('%Y-%m-%dT%H:%M:%SZ', first_failed_at, '+{offset} seconds'),
                       strftime('%Y-%m-%dT%H:%M:%SZ', first_failed_at, '+{offset + 60} seconds'),
                       id || ':{step}'
                FROM cases
                WHERE recovered_at IS NULL OR recovered_at > strftime('%Y-%m-%dT%H:%M:%SZ', first_failed_at,
                                                                      '+{offset} seconds')""")
        db.execute("""
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 699999)
            INSERT INTO subscriptions(id, customer_id, status, canceled_at)
            SELECT 'sub_' || i, 'cus_' || i, CASE WHEN i % 9 = 0 THEN 'canceled' ELSE 'active' END,
                   CASE WHEN i % 9 = 0 THEN strftime('%Y-%m-%dT%H:%M:%SZ', '2026-01-01', '+' || (i % 365) || ' days')
                   END
            FROM n""")
    db.execute("ANALYZE")
    db.close()


def measure(path: Path, repeat: int, proposed_index: bool) -> None:
    ledger = Ledger.open(path)
    if proposed_index:
        start = time.perf_counter()
        ledger.db.execute(PROPOSED_INDEX)
        ledger.db.execute("ANALYZE")
        print(f"proposed index cases_report present ({time.perf_counter() - start:.1f} s to add if missing)")
    else:
        has = ledger.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cases_report'").fetchone()
        print(f"proposed index cases_report: {'present' if has else 'absent'}")
    counts = ledger.db.execute("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM actions)").fetchone()
    print(f"ledger: {counts[0]:,} cases, {counts[1]:,} actions, {path.stat().st_size / 1e6:,.0f} MB")
    timings, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        report = build_report(ledger, NOW)
        timings.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    tracemalloc.start()
    build_report(ledger, NOW)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    h = report.headline
    print(f"report: best {min(timings):.2f} s, median {sorted(timings)[len(timings) // 2]:.2f} s "
          f"over {repeat} runs (all {len(report.dimensions)} breakdowns, curve, retry success); "
          f"CPU {sorted(cpu)[len(cpu) // 2]:.2f} s on two threads")
    print(f"memory: peak Python allocations {peak / 1e6:.2f} MB (tracemalloc); peak RSS {rss:.0f} MB")
    start = time.perf_counter()
    quarter = build_report(ledger, NOW, Period(datetime(2026, 4, 1, tzinfo=timezone.utc),
                                               datetime(2026, 7, 1, tzinfo=timezone.utc)))
    print(f"report for one quarter ({quarter.headline.failed_invoices:,} cases): "
          f"{time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    headline(ledger, NOW)
    print(f"headline alone (dunctl status): {time.perf_counter() - start:.2f} s")
    print(f"check: {h.failed_invoices:,} failed, {h.recovered:,} recovered, rate {h.recovery_rate}, "
          f"median {h.days_to_recovery.median} d, p90 {h.days_to_recovery.p90} d, "
          f"churn {h.churn.churned_subscriptions:,}/{h.churn.active_subscriptions:,}")
    print(f"machine: {platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows the figures above)")
    ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the ledger at this path and keep it")
    parser.add_argument("--reuse", type=Path, help="measure an existing ledger instead of building one")
    parser.add_argument("--proposed-index", action="store_true", help="add the proposed cases_report index first")
    args = parser.parse_args()
    if args.reuse:
        measure(args.reuse, args.repeat, args.proposed_index)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        if path.exists():
            sys.exit(f"{path} exists; use --reuse to measure it")
        start = time.perf_counter()
        build(path, args.cases)
        print(f"built in {time.perf_counter() - start:.1f} s")
        measure(path, args.repeat, args.proposed_index)


if __name__ == "__main__":
    main()
