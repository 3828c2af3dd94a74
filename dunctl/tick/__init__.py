"""`dunctl tick`: sync, reconcile, and every due effect exactly once. See run.py for the order of things,
planner.py for what is due, executor.py for exactly once, actions.py for what each action does."""

from dunctl.tick.channels import ChannelSet, build_channels
from dunctl.tick.effects import idempotency_key
from dunctl.tick.result import ActionReport, SyncResult, TickResult
from dunctl.tick.run import run_sync, run_tick, sync_and_reconcile

__all__ = ["ActionReport", "ChannelSet", "SyncResult", "TickResult", "build_channels", "idempotency_key",
           "run_sync", "run_tick", "sync_and_reconcile"]
