"""A statement of account: every open invoice of one customer, per currency, with its number, issue and due dates,
days overdue, amount remaining and payment link, and a total per currency (never summed across currencies)."""

from __future__ import annotations

import html
from dataclasses import asdict, dataclass, field
from datetime import datetime

from dunctl.receivables.page import STYLE
from dunctl.clock import from_iso, iso
from dunctl.errors import UsageError
from dunctl.ledger import Ledger
from dunctl.ledger import receivables as store
from dunctl.money import format_day, format_money, to_major


@dataclass
class StatementLine:
    invoice_id: str
    number: str
    issued: str               # YYYY-MM-DD
    due: str
    days_overdue: int         # negative: days until due
    amount_remaining: int     # minor units
    amount: str               # formatted, with its currency
    link: str | None


@dataclass
class CurrencySection:
    currency: str
    lines: list[StatementLine] = field(default_factory=list)
    total: int = 0
    total_text: str = ""
    overdue: int = 0          # of the total, past its due date
    overdue_text: str = ""


@dataclass
class Statement:
    customer_id: str
    customer_name: str | None
    as_of: str
    currencies: list[CurrencySection] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        for section in data["currencies"]:
            section["total_major"] = to_major(section["total"], section["currency"])
        return data


def statement(ledger: Ledger, customer_id: str, now: datetime, locale: str = "en") -> Statement:
    customer = ledger.sync.customer(customer_id)
    if customer is None:
        raise UsageError(f"unknown customer {customer_id!r}", "give a Stripe customer id the ledger knows "
                         "(`dunctl sync` first if it is new)")
    sections: dict[str, CurrencySection] = {}
    for row in store.open_invoices_of(ledger.conn, customer_id):
        currency, due = row["currency"], from_iso(row["due"])
        section = sections.setdefault(currency, CurrencySection(currency))
        days = (now - due).days
        section.lines.append(StatementLine(
            row["id"], row["number"] or row["id"], (row["created_at"] or "")[:10], iso(due)[:10], days,
            row["amount_remaining"], format_money(row["amount_remaining"], currency, locale),
            row["hosted_invoice_url"]))
        section.total += row["amount_remaining"]
        section.overdue += row["amount_remaining"] if days > 0 else 0
    for section in sections.values():
        section.total_text = format_money(section.total, section.currency, locale)
        section.overdue_text = format_money(section.overdue, section.currency, locale)
    return Statement(customer_id, customer.get("name"), format_day(now, locale),
                     [sections[c] for c in sorted(sections)])


def _due_words(days: int) -> str:
    return f"{days} days overdue" if days > 0 else "due today" if days == 0 else f"due in {-days} days"


def to_text(s: Statement, company: str) -> str:
    lines = [f"Statement of account from {company}", f"Customer: {s.customer_name or s.customer_id} "
             f"({s.customer_id})", f"As of {s.as_of}", ""]
    if not s.currencies:
        lines.append("Nothing is open: thank you.")
    for section in s.currencies:
        lines.append(f"In {section.currency.upper()}:")
        for line in section.lines:
            lines.append(f"  {line.number}  issued {line.issued}  due {line.due}  {_due_words(line.days_overdue)}"
                         f"  {line.amount}")
            if line.link:
                lines.append(f"    pay: {line.link}")
        lines.append(f"  Total open in {section.currency.upper()}: {section.total_text} "
                     f"(of which overdue: {section.overdue_text})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def to_html(s: Statement, company: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Statement of account, "
             f"{e(s.customer_name or s.customer_id)}</title>{STYLE}</head><body>",
             f"<h1>Statement of account from {e(company)}</h1>",
             f"<p>Customer: {e(s.customer_name or s.customer_id)} ({e(s.customer_id)})<br>As of {e(s.as_of)}</p>"]
    if not s.currencies:
        parts.append("<p>Nothing is open: thank you.</p>")
    for section in s.currencies:
        parts.append(f"<h2>{e(section.currency.upper())}</h2><table><thead><tr><th>Invoice</th>"
                     "<th class=\"issued\">Issued</th><th>Due</th><th>Status</th>"
                     "<th class=\"amount\">Amount remaining</th><th></th></tr></thead><tbody>")
        for line in section.lines:
            link = f"<a href=\"{e(line.link)}\">Pay</a>" if line.link else ""
            parts.append(f"<tr><td>{e(line.number)}</td><td class=\"date issued\">{e(line.issued)}</td>"
                         f"<td class=\"date\">{e(line.due)}</td><td>{e(_due_words(line.days_overdue))}</td>"
                         f"<td class=\"amount\">{e(line.amount)}</td><td>{link}</td></tr>")
        # the label spans invoice, due and status; the issue date's cell goes with its column on a phone
        parts.append(f"</tbody><tfoot><tr><th colspan=\"3\">Total open in {e(section.currency.upper())} (overdue: "
                     f"{e(section.overdue_text)})</th><th class=\"issued\"></th>"
                     f"<th class=\"amount\">{e(section.total_text)}</th><th></th></tr></tfoot></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
