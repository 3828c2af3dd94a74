"""Time `dunctl demo` at its default size (500 customers, 45 simulated days of hourly ticks) and print the figure.

    .venv/bin/python bench/bench_demo.py               # 3 runs, prints the median and the machine
    .venv/bin/python bench/bench_demo.py --profile     # where the time goes (cProfile, top 25)
    .venv/bin/python bench/bench_demo.py --calibrate   # the model against the published figures, both presets

The README quotes the median printed here.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dunctl.simulation.assumptions import CALIBRATION_TARGETS, MEDIAN_TARGETS, PRESETS  # noqa: E402
from dunctl.simulation.calibration import calibrate  # noqa: E402
from dunctl.simulation.demo import run_demo  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def one_run(customers: int, days: int, seed: int) -> tuple[float, object]:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = run_demo(Path(scratch) / "demo", customers=customers, days=days, seed=seed)  # the default preset
        return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--calibrate", action="store_true")
    args = parser.parse_args()

    if args.calibrate:
        for preset in PRESETS:
            with tempfile.TemporaryDirectory() as scratch:
                c = calibrate(Path(scratch), customers=max(args.customers, 6000), seed=args.seed, preset=preset)
            measured = {"retries alone recover (share of failed invoices)": c.retries_alone,
                        "the day-0 email alone recovers": c.day0_email_alone,
                        "share of recoveries after day 14": c.after_day_14,
                        "automated programme overall recovery": c.overall}
            targets = CALIBRATION_TARGETS if preset == "top" else {**CALIBRATION_TARGETS, **MEDIAN_TARGETS}
            print(f"preset {preset}: {c.outcomes[0].failed_invoices} failed invoices per run, seed {args.seed}")
            for name, (target, _) in targets.items():
                print(f"  {name:52} target {target:10} measured {measured[name]:.1%}")
            print(f"  {'unprompted (no dunctl at all)':52} {'':17} measured {c.unprompted:.1%}")
        return

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        one_run(args.customers, args.days, args.seed)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
        return

    times = []
    result = None
    for _ in range(args.runs):
        seconds, result = one_run(args.customers, args.days, args.seed)
        times.append(seconds)
    o = result.outcome
    print(f"dunctl demo: {args.customers} customers x {args.days} days = {o.ticks} ticks, "
          f"{o.invoices_billed} invoices, {o.failed_invoices} cases, {o.actions} actions")
    print(f"median {statistics.median(times):.2f}s over {args.runs} runs "
          f"(min {min(times):.2f}s, max {max(times):.2f}s) on {machine()}")


if __name__ == "__main__":
    main()
