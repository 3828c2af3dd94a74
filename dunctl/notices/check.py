"""`dunctl check` for notices: every enabled notice's template rendered against a sample of its kind, in every
language shipped. Apart from the `notices:` schema (config.py) because it needs the templates' context, which
needs dunctl.messages; the config package imports the schema, and must not import them back.
"""

from __future__ import annotations

from jinja2 import TemplateError

from dunctl.errors import ConfigProblem
from dunctl.notices.config import NoticesConfig
from dunctl.notices.context import sample_notice_contexts


def render_problems(notices: NoticesConfig, templates, company: str) -> list:
    """Render every enabled notice's template against a sample of its kind (for `dunctl check`)."""
    problems = []
    if not notices.enabled:
        return problems
    samples = dict(zip(("card_expiring", "upcoming_renewal", "usage_alert", "large_charge"),
                       sample_notice_contexts(company)))
    names = {"card_expiring": notices.card_expiring.template, "upcoming_renewal": notices.upcoming_renewal.template,
             "usage_alert": notices.usage.template, "large_charge": notices.usage.large_charge.template}
    for kind, name in names.items():
        if name not in notices.templates():
            continue
        for suffix in templates.locales(name):       # every language shipped, as customers get them
            problems += _render_locale(templates, name, suffix, kind, samples[kind].localized(suffix or "en"))
    return problems


def _render_locale(templates, name: str, suffix: str, kind: str, context) -> list:
    problems = []
    for part in ("subject", "txt", "html"):
        if not templates.exists(name, part, suffix):
            continue
        try:
            templates.render(name, part, context, suffix)
        except TemplateError as exc:
            problems.append(ConfigProblem(str(templates.file(name, part, suffix)), "",
                                          f"does not render for a {kind} notice: {exc}",
                                          getattr(exc, "lineno", None)))
    return problems
