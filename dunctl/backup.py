"""A consistent copy of the live ledger, through SQLite's online backup API.

The copy is one read transaction on the source: in WAL mode a running tick keeps writing while it is taken, and
the copy holds the ledger exactly as it was when the copy began (never half of a tick's transaction). It is
written to a temporary file beside the target, checked with `PRAGMA integrity_check`, made mode 0600 (it holds
customer emails) and only then renamed into place, so a failed backup never leaves a broken file at PATH.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dunctl.errors import UsageError
from dunctl.ledger.file import copy_ledger, ledger_file_problem, sqlite_error


@dataclass
class Backup:
    source: str
    path: str
    bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def backup_ledger(source: Path, target: Path, *, force: bool = False) -> Backup:
    source, target = Path(source).resolve(), Path(target).resolve()
    problem = ledger_file_problem(source, must_exist=True)
    if problem:
        raise problem
    if target == source or target.name in (f"{source.name}-wal", f"{source.name}-shm"):
        raise UsageError(f"{target} is the ledger itself; back it up to another path")
    if target.is_dir():
        raise UsageError(f"{target} is a directory; give the backup's file name, e.g. {target / 'dunctl.db.bak'}")
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; nothing was written", "pass --force to overwrite it")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {target}: the directory {target.parent} does not exist",
                         "create it first, or choose another path")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        result = copy_ledger(source, Path(tmp))
        if result != "ok":
            raise UsageError(f"the copy of {source} failed its integrity check ({result}); nothing was written "
                             f"to {target}", "the ledger itself may be damaged: run `sqlite3 LEDGER 'PRAGMA "
                                             "integrity_check'` and restore an older backup if it fails")
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, source) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return Backup(str(source), str(target), target.stat().st_size)
