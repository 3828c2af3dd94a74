"""Every shipped dunning template, rendered as customers get it: in every shipped locale, for every failure type,
for one invoice, a grouped message and a second currency. Render only (no SMTP): a few seconds.

Checks: nothing undefined (StrictUndefined raises), no English left in a non-English message, amounts as Babel
formats them for that locale, no two messages of one sequence the same text, SMS within their segment budget
with a 160-character link."""

import functools
import re

import pytest
import yaml

from dunctl.failures import FAILURE_TYPES
from dunctl.locales import SHIPPED_LOCALES
from dunctl.messages import sample_context, sms_size
from dunctl.money import format_money
from dunctl.scaffold import shipped_dir
from tests.test_messages import SHIPPED

SEQUENCES = {p.stem: yaml.safe_load(p.read_text()) for p in (shipped_dir() / "sequences").glob("*.yaml")}
# (currency, invoices, amount): one invoice; a grouped message; the same customer's other currency (no minor unit)
SHAPES = {"one": ("usd", 1, 12900), "grouped": ("eur", 2, 4599), "second-currency": ("jpy", 1, 1_780_000)}
# English a translation must not keep (whole words, case-insensitive), outside customer data and links
ENGLISH = re.compile(r"\b(the|your|you|we|payment|please|hello|hi|thanks|invoice|update|card|account|reply|"
                     r"failed|remaining|overdue|sent)\b", re.IGNORECASE)
SAMPLE_DATA = ("Pro plan", "API calls over plan", "Example", "Ada Lovelace", "Ada", "Wayne Health", "ACME-004",
               "insufficient_funds")


def customer_templates() -> dict[str, str]:
    used = {}
    for sequence in SEQUENCES.values():
        for step in sequence["steps"]:
            if step.get("template"):
                used[step["template"]] = step["action"]
        if sequence.get("on_recovery"):
            used[sequence["on_recovery"]["email"]] = "email"
    return used


@functools.cache
def context(locale, failure_type, shape, follow_up=False):
    currency, invoices, amount = SHAPES[shape]
    ctx = sample_context("Example", failure_type, locale=locale, invoices=invoices, currency=currency,
                         amount=amount, business=shape == "grouped")
    if follow_up:
        ctx = type(ctx)({**ctx, "follow_up": True}, lambda tag: ctx.localized(tag))
    return ctx


@functools.cache
def render(name, kind, locale, failure_type, shape, follow_up=False) -> str:
    ctx = context(locale, failure_type, shape, follow_up)
    if kind == "sms":
        return SHIPPED.render_sms(name, ctx)
    subject, text, html = SHIPPED.render_email(name, ctx, locale=locale if name == "account-manager" else None)
    return "\n".join([subject, text, html or ""])


def without_data(text: str) -> str:
    text = re.sub(r"https?://\S+|<[^>]+>|\{[^}]*\}", " ", text)   # links, tags, CSS
    for value in SAMPLE_DATA:
        text = text.replace(value, " ")
    return text


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
def test_every_template_renders_in_the_customers_language_with_babel_amounts(locale):
    problems = []
    for name, kind in sorted(customer_templates().items()):
        for failure_type in FAILURE_TYPES:
            for shape, (currency, invoices, amount) in SHAPES.items():
                text = render(name, kind, locale, failure_type, shape)
                where = f"{name} {kind} {locale} {failure_type} {shape}"
                if locale != "en" and (english := ENGLISH.findall(without_data(text))):
                    problems.append(f"{where}: English words {sorted(set(english))}")
                money = format_money(amount * invoices if invoices == 1 else amount, currency, locale)
                plain = re.sub(r"\s", " ", text)
                if kind != "sms" and re.sub(r"\s", " ", money) not in plain:
                    problems.append(f"{where}: no {money!r} as Babel formats it")
                if kind == "sms":
                    size = sms_size(text)
                    if size.segments > size.budget:
                        problems.append(f"{where}: {size.segments} segments ({size.encoding} {size.length})")
    assert not problems, "\n".join(problems[:30])


@pytest.mark.parametrize("locale", SHIPPED_LOCALES)
@pytest.mark.parametrize("sequence", sorted(SEQUENCES))
def test_no_two_messages_of_one_sequence_are_the_same_text(sequence, locale):
    for failure_type in FAILURE_TYPES:
        for shape in SHAPES:
            seen = {}
            for n, step in enumerate(s for s in SEQUENCES[sequence]["steps"]
                                     if s["action"] in ("email", "sms") and s.get("to") != "account_manager"):
                text = render(step["template"], step["action"], locale, failure_type, shape, follow_up=n > 0)
                assert text not in seen, f"{sequence}: {step['id']} repeats {seen.get(text)} ({failure_type}, {shape})"
                seen[text] = step["id"]


# Japanese sets no space between sentences or around its punctuation: a line break inside a paragraph of the HTML
# template shows as a space in the mail client ("承認されませんでした。 このような").
# (The amounts are data: "ご請求額 ￥1,780,000 について" may keep its spaces around the figure.)
JAPANESE = "\u3000-\u30ff\u4e00-\u9fff\uff08\uff09"


def test_japanese_html_has_no_space_between_japanese_words():
    problems = []
    for name, kind in sorted(customer_templates().items()):
        if kind != "email":
            continue
        for failure_type in FAILURE_TYPES:
            for shape in SHAPES:
                _, _, html = SHIPPED.render_email(name, context("ja", failure_type, shape))
                blocks = re.sub(r"</?(p|div|br|tr|td|th|table|tbody|h\d|li|ul|ol|center)\b[^>]*>", "\u00b6", html or "")
                visible = re.sub(r"<[^>]+>", "", blocks)   # inline tags only: a paragraph break is not a space
                problems += [f"{name} {failure_type} {shape}: {m.group()!r}"
                             for m in re.finditer(rf"[{JAPANESE}]\s+[{JAPANESE}]", visible)]
    assert not problems, "\n".join(sorted(set(problems))[:20])
