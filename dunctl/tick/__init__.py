"""`dunctl tick`: sync, reconcile, and every due effect exactly once. See run.py for the order of things,
planner.py for what is due, executor.py for exactly once, actions.py for what each action does."""

import importlib

# Each name loads its module on first use (PEP 562): importing one part of the tick (the context, the result)
# does not import the planner, the executor and the templates with it, which an idle cron tick never needs.
_EXPORTS = {"ChannelSet": "channels", "build_channels": "channels", "idempotency_key": "effects",
            "ActionReport": "result", "SyncResult": "result", "TickResult": "result",
            "run_sync": "run", "run_tick": "run", "sync_and_reconcile": "run"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"dunctl.tick.{_EXPORTS[name]}"), name)
