"""The ledger file (dunctl/ledger/file.py): made 0600 with its schema, one descriptor for both of its locks,
a ledger from a newer dunctl refused, state read without opening it, and a consistent copy."""

import os
import stat

import pytest

from dunctl.errors import LockHeld, UsageError
from dunctl.ledger import SCHEMA, Ledger
from dunctl.ledger.file import StateFile, applied_migrations, copy_ledger, read_states


def descriptors_on(path) -> int:
    """This process's open descriptors on `path` itself (not its -wal or -shm)."""
    fds = os.listdir("/proc/self/fd")
    return sum(1 for fd in fds if os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve()))


def test_a_new_ledger_is_private_and_migrated(tmp_path):
    with Ledger.open(tmp_path / "dunctl.db") as ledger:
        assert applied_migrations(ledger.conn) == list(SCHEMA)
    assert stat.S_IMODE((tmp_path / "dunctl.db").stat().st_mode) == 0o600


def test_the_tick_lock_takes_no_descriptor_of_its_own_and_closing_leaves_none(tmp_path):
    path = tmp_path / "dunctl.db"
    ledger = Ledger.open(path)
    opened = descriptors_on(path)          # SQLite's own and the ledger's one for its locks
    with ledger.tick_lock():
        assert descriptors_on(path) == opened
        other = Ledger.open(path)
        with pytest.raises(LockHeld):
            other.acquire_tick_lock()
        other.close()
    ledger.close()
    assert descriptors_on(path) == 0


def test_a_ledger_from_a_newer_dunctl_is_refused_untouched(tmp_path):
    path = tmp_path / "dunctl.db"
    with Ledger.open(path) as ledger:
        ledger.conn.execute("INSERT INTO _sqlite_migrations(migration_set, name, applied_at) "
                            "VALUES ('dunctl', 'm999_future', '2030-01-01')")
    before = path.read_bytes()
    with pytest.raises(UsageError, match="newer dunctl.*m999_future"):
        Ledger.open(path)
    assert path.read_bytes() == before


def test_state_is_read_and_written_without_opening_the_ledger(tmp_path):
    path = tmp_path / "dunctl.db"
    Ledger.open(path).close()
    own = StateFile(path)
    own.set_state("account_mode", "test")
    own.close()
    assert read_states(path, ["account_mode", "cursor"]) == {"account_mode": "test"}
    assert read_states(tmp_path / "missing.db", ["account_mode"]) is None


def test_a_copy_is_whole_and_checked(tmp_path):
    path = tmp_path / "dunctl.db"
    with Ledger.open(path) as ledger:
        ledger.set_state("cursor", {"since": "x"})
    assert copy_ledger(path, tmp_path / "copy.db") == "ok"
    assert read_states(tmp_path / "copy.db", ["cursor"]) == {"cursor": {"since": "x"}}

