"""Python's cyclic garbage collector and a busy tick.

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


def freeze_long_lived() -> None:
    """Once per process, after the tick's first batch (when its sending code and templates are loaded)."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.freeze()
