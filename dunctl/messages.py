"""What a message says: the context a template sees, and rendering in a sandbox.

Templates live in the config's templates dir as `<name>.subject.j2`, `<name>.txt.j2`, optional `<name>.html.j2`
(email) and `<name>.sms.j2` (SMS). They are rendered with a sandboxed Jinja2 environment, StrictUndefined (a typo in
a template is an error in `dunctl check`, never a blank in a customer's inbox) and HTML autoescape.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from dunctl.clock import from_iso
from dunctl.errors import ConfigProblem
from dunctl.failures import PLAIN_WORDS, UNKNOWN, shown_code
from dunctl.money import format_amount


class Templates:
    @classmethod
    @functools.lru_cache(maxsize=16)
    def for_dir(cls, directory: Path) -> Templates:
        """One environment per directory, so compiled templates are reused across ticks (Jinja still reloads a
        template whose file changed)."""
        return cls(directory)

    def __init__(self, directory: Path):
        self.directory = directory
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), default_for_string=False),
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["money"] = lambda amount, currency: format_amount(int(amount), currency)

    def exists(self, name: str, kind: str) -> bool:
        return (self.directory / f"{name}.{kind}.j2").exists()

    def render(self, name: str, kind: str, context: dict) -> str:
        template = self.env.get_template(f"{name}.{kind}.j2")
        return template.render(**context)

    def render_email(self, name: str, context: dict) -> tuple[str, str, str | None]:
        subject = " ".join(self.render(name, "subject", context).split())
        text = self.render(name, "txt", context)
        html = self.render(name, "html", context) if self.exists(name, "html") else None
        return subject, text, html

    def render_sms(self, name: str, context: dict) -> str:
        return " ".join(self.render(name, "sms", context).split())

    def check(self, names: dict[str, str], contexts: list[dict]) -> list[ConfigProblem]:
        """Render every named template ({name: 'email' | 'sms'}) against each sample context (one per kind of
        failure, so every branch a template takes is rendered); one problem per file at most."""
        problems = []
        for name, kind in sorted(names.items()):
            parts = ("sms",) if kind == "sms" else ("subject", "txt", "html")
            for part in parts:
                if part == "html" and not self.exists(name, "html"):
                    continue
                file = self.directory / f"{name}.{part}.j2"
                for context in contexts:
                    try:
                        self.render(name, part, context)
                    except TemplateError as exc:
                        line = getattr(exc, "lineno", None)
                        problems.append(ConfigProblem(str(file), "", f"does not render for a {context['failure']['type']} "
                                                                     f"case: {exc}", line))
                        break
        return problems


def recipient(rule: str, customer: dict | None, invoice: dict) -> str | None:
    """Who a message goes to. billing_contact: the customer's metadata.billing_email, else the invoice's
    customer email, else the customer's; customer: the customer's email; account_manager: metadata."""
    metadata = json.loads(customer["metadata"]) if customer else {}
    customer_email = customer["email"] if customer else None
    if rule == "account_manager":
        return metadata.get("account_manager_email")
    if rule == "customer":
        return customer_email or invoice.get("customer_email")
    return metadata.get("billing_email") or invoice.get("customer_email") or customer_email


def build_context(*, case: dict, invoice: dict, customer: dict | None, payment_method: dict | None,
                  update_link: str | None, company: str, now: datetime) -> dict:
    """Everything a template may use. Amounts are pre-formatted for the invoice's currency."""
    currency = invoice["currency"]
    first_failed = from_iso(case["first_failed_at"])
    lines = json.loads(invoice["lines"] or "[]")
    usage_lines = [line for line in lines if line.get("metered")]
    decline = json.loads(invoice["decline"]) if invoice.get("decline") else {}
    failure_type = case["failure_type"] or UNKNOWN
    name = (customer or {}).get("name") or invoice.get("customer_name") or ""
    return {
        "company": company,
        "customer": {"id": case["customer_id"], "name": name, "first_name": name.split(" ")[0] if name else "",
                     "email": (customer or {}).get("email"), "locale": (customer or {}).get("preferred_locale")},
        "invoice": {
            "id": invoice["id"],
            "number": invoice["number"] or invoice["id"],
            "currency": currency,
            "amount_due": format_amount(invoice["amount_due"], currency),
            "amount_remaining": format_amount(invoice["amount_remaining"], currency),
            "hosted_invoice_url": invoice["hosted_invoice_url"],
            "usage_based": bool(usage_lines),
            "lines": [{**line, "amount": format_amount(line["amount"], currency)} for line in lines],
            "usage_lines": [{**line, "amount": format_amount(line["amount"], currency)} for line in usage_lines],
        },
        "amount": format_amount(invoice["amount_remaining"], currency),
        "update_link": update_link or invoice["hosted_invoice_url"] or "",
        "failure": {"type": failure_type, "plain": PLAIN_WORDS.get(failure_type, PLAIN_WORDS[UNKNOWN]),
                    "code": shown_code(decline)},
        "payment_method": {
            "type": (payment_method or {}).get("type") or invoice.get("payment_method_type"),
            "brand": (payment_method or {}).get("brand"),
            "last4": (payment_method or {}).get("last4"),
        },
        "days_since_failure": max(0, (now - first_failed).days) if first_failed else 0,
        "attempts": case["attempts"],
        "case": {"segment": case["segment"], "sequence": case["sequence"]},
    }


def sample_contexts(company: str = "Acme") -> list[dict]:
    """Sample cases for `dunctl check`, one per failure type, so templates that branch on it render every branch."""
    from dunctl.failures import FAILURE_TYPES

    return [sample_context(company, failure_type) for failure_type in FAILURE_TYPES]


def sample_context(company: str = "Acme", failure_type: str = "card_soft") -> dict:
    """A representative case for `dunctl check`: usage-based, with a card, in USD."""
    case = {"customer_id": "cus_sample", "first_failed_at": "2026-01-01T00:00:00Z", "failure_type": failure_type,
            "attempts": 2, "segment": "default", "sequence": "standard"}
    invoice = {"id": "in_sample", "number": "ACME-0042", "currency": "usd", "amount_due": 12900,
               "amount_remaining": 12900, "hosted_invoice_url": "https://invoice.stripe.com/i/sample",
               "customer_name": "Ada Lovelace", "customer_email": "ada@example.com",
               "payment_method_type": "card",
               "decline": json.dumps({"decline_code": "insufficient_funds"}),
               "lines": json.dumps([
                   {"description": "Pro plan", "amount": 9900, "quantity": 1, "metered": False},
                   {"description": "API calls (30,000 over plan)", "amount": 3000, "quantity": 30000,
                    "metered": True}])}
    customer = {"name": "Ada Lovelace", "email": "ada@example.com", "metadata": "{}"}
    method = {"type": "card", "brand": "visa", "last4": "4242"}
    return build_context(case=case, invoice=invoice, customer=customer, payment_method=method,
                         update_link="https://billing.stripe.com/p/session/sample", company=company,
                         now=datetime.fromisoformat("2026-01-04T00:00:00+00:00"))


def escalation_text(case: dict, invoice: dict, customer: dict | None, actions: list[dict], reason: str) -> str:
    """The full context a person needs to take a case over, as plain text (Slack mrkdwn-friendly)."""
    currency = invoice["currency"]
    decline = json.loads(invoice["decline"]) if invoice.get("decline") else {}
    sent = [a for a in actions if a["status"] == "done" and a["action"] in ("email", "sms")]
    lines = [
        f"*{reason}*: invoice {invoice['number'] or invoice['id']} for "
        f"{(customer or {}).get('name') or case['customer_id']} ({(customer or {}).get('email') or 'no email'})",
        f"Amount remaining: {format_amount(invoice['amount_remaining'], currency)} "
        f"of {format_amount(invoice['amount_due'], currency)}",
        f"Failure: {case['failure_type']} ({shown_code(decline) or 'no code'})"
        f", {case['attempts']} payment attempt(s), first failed {case['first_failed_at']}",
        f"Segment {case['segment']}, sequence {case['sequence']}",
        f"Messages sent: {len(sent)}" + (": " + ", ".join(f"{a['step_id']} ({a['finished_at']})" for a in sent)
                                          if sent else ""),
    ]
    if invoice.get("hosted_invoice_url"):
        lines.append(f"Invoice: {invoice['hosted_invoice_url']}")
    return "\n".join(lines)
