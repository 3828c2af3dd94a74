"""How long `dunctl report` takes on a big ledger, and how much memory it needs.

    .venv/bin/python bench/bench_report.py [--cases 1000000] [--keep PATH] [--reuse PATH]

Builds a ledger of N cases (default one million) with four actions each, generated inside SQLite by a recursive
query (the rollup triggers fire on every insert, as in production), then times `build_report` with every
breakdown and with each `--by` alone, next to one raw aggregate that reads every case in the same run (the
ratio is the figure that matters across machines), checks the rollups against the raw-scan reference, and
reports peak Python memory and what the triggers add to ending a case. Goals (issue 9): the full report
<= 2 s and <= 1.5x the raw scan; each --by likewise; memory flat in N.
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
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.ledger import Ledger  # noqa: E402
from dunctl.ledger.migrations import rebuild_rollups  # noqa: E402
from dunctl.ledger.views.report import raw_full_scan  # noqa: E402
from dunctl.report import DIMENSIONS, Period, build_report, headline  # noqa: E402

NOW = datetime(2026, 12, 31, tzinfo=timezone.utc)

# Pseudo-random but deterministic columns from the row number i: h(i, salt) is a well-mixed integer.
_H = "((({i} * 2654435761 + {salt} * 40503) % 4294967296) * 2246822519 % 4294967296)"


def _h(salt: int, i: str = "i") -> str:
    return _H.format(i=i, salt=salt)


def build(path: Path, cases: int) -> None:
    """The schema exactly as the migrations make it; the bulk load runs without the rollup triggers and the
    rollups are then filled set-based, as migration m102 fills them for an existing ledger (the tests check
    that triggers and rebuild agree)."""
    Ledger.open(path).close()
    db = sqlite3.connect(path)
    triggers = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'report_%'"
                          ).fetchall()
    for name, _ in triggers:
        db.execute(f"DROP TRIGGER {name}")
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
        db.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {min(cases, 700000)})
            INSERT INTO subscriptions(id, customer_id, status, canceled_at)
            SELECT 'sub_' || i, 'cus_' || i, CASE WHEN i % 9 = 0 THEN 'canceled' ELSE 'active' END,
                   CASE WHEN i % 9 = 0 THEN strftime('%Y-%m-%dT%H:%M:%SZ', '2026-01-01', '+' || (i % 365) || ' days')
                   END
            FROM n""")
        rebuild_rollups(db)
        for _, sql in triggers:
            db.execute(sql)
        # The subscriptions above (one per customer) are the whole book: mark the ledger as pre-dunning's backfill leaves it
        # (every active subscription listed, the events cursor current), so the report counts churn against them
        # (`churn_denominator`); without this churn has no denominator and no rate.
        db.executemany("INSERT INTO sync_state(name, value) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                       [("billing_backfill_done", '1798675200'), ("cursor", '{"since": 1798675200}')])
    db.execute("ANALYZE")
    db.close()


def _timed(func, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def _peak_python_memory(func) -> float:
    tracemalloc.start()
    func()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1e6


def measure(path: Path, repeat: int) -> None:
    ledger = Ledger.open(path)
    conn = ledger.conn
    counts = conn.execute("SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM actions), "
                          "(SELECT count(*) FROM report_cases)").fetchone()
    print(f"ledger: {counts[0]:,} cases, {counts[1]:,} actions, {path.stat().st_size / 1e6:,.0f} MB; "
          f"{counts[2]:,} rows in the report_cases rollup")
    scan, _ = _timed(lambda: raw_full_scan(conn), repeat)
    print(f"reference: one raw aggregate over every case (full scan): {scan:.2f} s")
    print(f"{'what':52} {'best of ' + str(repeat):>10} {'vs scan':>8}   goal")
    build_report(ledger, NOW)                       # the attribution window is stored once; not timed
    full, report = _timed(lambda: build_report(ledger, NOW), repeat)
    print(f"{'report, every breakdown (rollups)':52} {full:8.3f} s {full / scan:7.2f}x   <= 2 s and <= 1.5x")
    for dimension in DIMENSIONS:
        seconds, _ = _timed(lambda: build_report(ledger, NOW, dimensions=[dimension]), repeat)
        print(f"{'report --by ' + dimension:52} {seconds:8.3f} s {seconds / scan:7.2f}x   <= 1.5x")
    quarter = Period(datetime(2026, 4, 1, 13, tzinfo=timezone.utc), datetime(2026, 7, 1, tzinfo=timezone.utc))
    seconds, _ = _timed(lambda: build_report(ledger, NOW, quarter), repeat)
    print(f"{'report for a quarter starting mid-day':52} {seconds:8.3f} s {seconds / scan:7.2f}x")
    seconds, _ = _timed(lambda: headline(ledger, NOW), repeat)
    print(f"{'headline alone (dunctl status)':52} {seconds:8.3f} s {seconds / scan:7.2f}x")
    raw, reference = _timed(lambda: build_report(ledger, NOW, rollup=False), 1)
    print(f"{'report from a raw scan (the reference path)':52} {raw:8.3f} s {raw / scan:7.2f}x")
    same = asdict(reference) == asdict(report)
    print(f"rollups == raw scan: {same}")
    rollup_mb = _peak_python_memory(lambda: build_report(ledger, NOW))
    print(f"memory: peak Python allocations of one report {rollup_mb:.2f} MB (tracemalloc); "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    h = report.headline
    print(f"check: {h.failed_invoices:,} failed, {h.recovered:,} recovered, recovered of failed {h.recovered_of_failed}, of ended {h.recovered_of_ended}, "
          f"median {h.days_to_recovery.median} d, p90 {h.days_to_recovery.p90} d, "
          f"churn {_churn(h.churn)}")
    _write_cost(conn)
    print(f"machine: {os.cpu_count()} CPUs, {_cpu_model()}, {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"load average {os.getloadavg()[0]:.2f} (other work on the machine slows the figures above)")
    ledger.close()


def _churn(churn) -> str:
    """Churned/active, or why the active count is unknown (a ledger reused from elsewhere may not know it)."""
    if churn.active_subscriptions is None:
        return f"{churn.churned_subscriptions:,} churned (rate unknown: {churn.unknown})"
    return f"{churn.churned_subscriptions:,}/{churn.active_subscriptions:,} ({churn.denominator})"


def _write_cost(conn: sqlite3.Connection, n: int = 20000) -> None:
    """What the triggers add to the tick's writes: ending n open cases, with and without the rollup triggers."""
    ids = [row[0] for row in conn.execute(f"SELECT id FROM cases WHERE state = 'open' LIMIT {n}")]
    if not ids:
        return
    sql = "UPDATE cases SET state = 'recovered', recovered_at = first_failed_at, amount_recovered = amount_due, " \
          "amount_remaining = 0 WHERE id = ?"
    timings = {}
    for label in ("with triggers", "without"):
        conn.execute("SAVEPOINT cost")
        if label == "without":
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                        "AND name LIKE 'report_case_%'").fetchall():
                conn.execute(f"DROP TRIGGER {name}")
        start = time.perf_counter()
        for case_id in ids:
            conn.execute(sql, [case_id])
        timings[label] = (time.perf_counter() - start) / len(ids)
        conn.execute("ROLLBACK TO cost")
        conn.execute("RELEASE cost")
    print(f"write cost: ending a case {timings['with triggers'] * 1e6:.0f} us with the rollup triggers, "
          f"{timings['without'] * 1e6:.0f} us without ({len(ids):,} cases, no commit)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build the ledger at this path and keep it")
    parser.add_argument("--reuse", type=Path, help="measure an existing ledger instead of building one")
    args = parser.parse_args()
    if args.reuse:
        measure(args.reuse, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.db"
        if path.exists():
            sys.exit(f"{path} exists; use --reuse to measure it")
        start = time.perf_counter()
        build(path, args.cases)
        print(f"built in {time.perf_counter() - start:.1f} s")
        measure(path, args.repeat)


if __name__ == "__main__":
    main()
