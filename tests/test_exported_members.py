"""The public surface of `dunctl.ledger` and `dunctl.tick` is pinned (httpx's tests/test_exported_members.py is
the model): a name added to or dropped from either is a decision made here, not an accident of an import."""

import importlib

import dunctl.ledger
import dunctl.tick

LEDGER = ["ENDED_STATES", "OPEN_STATES", "SCHEMA", "CaseStore", "Ledger", "NoticeStore", "SyncStore",
          "applied_migrations", "connect"]
TICK = ["ActionReport", "ChannelSet", "SyncResult", "TickResult", "build_channels", "idempotency_key", "run_sync",
        "run_tick", "sync_and_reconcile"]
LEDGER_STORES = {"sync": "SyncStore", "cases": "CaseStore", "notices": "NoticeStore"}


def test_the_ledger_exports_what_it_says_and_every_public_class_it_defines():
    assert sorted(dunctl.ledger.__all__) == sorted(LEDGER)
    assert all(hasattr(dunctl.ledger, name) for name in LEDGER)
    defined = [name for name, value in vars(dunctl.ledger).items()
               if isinstance(value, type) and value.__module__.startswith("dunctl.ledger") and not name.startswith("_")]
    assert sorted(defined) == sorted(n for n in LEDGER if isinstance(getattr(dunctl.ledger, n), type))


def test_each_store_hangs_off_the_ledger_under_its_name(tmp_path):
    with dunctl.ledger.Ledger.open(tmp_path / "dunctl.db") as ledger:
        for attribute, store in LEDGER_STORES.items():
            assert type(getattr(ledger, attribute)).__name__ == store
            assert getattr(ledger, attribute) is getattr(ledger, attribute)   # made once, on first use


def test_the_tick_exports_what_it_says_and_each_name_loads():
    assert dunctl.tick.__all__ == sorted(TICK)
    for name in TICK:
        value = getattr(dunctl.tick, name)
        assert importlib.import_module(value.__module__) is not None and value.__name__ == name
