"""See a message before anyone gets it: a template rendered exactly as a step would send it (sender, recipient,
subject, text and HTML, or the SMS body), for a real case in the ledger or a sample case of one failure type.

The ledger is opened read-only: a preview never changes it. What cannot be known without sending (a billing
portal link is created by Stripe at send time) is shown as the invoice's hosted link and said so in `notes`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from jinja2 import TemplateError

from dunctl.channels import EmailMessage
from dunctl.channels.email import build_message
from dunctl.config import Config, Step, known_templates
from dunctl.errors import ConfigError, ConfigProblem, UsageError
from dunctl.failures import FAILURE_TYPES
from dunctl.ledger import Ledger
from dunctl.ledger.receivables import statement_rows
from dunctl.messages import CasePart, Templates, build_context, sample_context
from dunctl.notices.context import sample_notice_contexts
from dunctl.recipients import resolve_recipients


@dataclass
class Preview:
    template: str
    channel: str                      # email | sms
    source: str                       # the invoice, or "sample card_soft case"
    sender: str
    reply_to: str | None
    to: str | None
    subject: str | None
    text: str
    html: str | None
    locale: str | None = None
    notes: list[str] = field(default_factory=list)
    invoice_id: str | None = None     # a real case's invoice, and the step that sends this template
    step: str | None = None
    cc: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def read_only_ledger(path: Path):
    """The ledger through a read-only connection: SQLite refuses any write, so a preview cannot change it."""
    with Ledger.open_read_only(path) as ledger:
        yield ledger


def _step_using(config: Config, template: str, sequence: str | None) -> Step | None:
    """The step that sends `template`: in the case's sequence first, else in any sequence."""
    names = ([sequence] if sequence in config.sequences else []) + sorted(config.sequences)
    for name in names:
        for step in config.sequences[name].steps:
            if step.template == template:
                return step
    return None


def notice_kind(config: Config, template: str) -> str | None:
    """The notice kind whose template `template` is (card_expiring, ...), or None for a dunning template."""
    notices = config.file.notices
    kinds = {notices.card_expiring.template: "card_expiring", notices.upcoming_renewal.template: "upcoming_renewal",
             notices.usage.template: "usage_alert", notices.usage.large_charge.template: "large_charge"}
    return kinds.get(template)


def render_preview(config: Config, template: str, *, ledger=None, invoice_id: str | None = None,
                   failure_type: str | None = None, locale: str | None = None, now: datetime) -> Preview:
    """The message the step that uses `template` would send, built the way the tick builds it (the same context,
    recipients, language and SMS privacy), for the case of `invoice_id` or a sample case of `failure_type`; a
    notice template with a sample of its kind. A template that does not render is a ConfigError naming its file
    and line (as `check` reports it), never a traceback."""
    templates = Templates(config.templates_dir)
    channel = "sms" if templates.exists(template, "sms") and not templates.exists(template, "txt") else "email"
    if not (templates.exists(template, "sms") or templates.exists(template, "subject")):
        raise UsageError(f"unknown template '{template}' in {config.templates_dir}",
                         f"known templates: {', '.join(known_templates(config.templates_dir)) or 'none'}")
    try:
        return _render(config, templates, template, channel, ledger=ledger, invoice_id=invoice_id,
                       failure_type=failure_type, locale=locale, now=now)
    except TemplateError as exc:
        raise _render_error(exc, templates, template) from None


def _render_error(exc: Exception, templates: Templates, template: str) -> ConfigError:
    """The template file and line a rendering failed at (the innermost template frame: an included or extended
    file when the error is there), in `check`'s one-line form."""
    file, line = getattr(exc, "filename", None), getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(".j2"):
            file, line = tb.tb_frame.f_code.co_filename, tb.tb_lineno
        tb = tb.tb_next
    where = file or str(templates.file(template, "txt"))
    return ConfigError([ConfigProblem(where, "", f"does not render: {exc}", line)],
                       "fix the template; `dunctl check` renders every template against sample cases")


def _render(config: Config, templates: Templates, template: str, channel: str, *, ledger, invoice_id, failure_type,
            locale, now) -> Preview:
    sender = config.file.sender
    kind = notice_kind(config, template)
    if kind is not None:
        return _notice_preview(config, templates, template, kind, invoice_id=invoice_id, locale=locale, now=now)
    notes: list[str] = []
    cc: list[str] = []
    if invoice_id:
        case, invoice, customer, context, step = _case_context(config, ledger, template, invoice_id, now)
        if channel == "sms":
            to = (customer or {}).get("phone")
        else:
            found = resolve_recipients(step, customer, invoice)  # no step: the default, billing_contact
            to, cc = ", ".join(found.to) or None, found.cc
            notes += [f"left out {address}: {why}" for address, why in found.rejected]
        source = f"invoice {invoice_id} ({case['failure_type']}, sequence {case['sequence']})"
        if context["count"] > 1:
            notes.append("sent as one message with " + ", ".join(inv["id"] for inv in context["invoices"]
                                                                    if inv["id"] != invoice_id))
        step_id = step.id if step else None
        internal = step is not None and step.audience == "internal"
    else:
        failure_type = failure_type or "card_soft"
        if failure_type not in FAILURE_TYPES:
            raise UsageError(f"unknown failure type '{failure_type}'; known: {', '.join(FAILURE_TYPES)}")
        context = sample_context(sender.company, failure_type, default_locale=sender.locale, locale=locale)
        to = "+15555550100" if channel == "sms" else context["customer"]["email"]
        source = f"sample {failure_type} case"
        step_id, internal = None, False
    if to is None:
        notes.append("this customer has no address for the step's recipient: the step would be skipped")
    if channel == "sms":
        privacy = config.file.channels.sms.privacy if config.file.channels.sms else "standard"
        body = templates.render_sms(template, context, privacy=privacy)
        return Preview(template, "sms", source, sender.from_, None, to, None, body, None, locale, notes, invoice_id,
                       step_id)
    # as the tick does: a message to a person inside the company is written in the sender's language
    subject, text, html = templates.render_email(template, context, locale=sender.locale if internal else locale)
    return Preview(template, "email", source, sender.from_, sender.reply_to, to, subject, text, html, locale, notes,
                   invoice_id, step_id, cc)


def _notice_preview(config: Config, templates: Templates, template: str, kind: str, *, invoice_id, locale,
                    now) -> Preview:
    """A notice template rendered against a sample of its kind (a notice is about a card or a subscription,
    never an invoice's case)."""
    if invoice_id:
        raise UsageError(f"'{template}' is a {kind} notice template: notices are not about an invoice's case",
                         f"preview it with a sample: dunctl preview {template}")
    sender = config.file.sender
    kinds = ("card_expiring", "upcoming_renewal", "usage_alert", "large_charge")
    context = sample_notice_contexts(sender.company, locale=locale)[kinds.index(kind)]
    subject, text, html = templates.render_email(template, context, locale=locale)
    return Preview(template, "email", f"sample {kind} notice", sender.from_, sender.reply_to,
                   context["customer"]["email"], subject, text, html, locale)


def _case_context(config: Config, ledger, template: str, invoice_id: str, now: datetime):
    """The case's context as its message was (or will be) sent: with the other invoices of the same customer
    that went in one message with it (one message_ref), the oldest first, as the tick groups them."""
    case = ledger.cases.for_invoice(invoice_id)
    invoice = ledger.sync.invoice(invoice_id)
    if case is None or invoice is None:
        raise UsageError(f"no case for invoice {invoice_id} in the ledger",
                         "`dunctl status --all` lists the cases; or preview a sample with --failure TYPE")
    step = _step_using(config, template, case["sequence"])
    parts = []
    for other in _grouped_with(ledger, dict(case), step):
        other_invoice = dict(ledger.sync.invoice(other["invoice_id"]))
        parts.append(CasePart(other, other_invoice, ledger.sync.payment_method(other_invoice["payment_method_id"]),
                              other_invoice["hosted_invoice_url"], ledger.cases.sequence_definition(other["sequence_hash"])))
    parts.sort(key=lambda part: (part.case["first_failed_at"], part.case["invoice_id"]))
    lead = parts[0]
    customer = ledger.sync.customer(case["customer_id"])
    customer = dict(customer) if customer is not None else None
    context = build_context(case=lead.case, invoice=lead.invoice, customer=customer,
                            payment_method=lead.payment_method, update_link=lead.update_link,
                            company=config.file.sender.company, now=now, sequence=lead.sequence,
                            default_locale=config.file.sender.locale, timezone=config.file.sender.timezone,
                            also=parts[1:],
                            open_invoices=statement_rows(ledger.conn, case["failure_type"], case["customer_id"]))
    return dict(case), dict(invoice), customer, context, step


def _grouped_with(ledger, case: dict, step: Step | None) -> list[dict]:
    """This case and every case whose step went out in the same message as this case's `step`."""
    sent = [a for a in ledger.actions(case["id"]) if step is not None and a["step_id"] == step.id]
    ref = next((a["message_ref"] for a in sent if a.get("message_ref")), None)
    if ref is None:
        return [case]
    return [dict(c) for c in ledger.cases.in_message(ref)]


def as_text(preview: Preview) -> str:
    lines = [f"From: {preview.sender}", f"To: {preview.to or '(no address: would be skipped)'}"]
    if preview.cc:
        lines.append(f"Cc: {', '.join(preview.cc)}")
    if preview.reply_to:
        lines.append(f"Reply-To: {preview.reply_to}")
    if preview.subject is not None:
        lines.append(f"Subject: {preview.subject}")
    lines += ["", preview.text.rstrip("\n"), ""]
    return "\n".join(lines)


def as_eml(preview: Preview, now: datetime) -> bytes:
    """The message as the email channel builds it (same headers and parts), ready for any mail client."""
    if preview.channel != "email":
        raise UsageError(f"'{preview.template}' is an SMS template: use --format text")
    headers = {"X-Dunctl-Preview": preview.source}
    if preview.invoice_id and preview.step:  # the headers the tick adds to this case's message
        headers.update({"X-Dunctl-Case": preview.invoice_id, "X-Dunctl-Step": preview.step})
    to = preview.to.split(", ") if preview.to else ["preview@example.invalid"]
    message = EmailMessage(to, preview.subject or "", preview.text, preview.html, headers, cc=preview.cc)
    return build_message(message, sender=preview.sender, reply_to=preview.reply_to,
                         key=f"preview:{preview.template}", now=now).data
