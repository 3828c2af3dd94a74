"""See a message before anyone gets it: a template rendered exactly as a step would send it (sender, recipient,
subject, text and HTML, or the SMS body), for a real case in the ledger or a sample case of one failure type.

The ledger is opened read-only: a preview never changes it. What cannot be known without sending (a billing
portal link is created by Stripe at send time) is shown as the invoice's hosted link and said so in `notes`.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from dunctl.config import Config, Step, known_templates
from dunctl.errors import UsageError
from dunctl.failures import FAILURE_TYPES
from dunctl.messages import Templates, build_context, sample_context
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
    from dunctl.ledger import Ledger, connect
    from dunctl.preflight import ledger_file_problem, newer_ledger_error, sqlite_error, unknown_migrations

    problem = ledger_file_problem(path, must_exist=True)
    if problem:
        raise problem
    conn = connect(f"file:{path}?mode=ro", uri=True)
    try:
        unknown = unknown_migrations(conn)
        if unknown:
            raise newer_ledger_error(path, unknown)
        yield Ledger(conn, path)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, path) from None
    finally:
        conn.close()


def _step_using(config: Config, template: str, sequence: str | None) -> Step | None:
    """The step that sends `template`: in the case's sequence first, else in any sequence."""
    names = ([sequence] if sequence in config.sequences else []) + sorted(config.sequences)
    for name in names:
        for step in config.sequences[name].steps:
            if step.template == template:
                return step
    return None


def render_preview(config: Config, template: str, *, ledger=None, invoice_id: str | None = None,
                   failure_type: str | None = None, locale: str | None = None, now: datetime) -> Preview:
    """The message the step that uses `template` would send, built the way the tick builds it (the same context,
    recipients, language and SMS privacy), for the case of `invoice_id` or a sample case of `failure_type`."""
    templates = Templates(config.templates_dir)
    channel = "sms" if templates.exists(template, "sms") and not templates.exists(template, "txt") else "email"
    if not (templates.exists(template, "sms") or templates.exists(template, "subject")):
        raise UsageError(f"unknown template '{template}' in {config.templates_dir}",
                         f"known templates: {', '.join(known_templates(config.templates_dir)) or 'none'}")
    sender = config.file.sender
    notes: list[str] = []
    cc: list[str] = []
    if invoice_id:
        case = ledger.case_for_invoice(invoice_id)
        invoice = ledger.invoice(invoice_id)
        if case is None or invoice is None:
            raise UsageError(f"no case for invoice {invoice_id} in the ledger",
                             "`dunctl status --all` lists the cases; or preview a sample with --failure TYPE")
        case, invoice = dict(case), dict(invoice)
        customer = ledger.customer(case["customer_id"])
        customer = dict(customer) if customer is not None else None
        step = _step_using(config, template, case["sequence"])
        context = build_context(case=case, invoice=invoice, customer=customer,
                                payment_method=ledger.payment_method(invoice["payment_method_id"]),
                                update_link=invoice["hosted_invoice_url"], company=sender.company, now=now,
                                sequence=ledger.sequence_definition(case["sequence_hash"]),
                                default_locale=sender.locale, timezone=sender.timezone)
        if channel == "sms":
            to = (customer or {}).get("phone")
        else:
            found = resolve_recipients(step, customer, invoice)  # no step: the default, billing_contact
            to, cc = ", ".join(found.to) or None, found.cc
            notes += [f"left out {address}: {why}" for address, why in found.rejected]
        source = f"invoice {invoice_id} ({case['failure_type']}, sequence {case['sequence']})"
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
    from dunctl.channels import EmailMessage
    from dunctl.channels.email import build_message

    if preview.channel != "email":
        raise UsageError(f"'{preview.template}' is an SMS template: use --format text")
    headers = {"X-Dunctl-Preview": preview.source}
    if preview.invoice_id and preview.step:  # the headers the tick adds to this case's message
        headers.update({"X-Dunctl-Case": preview.invoice_id, "X-Dunctl-Step": preview.step})
    to = preview.to.split(", ") if preview.to else ["preview@example.invalid"]
    message = EmailMessage(to, preview.subject or "", preview.text, preview.html, headers, cc=preview.cc)
    return build_message(message, sender=preview.sender, reply_to=preview.reply_to,
                         key=f"preview:{preview.template}", now=now).data
