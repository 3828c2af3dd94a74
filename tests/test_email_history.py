"""What a message's context holds that costs work per email is worked out only for a template that may say it
(issue #25, per email CPU): its history (`sent`, `follow_up`: what was sent and tried on its cases) and what its
sequence does next (`consequence`: the irreversible steps timed as they will run)."""

from __future__ import annotations

import contextlib
import sys
from datetime import timedelta

import pytest

from dunctl import irreversible
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.messages.templates import Templates
from dunctl.tick import build_channels, run_tick
from tests.helpers import T0, failed_invoice, seed, starter

WORDS = ("sent", "follow_up")


def _calls(config, ledger, at, function) -> int:
    """How often the tick at `at` called `function` (Ledger.sent_and_tried: a message's history;
    irreversible.consequences_as_read: its consequences)."""
    calls = []

    def watch(frame, event, arg):
        if event == "call" and frame.f_code is function.__code__:
            calls.append(frame)

    sys.setprofile(watch)
    try:
        run_tick(ledger, config, None, build_channels(config, {}), at, sync=False)
    finally:
        sys.setprofile(None)
    return len(calls)


@contextlib.contextmanager
def _one_failed_invoice(tmp_path, **edits: str):
    """A starter config with the file transport, its templates `edits` appended to ({file: text}), and a ledger
    with one failed invoice, its payment-failed email due at T0 + 30m."""
    config_path = starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "outbox"}})
    for name, text in edits.items():
        file = tmp_path / "templates" / name
        file.write_text((file.read_text() if file.exists() else "") + text)
    config = load_config(config_path)
    ledger = Ledger.open(config.ledger_path)
    try:
        seed(ledger, failed_invoice())
        yield config, ledger
    finally:
        ledger.close()


def _outbox(tmp_path, part: str = "") -> list[str]:
    return [p.read_text() for p in (tmp_path / "outbox").glob("*.eml") if part in p.name]


def test_an_email_whose_templates_never_name_its_history_does_not_read_it(tmp_path):
    with _one_failed_invoice(tmp_path) as (config, ledger):
        assert _calls(config, ledger, T0 + timedelta(hours=1), Ledger.sent_and_tried) == 0
        assert len(_outbox(tmp_path)) == 1     # the payment-failed email went


def test_a_template_that_names_its_history_through_an_include_still_says_it(tmp_path):
    history = ("{% for s in sent %}[{{ s.action }} {{ s.step }} {{ s.on }}]{% endfor %} "
               "follow-up: {{ follow_up }}\n")
    with _one_failed_invoice(tmp_path, **{"_history.txt.j2": history,
                                          "reminder.txt.j2": '{% include "_history.txt.j2" %}'}) as (config, ledger):
        assert _calls(config, ledger, T0 + timedelta(hours=1), Ledger.sent_and_tried) == 0
        assert _calls(config, ledger, T0 + timedelta(days=3, hours=1), Ledger.sent_and_tried) == 1
        (reminder,) = _outbox(tmp_path, "reminder")
        assert f"[email notice {T0.date()}]" in reminder and "follow-up: True" in reminder


def test_an_email_whose_templates_never_name_the_consequence_does_not_work_it_out(tmp_path):
    with _one_failed_invoice(tmp_path) as (config, ledger):
        assert _calls(config, ledger, T0 + timedelta(hours=1), irreversible.consequences_as_read) == 0
        assert len(_outbox(tmp_path)) == 1


def test_a_template_that_names_the_consequence_still_says_it(tmp_path):
    said = "next: {{ consequence.action }} on {{ invoice.consequence.on }}\n"
    with _one_failed_invoice(tmp_path, **{"payment-failed.txt.j2": said}) as (config, ledger):
        assert _calls(config, ledger, T0 + timedelta(hours=1), irreversible.consequences_as_read) == 1
        (email,) = _outbox(tmp_path)
        assert "next: pause_subscription on " in email


@pytest.mark.parametrize(("files", "expected"), [
    ({"m.txt.j2": "{{ sent }}"}, True),
    ({"m.fr.html.j2": "{% if follow_up %}x{% endif %}"}, True),                   # any language, any part
    ({"m.txt.j2": "{{ amount }} was presented"}, False),                          # whole words only
    ({"m.txt.j2": '{% include "_p.j2" %}', "_p.j2": "{{ sent|length }}"}, True),   # what it includes
    ({"m.html.j2": "{% extends '_l.j2' %}", "_l.j2": '{%- include "_p.j2" ignore missing -%}', "_p.j2": "{{ sent }}"},
     True),                                                                        # and what that includes
    ({"m.txt.j2": '{% from "_p.j2" import x with context %}{{ x() }}',
      "_p.j2": "{% macro x() %}{{ follow_up }}{% endmacro %}"}, True),            # or imports
    ({"m.txt.j2": "{% include part %}", "_p.j2": ""}, True),                      # named by an expression: unknown
    ({"m.txt.j2": '{% include ["_p.j2", "_q.j2"] %}', "_p.j2": ""}, True),
    ({"m.txt.j2": '{% include "_p.j2" %}', "_p.j2": "{{ amount }}", "_q.j2": "{{ sent }}"}, False),
    ({"m.txt.j2": "{{ amount }}", "mx.txt.j2": "{{ sent }}"}, False),             # another template's files
])
def test_a_template_mentions_the_words_of_its_files_and_of_those_it_brings_in(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert Templates.for_dir(tmp_path).mentions("m", WORDS) is expected
    assert Templates(tmp_path).mentions("m", WORDS) is True   # files that may change: always worked out


@pytest.mark.parametrize(("locales", "expected"), [
    (None, True), ((None,), False), (("en",), False), (("fr",), True), (("fr-CA",), True), (("de", "fr"), True),
    (("de",), False)])
def test_with_languages_only_the_files_a_message_in_them_can_use_are_read(tmp_path, locales, expected):
    for name, text in {"m.txt.j2": "{{ amount }}", "m.fr.txt.j2": "{{ sent }}", "m.de.txt.j2": "{{ amount }}",
                       "m.fr.html.j2": "x"}.items():
        (tmp_path / name).write_text(text)
    assert Templates.for_dir(tmp_path).mentions("m", WORDS, locales) is expected
