"""What `dunctl check` renders and shows of the templates: every used template against every sample case, and
the size of each SMS."""

from __future__ import annotations

from pathlib import Path

from dunctl.errors import ConfigProblem
from dunctl.messages.context import MessageContext
from dunctl.messages.samples import sample_contexts
from dunctl.messages.sms import SmsSize, sample_link, strict_sms, sms_size
from dunctl.messages.templates import Templates


def sms_sizes(templates: Templates, name: str, contexts: list) -> list[tuple[str, SmsSize]]:
    """The longest text of SMS template `name` in each locale it has (`dunctl check` shows them): what a
    customer's phone receives with a realistic link, GSM-7 or UCS-2."""
    sizes = []
    for suffix in templates.locales(name):
        if not templates.exists(name, "sms", suffix):
            continue
        texts = []
        for context in contexts:
            tag = suffix or context.get("locale") or "en"
            localized = context.localized(tag) if isinstance(context, MessageContext) else context
            for privacy in ("standard", "strict"):
                shown = strict_sms(localized) if privacy == "strict" else {**localized, "sms_privacy": privacy}
                texts.append(" ".join(templates.render(name, "sms", shown, suffix).split()))
        sizes.append((suffix or "default", max((sms_size(t) for t in texts), key=lambda z: z.length)))
    return sizes


def check_templates(templates_dir: Path, used: dict[str, str], company: str, default_locale: str = "en"
                    ) -> list[ConfigProblem]:
    """What `dunctl check` renders: every used template ({name: 'email' | 'sms'}) in every locale it has files
    for, against every sample case; a problem names the file that does not render."""
    return Templates(templates_dir).check(used, sample_contexts(company, default_locale))


def sms_notes(templates_dir: Path, used: dict[str, str], company: str, default_locale: str = "en") -> list[str]:
    """One line per SMS template: per locale, its encoding and segments with a realistic link (what `check`
    shows, so a longer translation or a non-GSM character is seen before it doubles the bill)."""
    templates, contexts = Templates(templates_dir), sample_contexts(company, default_locale)
    return [f"SMS {name} with a {len(sample_link(1))}-character link: " + "; ".join(
                f"{suffix} {size.encoding} {size.length} characters, {size.segments} segment(s)"
                for suffix, size in sms_sizes(templates, name, contexts))
            for name, kind in sorted(used.items()) if kind == "sms"]
