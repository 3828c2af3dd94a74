"""How `dunctl status` scales with the number of open cases: 100k open cases next to 1k, as ratios.

    .venv/bin/python bench/bench_status.py [--large 100000] [--small 1000] [--repeat 5]

Builds two ledgers of open cases (customers, invoices and cases written inside SQLite, the rollup triggers firing
as in production), then runs each command as a fresh process the way a person or a script does, and prints the
median wall time, CPU time and peak resident memory of each size, and the large/small ratio. Goals (issue 9): the
default page "in well under a second" whatever the size; `--json` and `--all` streamed (memory flat in N).
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.ledger import Ledger  # noqa: E402

NOW = "2026-12-01T00:00:00Z"


def build(directory: Path, cases: int) -> Path:
    ledger_path = directory / "dunctl.db"
    subprocess.run([*dunctl(), "init", str(directory)], check=True, stdout=subprocess.DEVNULL)
    Ledger.open(ledger_path).close()
    db = sqlite3.connect(ledger_path)
    db.execute("PRAGMA synchronous = OFF")
    with db:
        db.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {cases})
            INSERT INTO customers(id, name, email, updated_at)
            SELECT 'cus_' || i, 'Customer ' || i || ' GmbH', 'billing' || i || '@example.com', '{NOW}' FROM n""")
        db.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {cases})
            INSERT INTO invoices(id, customer_id, currency, amount_due, amount_paid, amount_remaining, status,
                                 created_at, synced_at, pending)
            SELECT 'in_1Q' || printf('%022d', i), 'cus_' || i, CASE i % 4 WHEN 0 THEN 'eur' ELSE 'usd' END,
                   100 + (i * 7919) % 500000, 0, 100 + (i * 7919) % 500000, 'open', '{NOW}', '{NOW}', 0 FROM n""")
        db.execute("""
            INSERT INTO cases(invoice_id, customer_id, currency, amount_due, amount_remaining, segment, sequence,
                              sequence_hash, sequence_def, failure_type, first_failure_type, decline_code, attempts,
                              state, first_failed_at, opened_at, next_step, next_due_at, last_action)
            SELECT id, customer_id, currency, amount_due, amount_remaining,
                   CASE rowid % 3 WHEN 0 THEN 'enterprise' ELSE 'default' END,
                   CASE rowid % 3 WHEN 0 THEN 'high-value' ELSE 'standard' END, 'h', '{}',
                   CASE rowid % 5 WHEN 0 THEN 'card_hard' ELSE 'card_soft' END,
                   CASE rowid % 5 WHEN 0 THEN 'card_hard' ELSE 'card_soft' END,
                   CASE rowid % 5 WHEN 0 THEN 'stolen_card' ELSE 'insufficient_funds' END, 1,
                   CASE rowid % 10 WHEN 0 THEN 'paused' ELSE 'open' END,
                   strftime('%Y-%m-%dT%H:%M:%SZ', '2026-11-01', '+' || (rowid * 37 % 2592000) || ' seconds'),
                   '2026-11-01T00:00:00Z', 'reminder',
                   strftime('%Y-%m-%dT%H:%M:%SZ', '2026-12-01', '+' || (rowid * 53 % 604800) || ' seconds'),
                   'notice: done'
            FROM invoices""")
    db.execute("ANALYZE")
    db.close()
    return directory / "dunctl.yaml"


def dunctl() -> list[str]:
    script = Path(sys.executable).with_name("dunctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dunctl"]


def run(argv: list[str], cwd: Path) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MB, bytes written) of one process, from the kernel's accounting."""
    env = {**os.environ, "COLUMNS": "120", "LINES": "40"}
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    size = 0
    while chunk := process.stdout.read(1 << 16):
        size += len(chunk)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(argv)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, size


def median(values):
    return sorted(values)[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    commands = {"status (default page)": ["status", "--now", NOW],
                "status --json (every case)": ["status", "--json", "--now", NOW],
                "status --all (every case, table)": ["status", "--all", "--now", NOW]}
    results: dict[tuple[str, int], tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (args.small, args.large):
            directory = Path(tmp) / str(size)
            directory.mkdir()
            start = time.perf_counter()
            config = build(directory, size)
            print(f"built {size:,} open cases in {time.perf_counter() - start:.1f} s")
            for name, argv in commands.items():
                repeat = args.repeat if "default" in name else max(1, args.repeat // 2)
                runs = [run([*dunctl(), "-c", str(config), *argv], directory) for _ in range(repeat)]
                results[(name, size)] = tuple(median([r[k] for r in runs]) for k in range(4))
    print(f"\n{'command':34} {'open cases':>10} {'wall':>8} {'CPU':>8} {'peak RSS':>9} {'output':>9}")
    for name in commands:
        for size in (args.small, args.large):
            wall, cpu, rss, size_out = results[(name, size)]
            print(f"{name:34} {size:>10,} {wall:7.2f}s {cpu:7.2f}s {rss:7.0f}MB {size_out / 1e6:7.2f}MB")
        small, large = results[(name, args.small)], results[(name, args.large)]
        print(f"{'':34} {'ratio':>10} {large[0] / small[0]:7.2f}x {large[1] / small[1]:7.2f}x "
              f"{large[2] / small[2]:7.2f}x   ({args.large // args.small}x the cases)")
    page = results[("status (default page)", args.large)][0]
    print(f"\ndefault page on {args.large:,} open cases: {page:.2f} s wall (goal: well under a second)")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()} {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
