"""The modules a tick needs only once something is due (dunctl/lazy.py says why each waits), imported on first use
and kept. An import statement inside a function runs on every call: for a module already loaded it is a lookup in
sys.modules and two AttributeErrors formatted and dropped (the module has no `__path__`), about 6,000 instructions;
the functions that plan a case and prepare its email ran six of them for each email."""

from __future__ import annotations

import functools


@functools.cache
def planning():
    """(dunctl.planner, dunctl.tick.schedule): with the first case a process plans."""
    from dunctl import planner   # lazy: see dunctl/lazy.py
    from dunctl.tick import schedule   # lazy: see dunctl/lazy.py

    return planner, schedule


@functools.cache
def actions():
    """dunctl.tick.actions, with the first effect a process prepares (it brings the channels, the reconciler and
    sqlite-utils: about 0.2 s)."""
    from dunctl.tick import actions   # lazy: see dunctl/lazy.py

    return actions

