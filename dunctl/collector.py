"""Python's cyclic garbage collector in a dunctl process, and in a busy tick.

A dunctl process is short and makes many small objects (rows, records, contexts): with Python's default (a pass of
the cyclic collector every 700 allocations) a demo ran 165 passes, 4% of its CPU, most of them walking modules and
config that live until exit. A pass every 10,000 (`configure`, called first by the CLI), with import-time objects
frozen out of it (dunctl/cli/app.py load_command): 9 passes, a fifth of the time. Cycles are still collected;
reference counting frees everything else at once, as before.

By the end of a tick's first batch the process holds everything it keeps until it exits: modules, the config,
compiled templates, Babel's locale data, caches (about 45,000 objects). Each full collection walks all of them
again, and a tick that sends a few hundred emails makes enough objects to set one off (22 ms of a 400-email tick,
80 us an email; in cachegrind 60,000 of the 2.24 M instructions an email cost). `gc.freeze()` moves what exists
then out of the collector's generations, once per process: the later collections walk only what the tick made
since. Objects frozen are still freed when nothing refers to them; only a reference cycle that was already garbage
at that moment stays in memory (a handful, once).
"""

from __future__ import annotations

import gc

_frozen = False
THRESHOLDS = (10_000, 10, 10)     # gc.set_threshold's: a young pass every 10,000 allocations, not 700


def configure() -> None:
    """The collector as every dunctl process runs it: the CLI's first step, and the first step of a benchmark that
    times a tick as the CLI runs it (bench/bench_tick.py, bench/tick_once.py)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_long_lived() -> None:
    """Once per process, after the tick's first batch (when its sending code and templates are loaded)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
