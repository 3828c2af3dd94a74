"""Babel's answers kept between processes. Babel loads a language's CLDR data (a pickle of the root locale, the
language's own merged into a copy of it, the global tables) the first time a process formats anything in it: about
45 ms of CPU for the five languages a demo writes, more than rendering a hundred emails, paid again by every tick
that sends. What dunctl asks Babel is a few shapes (an amount's or a quantity's by its number of digits, see
dunctl/money.py) and the days its messages name: kept here, a later process formats them without loading Babel's
data at all.

An entry is what one Babel call returned for its arguments, in a file named by Babel's version (its CLDR data): a
new Babel is a new file, never a stale answer. The file only grows, one JSON line per answer, appended with one
write (two processes adding at once lose nothing); a line that does not parse (a write cut short) is ignored and
its answer asked of Babel again. Past _LIMIT bytes the file starts anew.

Where: `formats/` in dunctl's cache (dunctl/cache.py). A cache that cannot be made, read or written only costs the
Babel calls, never an error."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Hashable

from dunctl import cache

_VERSION = re.compile(r"""^__version__ = ['"]([^'"]+)['"]""", re.MULTILINE)
_LIMIT = 4 << 20   # bytes: a year of hourly ticks in five languages is well under this (a day's dates are 60 bytes)


class _Answers:
    """The answers of this process: those the file had when first asked, and those added since."""

    def __init__(self) -> None:
        self.found: dict[str, object] | None = None   # None until the file is read (the first question)
        self.path: str | None = None

    def load(self, version: str) -> dict[str, object]:
        self.found = {}
        directory = cache.usable_dir("formats")
        if directory is None:
            return self.found
        self.path = str(directory / f"babel-{version}.jsonl")
        try:
            with open(self.path, "rb") as f:
                data = f.read(_LIMIT + 1)
        except OSError:
            return self.found
        if len(data) > _LIMIT:
            self._forget()
            return self.found
        for line in data.splitlines():
            try:
                key, value = json.loads(line)
            except ValueError:   # a line cut short by a crash, or appended to one
                continue
            self.found[key] = value
        return self.found

    def add(self, key: str, value: object) -> None:
        if self.path is None:
            return
        line = json.dumps([key, value], ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError:
            self.path = None   # unwritable: stop trying for this process

    def _forget(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            self.path = None


_ANSWERS = _Answers()


def remembered(kind: str, args: tuple[Hashable, ...], ask_babel: Callable[[], object]) -> object:
    """What `ask_babel()` returns (a str, or None), from the cache when a process asked it before with this Babel:
    `kind` names the question, `args` (str, int, bool) its arguments."""
    found = _ANSWERS.found if _ANSWERS.found is not None else _ANSWERS.load(_babel_version())
    key = json.dumps([kind, *args], ensure_ascii=False, separators=(",", ":"))
    if key in found:
        return found[key]
    value = found[key] = ask_babel()
    _ANSWERS.add(key, value)
    return value


def _babel_version() -> str:
    """Babel's version, read from its package's `__init__.py` without importing it: a process whose answers are all
    here never loads Babel (3 ms). Babel's own `__version__` when it is loaded, or that file says no version."""
    babel = sys.modules.get("babel")
    if babel is None:
        spec = importlib.util.find_spec("babel")
        try:
            with open(spec.origin, encoding="utf-8") as f:
                found = _VERSION.search(f.read())
        except (OSError, AttributeError, TypeError, UnicodeDecodeError):   # no spec or no file: ask Babel itself
            found = None
        if found:
            return found.group(1)
        import babel   # lazy: see dunctl/lazy.py
    return babel.__version__


def forget_in_process() -> None:
    """Read the file again at the next question (tests: another process's view)."""
    _ANSWERS.found = None
    _ANSWERS.path = None
