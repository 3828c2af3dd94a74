"""The tests' starter (tests/helpers.py) is copied from one made once per process, for speed (issue #25): it must
still be what `dunctl init` makes, file for file and table for table, and each copy a ledger of its own."""

from __future__ import annotations

import sqlite3

import pytest

from dunctl.errors import UsageError
from dunctl.ledger import Ledger
from dunctl.scaffold import write_starter
from tests.helpers import new_ledger, starter


def _schema(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        tables = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()
        applied = conn.execute("SELECT name FROM _sqlite_migrations ORDER BY name").fetchall()
    conn.close()
    return tables + applied


def _ledger_id(path) -> str:
    with Ledger.open(path) as ledger:
        return ledger.get_state("ledger_id")


def test_a_copied_starter_is_what_init_writes_with_a_ledger_of_its_own(tmp_path):
    written = write_starter(tmp_path / "init")
    Ledger.open(tmp_path / "init" / "dunctl.db", create=True).close()
    first, second = starter(tmp_path / "a").parent, starter(tmp_path / "b").parent

    for path in written:
        relative = path.relative_to(tmp_path / "init")
        if relative.name != "dunctl.yaml":     # (starter() edits the config: live mode, no quiet hours, ...)
            assert (first / relative).read_bytes() == path.read_bytes(), relative
    assert _schema(first / "dunctl.db") == _schema(tmp_path / "init" / "dunctl.db")
    assert (first / "dunctl.db").stat().st_mode & 0o777 == 0o600
    assert len({_ledger_id(d / "dunctl.db") for d in (first, second, tmp_path / "init")}) == 3
    new_ledger(tmp_path / "c.db").close()
    assert _ledger_id(tmp_path / "c.db") != _ledger_id(first / "dunctl.db")
    with pytest.raises(UsageError, match="never overwrites"):
        starter(first)
