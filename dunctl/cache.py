"""What dunctl keeps between processes so that a later one starts faster: compiled templates
(dunctl/messages/compiled.py), the image of a new ledger (dunctl/ledger/image.py) and Babel's answers
(dunctl/formats.py).

Where: `DUNCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/dunctl`, else `~/.cache/dunctl`, one directory per kind under it
(documented in docs/configuration.md). `DUNCTL_CACHE_DIR=off` keeps nothing. Safe to delete at any time. A cache
that cannot be made or written (a read-only home under cron) only costs the work it would have saved, never an
error. Entries are written aside and renamed: a process reading one meanwhile sees all of it or none."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

OFF = "off"


def cache_dir(kind: str, environ: os._Environ | dict = os.environ) -> Path | None:
    """The directory entries of `kind` are kept in, or None (`DUNCTL_CACHE_DIR=off`)."""
    chosen = environ.get("DUNCTL_CACHE_DIR")
    if chosen:
        return None if chosen.strip().lower() == OFF else Path(chosen) / kind
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dunctl" / kind


def private_dir(directory: Path) -> bool:
    """Made if missing, and only the user's own (entries are code or data this process trusts): else unused."""
    try:
        directory.mkdir(mode=stat.S_IRWXU, parents=True, exist_ok=True)
        found = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & (stat.S_IWGRP |
                                                                                              stat.S_IWOTH)


def usable_dir(kind: str) -> Path | None:
    """cache_dir(kind), made and private, or None when there is none to use."""
    directory = cache_dir(kind)
    return directory if directory is not None and private_dir(directory) else None


def write_aside(path: Path, write: Callable[[Path, BinaryIO], None]) -> None:
    """Write the entry `path` through `write(temporary path, its open file)` into a temporary file beside it, then
    rename it into place. Any OSError leaves no entry and is not raised: a cache is only ever a saving."""
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                write(Path(temporary), f)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass
