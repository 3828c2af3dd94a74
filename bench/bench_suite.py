"""CPU of the README's test command (user + sys, its child processes counted), next to its goal (issue #25:
<= 180 s on a 2-core machine, every test run).

    .venv/bin/python bench/bench_suite.py                       # the whole suite, as the README runs it
    .venv/bin/python bench/bench_suite.py tests/test_money.py   # a part of it (the goal is then not judged)

The tests run in a child pytest with the README's options (`-q --durations=20`) and no pytest cache, as on a clean
checkout; the CPU is what the child and everything it started used (getrusage of the children), so the test
processes each test starts are counted too. bench/README.md quotes the figure printed here.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

GOAL_SECONDS = 180.0
ROOT = Path(__file__).resolve().parent.parent


def run_suite(paths: list[str]) -> tuple[float, float, float, str, int]:
    """(user, sys, wall seconds, pytest's summary line, exit code) of one pytest run over `paths`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--durations=20", "-p", "no:cacheprovider",
                           *paths], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = next((line for line in reversed(done.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed|error)", line)), done.stdout[-300:] or done.stderr[-300:])
    return after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, wall, summary.strip("= "), \
        done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths", nargs="*", help="test files or node ids (default: the whole suite)")
    args = parser.parse_args()
    user, system, wall, summary, code = run_suite(args.paths)
    total = user + system
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"tests: {summary} ({wall:.0f} s wall)")
    if args.paths:
        print(f"suite CPU: {total:.1f} s ({user:.1f} user + {system:.1f} sys) for {' '.join(args.paths)}; the goal "
              f"(<= {GOAL_SECONDS:.0f} s) is for the whole suite")
    else:
        verdict = "met" if total <= GOAL_SECONDS else "MISSED"
        print(f"suite CPU: {total:.1f} s ({user:.1f} user + {system:.1f} sys), goal <= {GOAL_SECONDS:.0f} s: "
              f"{verdict} ({total / GOAL_SECONDS:.2f}x the goal)")
    sys.exit(code)


if __name__ == "__main__":
    main()
