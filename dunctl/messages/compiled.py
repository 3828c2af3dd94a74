"""Compiled templates kept between processes. Jinja parses a template and generates Python for it before its first
render, about 3 ms a template: a demo renders about 110 of them (every step and notice in five languages) and
every tick that sends compiles the ones it renders. Kept here, a later process loads the code instead.

An entry is found by what decides the code: the template's name and source (a checksum of it), Jinja's and
Python's versions, the environment's syntax options and its filters and tests (`_compiler`). A changed file is a new entry, never a stale one; the same
source in another directory (each demo writes its own) uses the same entry, its file name put back on the code.

Where: `templates/` in dunctl's cache (dunctl/cache.py). A cache that cannot be made or written only costs the
compile, never an error.

The shipped templates come compiled: the wheel's build (hatch_build.py) runs `ship` over them, in the environment
dunctl renders in, and the wheel carries the entries in `dunctl/shipped/compiled-templates/`. A process whose cache
has no entry for a template reads the shipped one when there is one for exactly its key (same source, Jinja,
Python and environment), so the first demo on a machine does not compile the ~120 templates it renders (3 G
instructions, a third of its CPU). A template edited, or another Jinja or Python, is another key: compiled then, as
any other."""

from __future__ import annotations

import hashlib
import io
import marshal
import os
import pickle
import sys
from pathlib import Path
from types import CodeType

import jinja2
from jinja2 import FileSystemLoader
from jinja2.bccache import Bucket, BytecodeCache, bc_magic

from dunctl import cache
from dunctl.messages.environment import environment
# Environment attributes that change the code Jinja generates (runtime ones and globals do not; the filters and
# tests, which do, are named by `_compiler` itself).
_SYNTAX = ("block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
           "comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix",
           "trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "finalize",
           "is_async")


def cache_dir(environ: os._Environ | dict = os.environ) -> Path | None:
    """The directory compiled templates are kept in, or None (`DUNCTL_CACHE_DIR=off`)."""
    return cache.cache_dir("templates", environ)


# The entries the wheel's build made for the shipped templates (`ship`): read when this process's cache has none for
# a template, never written. Absent in a source checkout (an editable install compiles as before).
SHIPPED = Path(__file__).resolve().parent.parent / "shipped" / "compiled-templates"


def template_cache() -> TemplateCache | None:
    """The cache for this process's templates, or None when there is no usable directory."""
    directory = cache.usable_dir("templates")
    return None if directory is None else TemplateCache(directory, shipped=SHIPPED)


class TemplateCache(BytecodeCache):
    def __init__(self, directory: Path, shipped: Path | None = None):
        self.directory = directory
        self.shipped = shipped if shipped is not None and shipped.is_dir() else None
        self._compilers: dict = {}   # (environment, autoescape) -> _compiler's text: one environment, two answers

    def get_bucket(self, environment, name: str, filename: str | None, source: str) -> Bucket:
        autoescape = environment.autoescape(name) if callable(environment.autoescape) else environment.autoescape
        compiler = self._compilers.get((id(environment), autoescape))
        if compiler is None:   # once per environment, not for each of a demo's 120 templates (20 reprs and joins)
            compiler = self._compilers[id(environment), autoescape] = _compiler(environment, autoescape)
        key = hashlib.sha256("\0".join([compiler, name, source]).encode()).hexdigest()
        bucket = Bucket(environment, key, key)     # keyed by the source itself: no separate checksum to compare
        self.load_bytecode(bucket)
        if bucket.code is not None and filename and bucket.code.co_filename != filename:
            bucket.code = _refiled(bucket.code, filename)
        return bucket

    def load_bytecode(self, bucket: Bucket) -> None:
        """Jinja's `Bucket.load_bytecode` over the entry's bytes read whole: `marshal.load` on a file asks the file
        for every object it decodes, `marshal.loads` on bytes does not (16 ms for a demo's 120 templates against
        5). The same entry format: Jinja's magic, the checksum (pickled), the code (marshalled)."""
        for directory in (self.directory, self.shipped):
            bucket.reset()
            if directory is None:
                continue
            try:
                with open(directory / bucket.key, "rb") as f:
                    data = f.read()
                reader = io.BytesIO(data)
                if reader.read(len(bc_magic)) != bc_magic or pickle.load(reader) != bucket.checksum:
                    continue
                bucket.code = marshal.loads(memoryview(data)[reader.tell():])
                return
            except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError):   # no entry, or a damaged one
                bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        cache.write_aside(self.directory / bucket.key, lambda _, f: bucket.write_bytecode(f))


def ship(templates: Path, out: Path) -> int:
    """Compile every template in `templates` into `out`, as this cache's entries, in the environment dunctl renders
    in (dunctl/messages/environment.py): what the wheel's build ships (hatch_build.py). The money filter is a
    stand-in: the generated code calls a filter by its name, and what it passes one (`_compiler`) is the same.
    Needs nothing but Jinja: the build's environment has none of dunctl's other dependencies. The number of
    templates compiled."""
    out.mkdir(parents=True, exist_ok=True)
    env = environment(FileSystemLoader(str(templates)), lambda amount, currency: None, auto_reload=False,
                      bytecode_cache=TemplateCache(out))
    names = sorted(path.name for path in templates.glob("*.j2"))
    for name in names:
        env.get_template(name)
    return len(names)


def _compiler(environment, autoescape) -> str:
    """What besides the source shapes a template's code: versions, syntax options, the environment's class,
    whether the template autoescapes, and its filters and tests (the code calls each by name, passing what its
    `pass_context`-style decorator asks for; one the environment lacks is compiled into an error)."""
    cls = type(environment)
    options = [repr(getattr(environment, option, None)) for option in _SYNTAX]
    callables = [f"{kind}:{name}:{getattr(function, 'jinja_pass_arg', None)}"
                 for kind, functions in (("filter", environment.filters), ("test", environment.tests))
                 for name, function in sorted(functions.items())]
    return "|".join([jinja2.__version__, sys.version, f"{cls.__module__}.{cls.__qualname__}", repr(autoescape),
                     *sorted(environment.extensions), *options, str(marshal.version), *callables])


def _refiled(code: CodeType, filename: str) -> CodeType:
    """The code with `filename` as its file, and its functions' (a template's blocks and macros): tracebacks
    and Jinja's error lines name this directory's file, not the one the entry was first compiled from."""
    consts = tuple(_refiled(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)
