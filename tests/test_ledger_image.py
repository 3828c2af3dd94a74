"""A new ledger: migrated from empty through a one-pass script splitter, or copied from the image of one kept in
dunctl's cache (dunctl/ledger/image.py). Either way the same schema as sqlite-utils' own runner makes."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys

import pytest

from dunctl.ledger import SCHEMA, Ledger, applied_migrations


def dump(conn) -> list[str]:
    """Everything in a ledger but what differs between two of them: its id, when its migrations ran."""
    return [line for line in conn.iterdump() if "_sqlite_migrations" not in line and "ledger_id" not in line]


def stock_ledger() -> sqlite3.Connection:
    from sqlite_utils import Database

    from dunctl.ledger.migrations import migrations

    conn = sqlite3.connect(":memory:")
    migrations.apply(Database(conn))
    return conn


def test_migrating_from_empty_makes_the_schema_sqlite_utils_own_script_runner_makes(monkeypatch):
    """Each migration's script runs through a one-pass splitter (sqlite-utils' own asks SQLite after every
    character: 60% of making a ledger). Same tables, indexes, triggers and seeded rows; and the splitter cuts
    tricky scripts where sqlite-utils does."""
    from sqlite_utils.db import _iter_complete_sql_statements

    from dunctl.ledger.scripts import statements

    monkeypatch.setenv("DUNCTL_CACHE_DIR", "off")            # migrated, not copied
    ours = Ledger.in_memory()
    assert dump(ours.conn) == dump(stock_ledger()) and len(dump(ours.conn)) > 60
    tricky = ("CREATE TABLE t (a TEXT DEFAULT 'x;y'); -- a comment; with a semicolon\n"
              "CREATE TRIGGER g AFTER INSERT ON t BEGIN UPDATE t SET a = ';'; DELETE FROM t WHERE 0; END;\n"
              "/* block; comment */ INSERT INTO t VALUES ('it''s;');  \n  SELECT 1")
    assert list(statements(tricky)) == list(_iter_complete_sql_statements(tricky))
    assert len(list(statements(tricky))) == 4


def test_a_new_ledger_is_copied_from_the_image_the_first_one_kept_with_an_id_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    first = Ledger.open(tmp_path / "first.db")
    images = list((tmp_path / "cache" / "ledgers").iterdir())
    assert [p.suffix for p in images] == [".db"]                      # one image, no side files
    second = Ledger.open(tmp_path / "second.db")
    assert dump(second.conn) == dump(first.conn) == dump(stock_ledger())
    assert applied_migrations(second.conn) == list(SCHEMA)
    ids = {first.get_state("ledger_id"), second.get_state("ledger_id"), Ledger.in_memory().get_state("ledger_id")}
    assert len(ids) == 3 and all(re.fullmatch(r"ldg_[0-9a-f]{16}", i) for i in ids)
    assert second.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert oct(os.stat(tmp_path / "second.db").st_mode & 0o777) == "0o600"
    with second.transaction():                                        # a working ledger
        second.set_state("cursor", "evt_1")
    assert second.get_state("cursor") == "evt_1"


def test_a_process_making_a_ledger_from_the_image_does_not_load_sqlite_utils(tmp_path):
    env = {**os.environ, "DUNCTL_CACHE_DIR": str(tmp_path / "cache")}
    script = ("import sys; from dunctl.ledger import Ledger; Ledger.open(sys.argv[1]).close(); "
              "print('sqlite_utils' in sys.modules)")
    loaded = [subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{n}.db")], env=env, text=True,
                             capture_output=True, check=True).stdout.strip() for n in (1, 2)]
    assert loaded == ["True", "False"]                 # the first migrates (and keeps the image), the second copies


@pytest.mark.parametrize("damage", ["garbage", "partial"])
def test_an_unusable_image_is_passed_over_and_the_ledger_migrated(tmp_path, monkeypatch, damage):
    from dunctl.ledger import image

    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))
    path = image.image_path()
    if damage == "garbage":
        path.write_bytes(b"not a database" * 100)
    else:                                              # a ledger that stopped before its last migration
        conn = sqlite3.connect(path)
        stock_ledger().backup(conn)
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = ?", [SCHEMA[-1]])
        conn.commit()
        conn.close()
    ledger = Ledger.open(tmp_path / "new.db")
    assert applied_migrations(ledger.conn) == list(SCHEMA) and dump(ledger.conn) == dump(stock_ledger())
    assert image.restore(sqlite3.connect(":memory:"))                 # replaced by a good one


def test_an_image_that_cannot_be_written_costs_nothing_but_the_saving(tmp_path, monkeypatch):
    """A cache that fails under SQLite (a full disk) is not the ledger's problem: the ledger is made, migrated."""
    from dunctl.ledger import image

    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path / "cache"))

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(image, "copy_into", full)
    ledger = Ledger.open(tmp_path / "new.db")
    assert applied_migrations(ledger.conn) == list(SCHEMA)
    assert not any((tmp_path / "cache" / "ledgers").iterdir())
