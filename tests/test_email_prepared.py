"""What preparing an email skips must not change what it says (issue #25, per email CPU): the consequences a
message names without the sequence's pydantic copies, and the three parts rendered from one shared dict."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml
from jinja2.filters import do_striptags
from markupsafe import Markup, escape

from dunctl.config import Sequence
from dunctl.irreversible import as_it_will_run, consequences, consequences_as_read
from dunctl.messages import StepsAsRead, Templates, consequence, sample_context
from dunctl.planner import Settings, StepRecord
from dunctl.scaffold import shipped_dir
from tests.test_planner import T0

STANDARD = Sequence.model_validate(yaml.safe_load((shipped_dir() / "sequences" / "standard.yaml").read_text()))
DONE = {"notice": StepRecord("done", 1, T0 + timedelta(minutes=30)),
        "final-notice": StepRecord("done", 1, T0 + timedelta(days=12))}


@pytest.mark.parametrize(("records", "days"), [({}, 1), (DONE, 13), (DONE, 40),
                                               ({**DONE, "suspend": StepRecord("done", 1, T0 + timedelta(days=21))}, 22),
                                               ({**DONE, "suspend": StepRecord("skipped", 0, None)}, 22)])
def test_the_consequences_a_message_names_are_as_it_will_run_times_them(records, days):
    now, settings = T0 + timedelta(days=days), Settings(timezone="America/New_York")
    full = as_it_will_run(STANDARD, T0, records, settings, now, "Asia/Tokyo")
    light = consequences(STANDARD, T0, records, settings, now, "Asia/Tokyo")
    assert [(s.id, s.action, s.at) for s in light.steps] == \
        [(s.id, s.action, s.at) for s in full.steps if s.action in ("pause_subscription", "cancel_subscription")]


@pytest.mark.parametrize(("records", "days"), [({}, 1), (DONE, 13), (DONE, 40)])
def test_the_consequences_worked_out_as_read_are_the_same_however_often_and_far_they_are_read(records, days):
    # A message's context reads the first consequence still ahead, and reads it again when it is re-formatted for
    # the template's own locale; an escalation may read them all.
    now, settings = T0 + timedelta(days=days), Settings(timezone="America/New_York")
    full = consequences(STANDARD, T0, records, settings, now, "Asia/Tokyo")
    as_read = StepsAsRead(consequences_as_read(STANDARD, T0, records, settings, now, "Asia/Tokyo"))
    assert consequence(as_read, T0, now) == consequence(full, T0, now)
    assert consequence(as_read, T0, now) == consequence(full, T0, now)
    assert list(as_read.steps) == list(full.steps) == list(as_read.steps)


@pytest.mark.parametrize("locale", ["en", "ja"])
def test_an_emails_parts_are_what_jinja_renders_of_each_alone(tmp_path, locale):
    # One dict of globals and context is shared by the subject, text and HTML: a part's own `set` must not reach
    # another part, and every part must read what Jinja's own render would give it.
    (tmp_path / "t").mkdir()
    for file in (shipped_dir() / "sequences" / "templates").glob("*.j2"):
        (tmp_path / "t" / file.name).write_bytes(file.read_bytes())
    suffix = "" if locale == "en" else f"{locale}."
    (tmp_path / "t" / f"payment-failed.{suffix}subject.j2").write_text("{% set company = 'Leaked' %}{{ company }}")
    templates = Templates.for_dir(tmp_path / "t")
    context = sample_context("Acme", "card_soft", locale=locale)
    subject, text, html = templates.render_email("payment-failed", context)
    alone = {part: templates.env.get_template(f"payment-failed.{suffix}{part}.j2").render(context)
             for part in ("txt", "html")}
    assert subject == "Leaked"
    assert "Leaked" not in text + html and "Acme" in html
    if locale == "en":   # the Japanese parts also lose the gaps between Japanese words (templates.py)
        assert (text, html) == (alone["txt"], alone["html"])


@pytest.mark.parametrize("text", [
    "<p>Hi Ada,</p>\n<p>We tried   to collect <strong>$49.00</strong> &amp; failed.</p>", "no tags at all &eacute;",
    "a < b and c > d", "<a <b>c</b>", "unclosed <tag", "<!-- a comment <b> --> kept <i>x</i>", "<!-- unclosed <b>x</b>",
    "x<br/>y\t\tz", "", "<p>&lt;not a tag&gt;</p>", "<<>>"])
def test_the_striptags_filter_answers_as_jinjas(tmp_path, text):
    striptags = Templates(tmp_path).env.filters["striptags"]
    assert striptags(text) == do_striptags(text)
    assert striptags(Markup(text)) == do_striptags(Markup(text))


# What the HTML frame computed with filters before `preheader_of` (dunctl/messages/templates.py) replaced them.
FILTERS = ('{% set parts = body.split("</p>", 1) %}'
           '{% set preheader = (parts[1] if parts|length > 1 else parts[0])|striptags %}'
           '{% set replied = mark in (preheader|lower) or (parts|length > 1 and mark in (parts[0]|striptags|lower)) %}'
           '{{ preheader }}|{{ replied }}')


@pytest.mark.parametrize("body", [
    "<p>Hi Ada,</p>\n<p>We tried to collect <strong>$49.00</strong>.</p>", "<p>Hi Ada, just reply!</p><p>Paid?</p>",
    "<p>Hi,</p><p>Questions? REPLY here &amp; now</p>", "no paragraph, reply", "no paragraph at all",
    "<p>one</p>", "<!-- c --><p>Hi</p><p>x <b>reply</b></p>", "<p>a</p>b</p>c"])
def test_the_frames_preheader_is_what_its_filters_gave(tmp_path, body):
    templates = Templates(tmp_path)
    mark = "reply"
    text, replied = templates.env.globals["preheader_of"](Markup(body), mark)
    assert f"{text}|{replied}" == templates.env.from_string(FILTERS).render(body=Markup(body), mark=mark)


class _Html:
    def __html__(self):
        return "<i>safe</i>"


class _Text(str):
    pass


@pytest.mark.parametrize("value", ["", "plain", "<a href='x'>Ada & \"Co\"</a>", "caf\u00e9 <\u5c71\u7530>", Markup("<b>x</b>"),
                                   _Text("<sub>"), _Html(), 12900, None])
def test_what_an_html_template_prints_is_escaped_as_markupsafe_does(tmp_path, value):
    # the HTML templates' `escape` makes a plain str's Markup directly (dunctl/messages/environment.py `_escape`)
    templates = Templates(tmp_path)
    (tmp_path / "t.html.j2").write_text("{{ value }}|{{ value }}")
    rendered = templates.env.get_template("t.html.j2").render(value=value)
    assert rendered == f"{escape(value)}|{escape(value)}"
    assert type(templates.env.get_template("t.html.j2").root_render_func.__globals__["escape"](value)) is Markup
