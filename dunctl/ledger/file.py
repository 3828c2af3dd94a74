"""The ledger file: is it usable, connect to it, set its pragmas, migrate it under its lock.

Everything here is about the file, below any table: `dunctl/preflight.py` reports these checks from `check`,
and `Ledger.open` runs them (raising) on every open, so a tick never half-runs on a file it cannot write. This
module imports nothing else of dunctl's ledger nor of preflight: both import it (no cycle between them).
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pwd
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dunctl.errors import DunctlError, LockHeld, UsageError

# The migrations this dunctl ships, in order; dunctl/ledger/migrations.py registers them and refuses to load if
# the two lists differ. Opening a ledger compares its applied names with these: sqlite-utils loads only when a
# migration is pending.
SCHEMA = ("m001_initial", "m002_report_index", "m003_tick_core", "m101_stripe_signal_fields", "m103_experiments",
          "m102_report_rollups", "m104_notices", "m105_i20_adopt_ledger_id",
          "m106_i20_endings_follow_ups", "m107_i25_perf_invoices_by_subscription",
          "m108_i20_interrupts_started", "m109_i21_cards",
          "m110_i2x_msgs_b_sms_optouts", "m111_recv_net_terms", "m112_recv2_case_outcome",
          "m113_recvfix_payment_time", "m114_notices3_plan_basis",
          "m115_plan6_notices_due_in_order", "m116_mail6_conditions_without_in_lists")
MIGRATIONS_TABLE = "_sqlite_migrations"
Migrate = Callable[[sqlite3.Connection], None]

SQLITE_HEADER = b"SQLite format 3\x00"
RESTORE_HINT = ("restore the ledger from your last backup (see `dunctl backup`), or move it aside and start a new "
                "one with `dunctl init` / `--new-ledger` (every step still within grace would then run again)")



def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def can_use(path: Path, mode: int) -> bool:
    """os.access as the effective user (the one whose rights SQLite will have), where the OS can say."""
    if os.access in os.supports_effective_ids:
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _read_only_mount(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(directory: Path, what: str) -> str | None:
    """Why dunctl could not create files in `directory` (creating it if needed), or None when it can."""
    existing = _nearest_existing(directory)
    if existing.exists() and not existing.is_dir():
        return f"{what} {directory} cannot be created: {existing} is a file"
    if _read_only_mount(existing):
        return f"{what} {directory} is on a read-only file system"
    if not can_use(existing, os.W_OK | os.X_OK):
        return f"{what} {directory} is not writable by user {_owner(os.geteuid())}"
    return None


def ledger_file_problem(path: Path, *, must_exist: bool) -> UsageError | None:
    """Why the ledger at `path` cannot be used by this process, or None. Checks the file only (no SQL), so it is
    cheap enough to run on every open."""
    path = Path(path)
    if not path.exists():
        if must_exist:
            return UsageError(f"no ledger at {path}",
                              "a new install starts one with `dunctl init`; to start an empty one for this config "
                              "on purpose, run `dunctl tick --new-ledger`; if you had one, restore it from your "
                              "backup instead (a new ledger runs again every step still within grace)")
        problem = check_writable_dir(path.parent, "the ledger's directory")
        return UsageError(f"cannot create the ledger {path}: {problem}",
                          "set ledger.path in the config to a writable place") if problem else None
    if path.is_dir():
        return UsageError(f"the ledger {path} is a directory", "set ledger.path in the config to a file")
    stat = path.stat()
    if stat.st_uid != os.geteuid():
        owner = _owner(stat.st_uid)
        return UsageError(f"the ledger {path} belongs to user {owner}, not to {_owner(os.geteuid())} who runs "
                          "dunctl; nothing was changed",
                          f"run dunctl as {owner} (for example `sudo -u {owner} dunctl ...`): files another user "
                          "creates next to the ledger would stop its own cron job")
    if stat.st_size == 0 and must_exist:
        return UsageError(f"the ledger {path} is empty (0 bytes): it was truncated or never initialised",
                          RESTORE_HINT)
    if _read_only_mount(path.parent):
        return UsageError(f"the ledger {path} is on a read-only file system; nothing was changed",
                          "remount it read-write, or move the ledger to a writable disk and set ledger.path")
    if not can_use(path, os.R_OK | os.W_OK):
        mode = oct(stat.st_mode & 0o777)
        return UsageError(f"the ledger {path} is not readable and writable by user {_owner(os.geteuid())} "
                          f"(mode {mode})", f"chmod 600 {path}")
    problem = check_writable_dir(path.parent, "the ledger's directory")
    companions = [path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")]
    if problem and not all(p.exists() and can_use(p, os.R_OK | os.W_OK) for p in companions):
        # SQLite keeps its write-ahead log and lock files next to the ledger: a read-only directory breaks every
        # write, and a read-only mount every open.
        return UsageError(f"{problem}; SQLite needs to create {path.name}-wal and {path.name}-shm there",
                          "move the ledger to a writable directory and set ledger.path")
    if stat.st_size == 0:
        return None  # --new-ledger (or init) on an empty file: SQLite makes it a database
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as exc:
        return UsageError(f"cannot read the ledger {path}: {exc.strerror}")
    if not header.startswith(SQLITE_HEADER):
        return UsageError(f"{path} is not a dunctl ledger (not an SQLite database): it is damaged, or "
                          "ledger.path points at another file; nothing was changed", RESTORE_HINT)
    if len(header) < 100:
        return UsageError(f"the ledger {path} is truncated ({stat.st_size} bytes); nothing was changed",
                          RESTORE_HINT)
    return None


def newer_ledger_error(path: Path, unknown: list[str]) -> UsageError:
    return UsageError(f"the ledger {path} was written by a newer dunctl (it has schema migration(s) "
                      f"{', '.join(unknown)} this version does not know); nothing was changed",
                      "upgrade dunctl (pip install -U dunctl) before running it on this ledger")


def _nearly_full(directory: Path) -> bool:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 256 * 1024


def sqlite_error(exc: sqlite3.Error, path: Path | None) -> DunctlError:
    """An SQLite error as one line a person can act on. The database's own words are kept at the end."""
    text = str(exc)
    where = f"the ledger {path}" if path else "the ledger"
    lower = text.lower()
    # A full disk often reaches SQLite as an I/O error on its write-ahead log rather than SQLITE_FULL.
    if "database or disk is full" in lower or ("i/o error" in lower and path and _nearly_full(Path(path).parent)):
        return UsageError(f"the disk holding {where} is full; the write was rolled back (SQLite: {text})",
                          "free some space (or move the ledger) and run the command again")
    if "not a database" in lower or "malformed" in lower or "file is encrypted" in lower:
        return UsageError(f"{where} is damaged (SQLite: {text}); nothing was changed", RESTORE_HINT)
    if "readonly" in lower or "read-only" in lower:
        return UsageError(f"{where} cannot be written (SQLite: {text})",
                          "check the file's permissions and that its directory and file system are writable")
    if "unable to open" in lower or "disk i/o error" in lower:
        return UsageError(f"{where} cannot be opened or read (SQLite: {text})",
                          "check the file, its directory and the disk it is on")
    if "locked" in lower or "busy" in lower:
        error = DunctlError(f"{where} is busy: another dunctl command held it too long (SQLite: {text})",
                            "nothing was lost; run the command again")
        error.exit_code = 3
        return error
    return DunctlError(f"{where}: SQLite error: {text}")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """SQLite's `PRAGMA quick_check`: every page of the ledger is read and its b-tree structure checked (not the
    indexes against their tables, which integrity_check adds at five times the cost). A damaged page that no query
    of the moment happens to touch (an index, a table tick reads rarely) passes every command until the day it is
    read, mid-tick; `check` and every tick run this first. Measured on a 10,000-case ledger (13 MB): about 20 ms of
    CPU (30-130 ms wall, cold cache); it grows with the file (100,000 cases, 133 MB: 0.2 s CPU)."""
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    if rows != [("ok",)]:
        found = "; ".join(" ".join(str(row[0]).split()) for row in rows[:3])
        raise UsageError(f"the ledger {path} is damaged (SQLite quick_check: {found}); nothing was changed",
                         RESTORE_HINT)


# -- connecting and migrating -----------------------------------------------------------------------------------


# A None bound to a statement goes through sqlite3's adapter lookup (only exact int, float, str and bytearray skip
# it), which asks the protocol class for `__adapt__` and formats an AttributeError to drop it: 0.4 us for each
# NULL a tick writes (six an email). An adapter for None, a C function that gives None back, ends the lookup at
# its first step; None still binds as NULL.
sqlite3.register_adapter(type(None), {}.get)


def connect(target: str | Path, **options) -> sqlite3.Connection:
    """A connection in autocommit mode: a statement outside `Ledger.transaction()` commits on its own, one
    inside it commits with the transaction."""
    return sqlite3.connect(target, isolation_level=None, **options)


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name]).fetchone() is not None


def applied_migrations(conn: sqlite3.Connection) -> list[str]:
    """The names of the migrations applied to this ledger, oldest first (none for a new file)."""
    if has_table(conn, MIGRATIONS_TABLE):
        return [row[0] for row in conn.execute(
            f"SELECT name FROM {MIGRATIONS_TABLE} WHERE migration_set = 'dunctl' ORDER BY rowid")]
    return []


def unknown_migrations(conn: sqlite3.Connection) -> list[str]:
    """Schema migrations recorded in the ledger that this dunctl does not have: a newer dunctl wrote it."""
    return [name for name in applied_migrations(conn) if name not in SCHEMA]


def read_state(conn: sqlite3.Connection, name: str, default=None):
    """One value of the ledger's `sync_state` (the cursor, the account it follows, ...)."""
    row = conn.execute("SELECT value FROM sync_state WHERE name = ?", [name]).fetchone()
    return json.loads(row[0]) if row else default


def write_state(conn: sqlite3.Connection, name: str, value) -> str:
    """Store one value of `sync_state`; its stored text."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    conn.execute("INSERT INTO sync_state(name, value) VALUES (?, ?) "
                 "ON CONFLICT(name) DO UPDATE SET value = excluded.value", [name, text])
    return text


@functools.lru_cache(maxsize=1)   # a process never outlives the boot it started in: read once, not every tick
def boot_id() -> str | None:
    """This boot of the machine (Linux), to tell a process that died from a machine that restarted."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def open_file(path: Path, apply_migrations: Migrate, *, create: bool) -> tuple[sqlite3.Connection, int]:
    """A connection to the ledger at `path`, migrated, and the one descriptor on the file that its tick and
    migration locks use (see `Ledger.__init__`). The file is made (mode 0600, with its schema) when `create` is
    true and it does not exist. A file this user cannot use, a damaged file or one written by a newer dunctl is
    refused (UsageError) before anything is written to it. `apply_migrations` applies the pending ones (the
    Ledger's: migrations.py imports this module for SCHEMA)."""
    problem = ledger_file_problem(path, must_exist=not create)
    if problem:
        raise problem
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    file_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    conn = None
    try:
        conn = connect(path)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        applied = applied_migrations(conn)
        unknown = [name for name in applied if name not in SCHEMA]
        if unknown:
            raise newer_ledger_error(path, unknown)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = wal")
        if len(applied) != len(SCHEMA):
            migrate(conn, path, file_fd, apply_migrations)
    except BaseException as exc:
        if conn is not None:
            conn.close()
        os.close(file_fd)   # only after the connection: see Ledger.__init__
        if not isinstance(exc, sqlite3.Error):
            raise
        if created:  # a half-made ledger would later be taken for a real one
            path.unlink(missing_ok=True)
        raise sqlite_error(exc, path) from None
    return conn, file_fd


def migrate(conn: sqlite3.Connection, path: Path, file_fd: int, apply_migrations: Migrate) -> None:
    """Apply pending migrations under the ledger's lock: of processes racing on a new or upgraded ledger,
    one migrates and the others exit 3 (LockHeld) instead of crashing halfway through a schema change."""
    try:
        fcntl.flock(file_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise LockHeld(f"another dunctl is using {path} while its schema needs setting up or upgrading",
                       "nothing was done; run the command again in a moment") from None
    try:
        apply_migrations(conn)
    finally:
        fcntl.flock(file_fd, fcntl.LOCK_UN)


def memory_connection(apply_migrations: Migrate) -> sqlite3.Connection:
    """An empty, migrated ledger in memory (a dry run before the first tick creates no file)."""
    conn = connect(":memory:")
    apply_migrations(conn)
    return conn


@contextmanager
def read_only_connection(path: Path) -> Iterator[sqlite3.Connection]:
    """The ledger through a read-only connection (no migration, no WAL files created by us): SQLite refuses any
    write. A ledger written by a newer dunctl, or a damaged one, is refused (UsageError)."""
    conn = connect(f"file:{path}?mode=ro", uri=True)
    try:
        unknown = unknown_migrations(conn)
        if unknown:
            raise newer_ledger_error(path, unknown)
        yield conn
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    finally:
        conn.close()


class StateFile:
    """The ledger's state (`get_state`/`set_state`) through a short-lived connection of its own, for commands that
    did not hand their open ledger over. It never migrates, and never waits long for the ledger: when another
    connection holds it (a dry run's transaction), the binding is recorded by the next run instead."""

    def __init__(self, path: str | Path):
        # mode=rw: never creates the file (a dry run on a new directory creates no ledger).
        self._conn = sqlite3.connect(f"file:{Path(path)}?mode=rw", uri=True, timeout=0.2, isolation_level=None)

    def get_state(self, name: str, default=None):
        try:
            return read_state(self._conn, name, default)
        except sqlite3.Error:
            return default

    def set_state(self, name: str, value) -> None:
        try:
            write_state(self._conn, name, value)
        except sqlite3.OperationalError:
            pass                    # busy: the check was made; the record waits for the next run

    def close(self) -> None:
        self._conn.close()


def read_states(path: Path, names: list[str]) -> dict | None:
    """State values (name -> decoded JSON) of the ledger at `path`, read without creating, migrating or locking
    it. None when it is not a ledger yet, or cannot be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(f"SELECT name, value FROM sync_state WHERE name IN ({', '.join('?' * len(names))})",
                                names).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return {name: json.loads(value) for name, value in rows}


def copy_ledger(source: Path, target: Path) -> str:
    """Copy the ledger at `source` into the new file `target` through SQLite's online backup API (one read
    transaction: a running tick keeps writing), as one self-contained file; returns its integrity check ("ok")."""
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # the copy is one self-contained file
            return dst.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
