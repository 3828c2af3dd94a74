"""Compiled templates kept between processes. Jinja parses a template and generates Python for it before its first
render, about 3 ms a template: a demo renders about 110 of them (every step and notice in five languages) and
every tick that sends compiles the ones it renders. Kept here, a later process loads the code instead.

An entry is found by what decides the code: the template's name and source (a checksum of it), Jinja's and
Python's versions and the environment's syntax options. A changed file is a new entry, never a stale one; the same
source in another directory (each demo writes its own) uses the same entry, its file name put back on the code.

Where: `DUNCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/dunctl`, else `~/.cache/dunctl`, in `templates/` under it
(documented in docs/configuration.md). `DUNCTL_CACHE_DIR=off` keeps nothing. Safe to delete at any time. A cache
that cannot be made or written (a read-only home under cron) only costs the compile, never an error."""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
import tempfile
from pathlib import Path
from types import CodeType

import jinja2
from jinja2.bccache import Bucket, BytecodeCache

OFF = "off"
# Environment attributes that change the code Jinja generates (runtime ones, filters and globals, do not).
_SYNTAX = ("block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
           "comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix",
           "trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "finalize",
           "is_async")


def cache_dir(environ: os._Environ | dict = os.environ) -> Path | None:
    """The directory compiled templates are kept in, or None (`DUNCTL_CACHE_DIR=off`)."""
    chosen = environ.get("DUNCTL_CACHE_DIR")
    if chosen:
        return None if chosen.strip().lower() == OFF else Path(chosen) / "templates"
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dunctl" / "templates"


def template_cache() -> TemplateCache | None:
    """The cache for this process's templates, or None when there is no usable directory."""
    directory = cache_dir()
    if directory is None or not _private_dir(directory):
        return None
    return TemplateCache(directory)


def _private_dir(directory: Path) -> bool:
    """Made if missing, and only the user's own (the entries are code this process runs): else unused."""
    try:
        directory.mkdir(mode=stat.S_IRWXU, parents=True, exist_ok=True)
        found = os.lstat(directory)
    except OSError:
        return False
    return stat.S_ISDIR(found.st_mode) and found.st_uid == os.getuid() and not found.st_mode & (stat.S_IWGRP |
                                                                                              stat.S_IWOTH)


class TemplateCache(BytecodeCache):
    def __init__(self, directory: Path):
        self.directory = directory

    def get_bucket(self, environment, name: str, filename: str | None, source: str) -> Bucket:
        key = hashlib.sha256("\0".join([_compiler(environment, name), name, source]).encode()).hexdigest()
        bucket = Bucket(environment, key, key)     # keyed by the source itself: no separate checksum to compare
        self.load_bytecode(bucket)
        if bucket.code is not None and filename and bucket.code.co_filename != filename:
            bucket.code = _refiled(bucket.code, filename)
        return bucket

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            with open(self.directory / bucket.key, "rb") as f:
                bucket.load_bytecode(f)
        except (OSError, EOFError, ValueError):
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        # Written aside and renamed: a process reading the entry meanwhile sees all of it or none.
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    bucket.write_bytecode(f)
                os.replace(temporary, self.directory / bucket.key)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            pass


def _compiler(environment, name: str) -> str:
    """What besides the source shapes a template's code: versions, syntax options, the environment's class and
    whether the template autoescapes."""
    autoescape = environment.autoescape(name) if callable(environment.autoescape) else environment.autoescape
    cls = type(environment)
    options = [repr(getattr(environment, option, None)) for option in _SYNTAX]
    return "|".join([jinja2.__version__, sys.version, f"{cls.__module__}.{cls.__qualname__}", repr(autoescape),
                     *sorted(environment.extensions), *options, str(marshal.version)])


def _refiled(code: CodeType, filename: str) -> CodeType:
    """The code with `filename` as its file, and its functions' (a template's blocks and macros): tracebacks
    and Jinja's error lines name this directory's file, not the one the entry was first compiled from."""
    consts = tuple(_refiled(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
