"""What every part of the ledger shares: its states, its JSON form, and queries run over IN lists."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from json.encoder import c_make_encoder, encode_basestring_ascii

OPEN_STATES = ("open", "paused")
ENDED_STATES = ("recovered", "exhausted", "written_off", "voided", "closed")
IN_LIST_SIZE = 500   # values per IN list: well within SQLite's limit on a statement's parameters


def conjunction(terms: Iterable[tuple[str, object]]) -> tuple[str, list]:
    """The terms whose value is set, joined by AND ("1" when none is), and their parameters: a term with a `?`
    binds its value; one without (a fixed condition) is kept or left out by its value's truth."""
    kept = [(term, value) for term, value in terms if value]
    return (" AND ".join(term for term, _ in kept) or "1"), [value for term, value in kept if "?" in term]


def to_json(value) -> str:
    """The ledger's JSON text: keys sorted and no spaces, so equal values are equal text."""
    return "".join(_ENCODE(value, 0))


def _encoder():
    """The standard library's C encoder, with json.dumps(sort_keys=True, separators=(",", ":"), default=str)'s
    options, made once: json.dumps and JSONEncoder.encode make a new one at every call, a third of storing a usage
    preview (a demo stores about 7,000 values). No cycle check: the ledger stores plain data it built itself."""
    if c_make_encoder is None:     # a Python built without the _json accelerator
        slow = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)
        return lambda value, _level: (slow.encode(value),)
    return c_make_encoder(None, str, encode_basestring_ascii, None, ":", ",", True, False, True)


_ENCODE = _encoder()


def rows(conn: sqlite3.Connection, sql: str, params=()) -> Iterator[dict]:
    """The rows of one query as dicts, column name to value."""
    cursor = conn.execute(sql, params)
    keys = [column[0] for column in cursor.description]
    return (dict(zip(keys, row)) for row in cursor)


def run_in(conn: sqlite3.Connection, sql: str, values: Iterable, params: list | tuple = ()
           ) -> Iterator[sqlite3.Cursor]:
    """`sql`, whose `{}` is an IN list, run for every distinct value (None left out) in pieces within SQLite's
    limit on parameters; `params` follow the list."""
    distinct = list(dict.fromkeys(v for v in values if v is not None))
    for start in range(0, len(distinct), IN_LIST_SIZE):
        piece = distinct[start:start + IN_LIST_SIZE]
        yield conn.execute(sql.format(", ".join("?" * len(piece))), [*piece, *params])


def pairs(conn: sqlite3.Connection, sql: str, values: Iterable, params: list | tuple = ()) -> Iterator[tuple]:
    """`run_in`'s rows as tuples."""
    for cursor in run_in(conn, sql, values, params):
        yield from cursor


def rows_in(conn: sqlite3.Connection, sql: str, values: Iterable) -> list[dict]:
    """`run_in`'s rows as dicts, column name to value."""
    found = []
    for cursor in run_in(conn, sql, values):
        keys = [column[0] for column in cursor.description]
        found += [dict(zip(keys, row)) for row in cursor.fetchall()]
    return found


class Store:
    """One part of the ledger's tables behind intent-named methods, on the ledger's connection. A store is made
    on first use (`ledger.cases`, `ledger.sync`, `ledger.notices`) and lives as long as its ledger."""

    def __init__(self, ledger):   # the dunctl.ledger.Ledger that made it (not imported: it imports the stores)
        self.ledger = ledger
        self.conn = ledger.conn

    def rows(self, sql: str, params=()) -> Iterator[dict]:
        return rows(self.conn, sql, params)
