"""Babel's answers kept between processes (dunctl/formats.py): a later process writes the same amounts, quantities
and days without loading Babel's locale data, and a damaged or missing cache only costs the Babel calls."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date

import pytest

from dunctl import formats
from dunctl.messages.formatting import quantity_text
from dunctl.money import _formatted, _formatted_day, _shape, format_day, format_money, locale_names

FORMATTED = textwrap.dedent("""
    from datetime import date
    from dunctl.messages.formatting import quantity_text
    from dunctl.money import format_day, format_money
    from dunctl.money import locale_names
    values = [locale_names("fr-CA"), locale_names(None, "de"), format_money(123456, "eur", "fr_FR"), format_money(-99, "usd", "de_DE"), quantity_text(30000, "fr_FR"),
              quantity_text(1, "ja_JP"), format_day(date(2026, 12, 7), "fr_FR"),
              format_day(date(2026, 12, 7), "ja_JP")]
""")


def _values() -> list[str]:
    for cached in (_shape, _formatted, _formatted_day, quantity_text, locale_names):   # this process's memory: the file's turn
        cached.cache_clear()
    formats.forget_in_process()
    scope: dict = {}
    exec(FORMATTED, scope)
    return scope["values"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DUNCTL_CACHE_DIR", str(tmp_path))
    yield tmp_path / "formats"
    formats.forget_in_process()


def test_a_later_process_writes_the_same_text_without_babels_locale_data(cache_dir):
    first = _values()     # Babel's own answers, kept
    assert first == [("fr", "fr_CA"), ("de", "de"), "1\u202f234,56\xa0€", "-0,99\xa0$", "30\u202f000", "1", "7 décembre 2026", "2026年12月7日"]
    assert len(list(cache_dir.glob("babel-*.jsonl"))) == 1
    assert _values() == first
    code = FORMATTED + textwrap.dedent("""
        import sys
        print(repr(values)); print(sorted(m for m in sys.modules if m.split(".")[0] == "babel"))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "DUNCTL_CACHE_DIR": str(cache_dir.parent)})
    values, loaded = done.stdout.splitlines()
    assert values == repr(first)
    assert loaded == "[]"   # not even Babel's locale names: no module of Babel, no locale's data


def test_a_damaged_cache_costs_only_the_babel_calls(cache_dir):
    first = _values()
    (entries,) = cache_dir.glob("babel-*.jsonl")
    lines = entries.read_bytes().splitlines(keepends=True)
    entries.write_bytes(b"".join(lines[:2]) + lines[2][:7] + b"\n[1]\nnot json")   # cut short, then rubbish
    assert _values() == first
    entries.write_bytes(b"")
    assert _values() == first


def test_no_cache_formats_as_babel_does(cache_dir, monkeypatch):
    first = _values()
    monkeypatch.setenv("DUNCTL_CACHE_DIR", "off")
    assert _values() == first
    assert format_money(100, "usd", "en_US") == "$1.00" and format_day(date(2026, 1, 2), "de_DE") == "2. Januar 2026"
    assert quantity_text(2.5, "de_DE") == "2,5"    # a fraction has no shape: Babel's own
