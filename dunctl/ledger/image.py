"""A new ledger copied from the image of one instead of migrated from empty. Running the migrations costs 35 ms
and importing sqlite-utils, which runs them, 90 ms more: in every process that makes a ledger (`init`, `demo`,
`simulate`, each test's). The first such process keeps what it made in dunctl's cache (dunctl/cache.py,
`ledgers/`); later ones copy it with SQLite's backup API and give the copy an id of its own.

An image is found by what decides the schema: the migrations' source (and their script runner's), their names
and SQLite's version. A changed migration, a new one or another SQLite is another image, never a stale one. Only
an empty database is filled from an image: a ledger that has any migration applied is upgraded by running the
pending ones. The image's `_sqlite_migrations` rows keep the time each migration was applied to the image."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from pathlib import Path

from dunctl import cache
from dunctl.ledger.file import SCHEMA, applied_migrations, has_table

# what decides a new ledger's schema: the migrations and how their scripts are run
MIGRATIONS_SOURCES = tuple(Path(__file__).with_name(name) for name in ("migrations.py", "scripts.py"))


def restore(conn: sqlite3.Connection) -> bool:
    """Fill `conn`, an empty database, from the image of a new ledger, with a ledger id of its own. False when
    there is none to use (no cache, none made yet, an unreadable or incomplete one): migrate then."""
    path = image_path()
    if path is None or not path.is_file() or _has_tables(conn):
        return False
    try:
        image = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            if applied_migrations(image) != list(SCHEMA) or not has_table(image, "sync_state"):
                return False
            image.backup(conn)
        finally:
            image.close()
    except sqlite3.Error:
        return False
    # m105: every ledger has its own id (dunctl/adoption.py tells ledgers apart by it)
    conn.execute("UPDATE sync_state SET value = ? WHERE name = 'ledger_id'", [new_ledger_id()])
    return True


def keep(conn: sqlite3.Connection) -> None:
    """Keep `conn`, a ledger just migrated from empty, as the image for the next new one (when there is a cache).
    Only a process that found no usable image migrates from empty: one it passed over is replaced."""
    path = image_path()
    if path is None:
        return
    try:
        cache.write_aside(path, lambda temporary, _: copy_into(conn, temporary))
    except sqlite3.Error:
        pass          # a full disk, say: the cache only saves work, and the ledger itself is made


def copy_into(conn: sqlite3.Connection, path: Path) -> None:
    """`conn`'s database into the file at `path`, in rollback-journal mode: a file of its own, read without side
    files (the ledger's WAL mode is the ledger's: a copy into a WAL ledger stays in WAL mode, SQLite's backup sets
    the destination's format bytes back)."""
    copy = sqlite3.connect(path)
    try:
        conn.backup(copy)
        copy.execute("PRAGMA journal_mode = DELETE")
    finally:
        copy.close()


def image_path() -> Path | None:
    directory = cache.usable_dir("ledgers")
    if directory is None:
        return None
    try:
        sources = [path.read_bytes() for path in MIGRATIONS_SOURCES]
    except OSError:
        return None
    key = hashlib.sha256(b"\0".join([*sources, "\n".join(SCHEMA).encode(), sqlite3.sqlite_version.encode()]))
    return directory / f"{key.hexdigest()}.db"


def new_ledger_id() -> str:
    """A ledger's id as m105 makes it: JSON text of "ldg_" and 16 hex digits."""
    return json.dumps(f"ldg_{secrets.token_hex(8)}")


def _has_tables(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None
