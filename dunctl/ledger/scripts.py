"""SQL scripts run statement by statement inside the caller's transaction, for the migrations (sqlite3's own
executescript would commit it first). One splitter for both ways a migration runs a script: `run_script` (the
migrations that write SQL of their own) and ScriptDatabase.executescript (those that go through sqlite-utils)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from sqlite_utils import Database


def statements(sql: str) -> Iterator[str]:
    """The statements of a script, stripped, as sqlite-utils cuts them: each ends at the semicolon that completes
    it (not one inside a string, a comment or a trigger's body); text after the last one is a statement too. Cut
    only at semicolons, where a statement can end, so one pass over the text."""
    *parts, last = sql.split(";")
    statement = ""
    for part in parts:
        statement += part + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip():
                yield statement.strip()
            statement = ""
    if (statement + last).strip():
        yield (statement + last).strip()


def run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Run each statement of `sql` in the caller's transaction (empty ones, a lone `;`, are skipped)."""
    for statement in statements(sql):
        if statement.strip(" \n;"):
            conn.execute(statement)


class ScriptDatabase(Database):
    """sqlite-utils' Database with a migration's script run in one pass. Inside a transaction (as Migrations
    applies each migration) sqlite-utils' executescript asks SQLite whether the text so far is a complete statement
    after every character (simonw/sqlite-utils#757), quadratic in a statement's length: 60% of making a new ledger
    (a test's, the demo's). Here through `statements`: the same statements, in the same transaction."""

    def executescript(self, sql: str) -> sqlite3.Cursor:
        if not self.conn.in_transaction:
            return super().executescript(sql)     # sqlite3's own, in one pass already
        cursor = self.conn.cursor()
        for statement in statements(sql):
            cursor.execute(statement)
        return cursor
