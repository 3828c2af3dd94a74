"""Is `dunctl simulate` linear in customers? CPU (user + sys) of the process at 1,000 and at 3,000 customers (30
days each, the starter config), and their ratio next to the goal: 3x the customers, at most 3.3x the CPU (issue #25:
it was about quadratic, 53 s and 382 s, 7.2x).

    .venv/bin/python bench/bench_simulate.py [--customers 1000] [--factor 3] [--days 30] [--follow-up DAYS]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_demo import machine  # noqa: E402

DUNCTL = Path(sys.executable).with_name("dunctl")
SCRATCH = Path(__file__).resolve().parent / ".work"       # not /tmp: see the README's benchmarks
LINEAR = 1.1                                              # the ratio may exceed the customers' by 10%


def simulate_cpu(config: Path, customers: int, days: int, follow_up: int | None = None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    extra = [] if follow_up is None else ["--follow-up", str(follow_up)]
    subprocess.run([str(DUNCTL), "-c", str(config), "simulate", str(config), "--customers", str(customers),
                    "--days", str(days), *extra], capture_output=True, text=True, check=True, cwd=config.parent)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--factor", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--follow-up", type=int, help="days every case then gets (default: simulate's own); a "
                                                      "small run (the test's) shortens it")
    args = parser.parse_args()
    SCRATCH.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as scratch:
        subprocess.run([str(DUNCTL), "init", scratch], capture_output=True, check=True)
        config = Path(scratch) / "dunctl.yaml"
        small = simulate_cpu(config, args.customers, args.days, args.follow_up)
        large = simulate_cpu(config, args.customers * args.factor, args.days, args.follow_up)
    ratio, goal = large / small, args.factor * LINEAR
    print(f"dunctl simulate, {args.days} days: {args.customers} customers {small:.2f} s CPU, "
          f"{args.customers * args.factor} customers {large:.2f} s CPU")
    print(f"  ratio {ratio:.2f}x for {args.factor}x the customers, goal <= {goal:.1f}x (linear): "
          f"{'met' if ratio <= goal else 'MISSED'}")
    print(f"on {machine()}, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
