"""The starter's HTML emails render from prepared layout data (issue #25, per email <= 0.5 ms): the frame is one
template the layouts extend, not macros called through the sandbox, and the body's text is worked out once.
That the bytes stayed the same was checked against every starter template x locale x failure type before the
change (see the commit); tests/test_email_layout.py and tests/test_render_all.py check what the HTML says."""

from __future__ import annotations

import sys

import pytest

from dunctl.messages import Templates, sample_context
from dunctl.notices.context import sample_notice_contexts
from tests.helpers import starter

EMAILS = [("payment-failed", sample_context("Acme")), ("reminder", sample_context("Acme", locale="ja", invoices=2)),
          ("recovered", sample_context("Acme", locale="de")), ("card-expiring", sample_notice_contexts()[0])]


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Templates:
    templates = Templates.for_dir(starter(tmp_path_factory.mktemp("starter"), ledger=False).parent / "templates")
    for name, context in EMAILS:
        templates.render_email(name, context)   # compiled outside what is counted
    return templates


def calls_while(render, watch) -> list:
    """What `watch(frame)` returns for every Python call made while `render` runs (None is left out)."""
    seen = []

    def trace(frame, event, arg):
        if event == "call" and (found := watch(frame)) is not None:
            seen.append(found)

    sys.setprofile(trace)
    try:
        render()
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.parametrize("name,context", EMAILS, ids=[name for name, _ in EMAILS])
def test_a_starter_html_email_calls_no_macro(templates, name, context):
    # Jinja compiles a macro's body to a function named `macro`; each call went through the sandbox's checks
    macros = calls_while(lambda: templates.render_email(name, context),
                         lambda frame: frame.f_code.co_filename if frame.f_code.co_name == "macro" else None)
    assert macros == []


@pytest.mark.parametrize("name,context", EMAILS, ids=[name for name, _ in EMAILS])
def test_a_starter_html_email_calls_a_block_only_for_its_bodys_text(templates, name, context):
    # `self['button']()` went through the sandbox, Jinja's call and a Markup of the block's text: the button is a
    # block rendered in place; only the body, whose text the frame reads for its preheader, is called for
    blocks = calls_while(lambda: templates.render_email(name, context),
                         lambda frame: frame.f_locals["self"].name if frame.f_code.co_name == "__call__"
                         and type(frame.f_locals.get("self")).__name__ == "BlockReference" else None)
    assert blocks in (["body"], [])   # recovered.* extends the frame itself and sets its body in place


@pytest.mark.parametrize("name,context", EMAILS, ids=[name for name, _ in EMAILS])
def test_the_body_goes_through_striptags_once(templates, name, context):
    # the preheader and the "is a reply invited already" check read the same text: it was stripped twice
    # (the templates' own filter, dunctl/messages/environment.py `_striptags`, or markupsafe's for text with a comment)
    stripped = calls_while(lambda: templates.render_email(name, context),
                           lambda frame: str(frame.f_locals["self"]) if frame.f_code.co_name == "striptags"
                           and "markupsafe" in frame.f_code.co_filename else str(frame.f_locals["value"])
                           if frame.f_code.co_name == "_striptags" else None)
    assert stripped
    assert [(a[:40], b[:40]) for a in stripped for b in stripped if a is not b and a in b] == []


def test_a_gap_between_cjk_characters_closes_in_an_english_email_too(templates):
    # the gap rule runs only on messages with a CJK character in them: here one comes from the customer's data
    context = sample_context("山田 商事")
    _, text, html = templates.render_email("payment-failed", context)
    assert "山田商事" in html and "山田 商事" not in html
    assert "山田商事" in text and "山田 商事" not in text


@pytest.mark.parametrize("name,context", EMAILS, ids=[name for name, _ in EMAILS])
def test_the_layouts_words_are_read_once_not_for_every_email(templates, name, context):
    # `words` (the labels and sign-offs per language, _words.html.j2) is a global built when the templates load
    looked_up = calls_while(lambda: [templates.render_email(name, context) for _ in range(3)],
                            lambda frame: frame.f_locals.get("name") if frame.f_code.co_name == "get_template"
                            and "jinja2" in frame.f_code.co_filename else None)
    assert "_words.html.j2" not in looked_up
    assert "words" in templates.env.globals and "signoffs" in templates.env.globals["words"]
