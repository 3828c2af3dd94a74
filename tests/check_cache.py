"""`dunctl check` renders every template its config uses against every sample case, in every locale (about 2,300
renders, 0.35-0.45 s of CPU), and some 80 tests run it, most on the starter's templates unchanged. Within a test
session that rendering is done once per distinct input (issue #25: the suite's CPU): the templates directory's
files, names and bytes, and the other arguments (the used templates, the company, the locale, the notices
config). A test that edits a template, adds a locale or breaks one gets a fresh render; the preflight checks
(keys, ledger, outbox, log, `--online`) and everything else `check` does still run for real every time.

Only answers that do not name the directory they came from are shared (a clean pass, the SMS sizes): a problem
names its file by path, and another test's path in it would be wrong. Callers get a copy: `check` appends to the
list it is given."""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path

import pytest
from pydantic import BaseModel

import dunctl.cli.setup as check_command
from dunctl.messages import Templates

# the functions `dunctl check` (dunctl/cli/setup.py) calls to render, by the names it imported them under
RENDERING = ("check_templates", "render_problems", "sms_notes")


def _directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _key_part(value) -> tuple[str, str]:
    """What an argument contributes to the key, and the directory it names (a result naming it is not shared)."""
    if isinstance(value, Templates):
        value = value.directory
    if isinstance(value, Path) and value.is_dir():
        return f"files {_directory_digest(value)}", str(value)
    if isinstance(value, BaseModel):
        return f"{type(value).__name__} {value.model_dump_json()}", ""
    return repr(value), ""


def shared(function, cache: dict):
    @functools.wraps(function)
    def rendered_once(*args, **kwargs):
        parts = [_key_part(a) for a in args] + [_key_part(v) for _, v in sorted(kwargs.items())]
        key = (function.__name__, tuple(sorted(kwargs)), tuple(k for k, _ in parts))
        if key not in cache:
            result = function(*args, **kwargs)
            if any(directory and directory in repr(result) for _, directory in parts):
                return result
            cache[key] = result
        return copy.deepcopy(cache[key])
    return rendered_once


@pytest.fixture(scope="session", autouse=True)
def _templates_rendered_once_per_session():
    cache: dict = {}
    # (a name check no longer imports is left alone: the cache is an economy, never a condition of a test)
    originals = {name: getattr(check_command, name) for name in RENDERING if hasattr(check_command, name)}
    for name, function in originals.items():
        setattr(check_command, name, shared(function, cache))
    yield
    for name, function in originals.items():
        setattr(check_command, name, function)
