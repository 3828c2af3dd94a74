"""What a process costs before it does any work: CPU time of `dunctl --help` and of an idle `dunctl tick`.

    .venv/bin/python bench/bench_startup.py [--repeat 9]

Runs each command as a fresh process (the way cron runs it) `--repeat` times and prints the median user+system
CPU time, next to `python -c pass` on the same interpreter, as a ratio. The idle tick is `dunctl tick --no-sync`
on an empty ledger with the starter config `dunctl init` writes. Goal (issue 9): idle tick <= 0.25 s CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_TICK_SECONDS = 0.25


def dunctl_command() -> list[str]:
    """The console script next to this interpreter (what cron runs), else `python -m dunctl`."""
    script = Path(sys.executable).with_name("dunctl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "dunctl"]


def cpu_seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """User + system CPU time of one child process, from the kernel's accounting for exactly that child."""
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    process.stderr.close()
    if process.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {process.returncode}: {stderr}")
    return usage.ru_utime + usage.ru_stime


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    dunctl = dunctl_command()
    # Bytecode cached as an installed dunctl has it (pip compiles on install): with PYTHONDONTWRITEBYTECODE set (as
    # in this project's sessions) an editable install recompiles every dunctl module in every process, 40-60 ms
    # that cron never pays. The warm-up runs below write the cache.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STRIPE_", "DUNCTL_")) and k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([*dunctl, "init", str(work)], check=True, stdout=subprocess.DEVNULL, env=env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "dunctl --help": [*dunctl, "--help"],
            "dunctl tick --no-sync (idle, empty ledger)": [*dunctl, "tick", "--no-sync",
                                                           "--now", "2026-11-25T12:00:00Z"],
        }
        cpu_seconds(commands["dunctl tick --no-sync (idle, empty ledger)"], work, env)   # creates the ledger
        cpu_seconds(commands["dunctl --help"], work, env)
        results = {name: median([cpu_seconds(argv, work, env) for _ in range(args.repeat)])
                   for name, argv in commands.items()}
    base = results["python -c pass"]
    print(f"CPU time per process, median of {args.repeat} runs (user + system):")
    for name, seconds in results.items():
        ratio = "" if name.startswith("python") else f"   {seconds / base:5.1f}x python -c pass"
        print(f"  {name:45} {seconds * 1000:7.0f} ms{ratio}")
    tick = results["dunctl tick --no-sync (idle, empty ledger)"]
    print(f"idle tick: {tick:.3f} s CPU, goal <= {GOAL_TICK_SECONDS} s: {'met' if tick <= GOAL_TICK_SECONDS else 'NOT met'}"
          f" ({tick / GOAL_TICK_SECONDS:.2f}x the goal)")
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()} {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
