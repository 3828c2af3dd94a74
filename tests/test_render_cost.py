"""What rendering an email costs beyond the template's own work (issue #25 cause 3)."""

from __future__ import annotations

import sys

import pytest

from dunctl.messages import Templates, build_context
from tests.helpers import T0, starter


def _render(templates: Templates, locale: str | None = None):
    case = {"customer_id": "cus_1", "invoice_id": "in_1", "first_failed_at": "2026-11-01T00:00:00Z",
            "failure_type": "card_soft", "attempts": 1, "segment": "default", "sequence": "standard",
            "sequence_def": ""}
    invoice = {"id": "in_1", "number": "INV-1", "currency": "eur", "amount_due": 4900, "amount_remaining": 4900,
               "hosted_invoice_url": "https://pay.test/in_1", "lines": None, "decline": None}
    context = build_context(case=case, invoice=invoice, payment_method=None, update_link="https://pay.test/in_1",
                            customer={"name": "Ada", "email": "ada@example.com", "metadata": "{}",
                                      "preferred_locale": locale}, company="Acme", now=T0)
    return templates.render_email("payment-failed", context)


@pytest.mark.parametrize("locale", [None, "fr"])
def test_rendering_an_email_raises_no_exception_to_look_up_a_dict_item(tmp_path, locale):
    # The sandbox looked `inv.amount` up as an attribute first: an AttributeError raised and caught for most
    # lookups in every message.
    templates = Templates.for_dir(starter(tmp_path).parent / "templates")
    _render(templates, locale)                       # compiled once, outside the count
    raised = []

    def trace(frame, event, arg):
        if event == "exception" and arg[0] is AttributeError:
            raised.append(frame.f_code.co_name)
        return trace

    sys.settrace(trace)
    try:
        subject, text, html = _render(templates, locale)
    finally:
        sys.settrace(None)
    assert html and "https://pay.test/in_1" in html
    assert raised == []


def test_a_dict_lookup_in_a_template_means_what_it_meant(tmp_path):
    """The fast path answers exactly as the sandbox did: an item by name, dict's own methods as methods, a missing
    name an undefined (an error under StrictUndefined), never an unsafe attribute."""
    templates = Templates(tmp_path)
    env = templates.env
    assert env.from_string("{{ d.amount }}").render(d={"amount": "€49.00"}) == "€49.00"
    assert env.from_string("{{ d.items() | list | length }}").render(d={"a": 1, "b": 2}) == "2"
    assert env.from_string("{{ d.get('a') }}").render(d={"a": 1}) == "1"
    with pytest.raises(Exception, match="has no attribute 'missing'"):
        env.from_string("{{ d.missing }}").render(d={"a": 1})
    with pytest.raises(Exception, match="unsafe|no attribute"):
        env.from_string("{{ d.__class__.__subclasses__() }}").render(d={})
