"""The collections packet: one case's whole story for whoever collects next (an agency, a lawyer, a colleague),
as one JSON and one HTML file: the invoice, the customer and its contacts, every message sent with its text,
every payment attempt and decline, promises and disputes, and the timeline. `dunctl case export` writes it."""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path

from dunctl.cases import show
from dunctl.clock import from_iso
from dunctl.config import Config
from dunctl.errors import DunctlError
from dunctl.ledger import Ledger
from dunctl.ledger import receivables as store
from dunctl.money import format_amount
from dunctl.preview import render_preview
from dunctl.receivables.page import STYLE

MESSAGES = ("email", "sms")
SCHEMA = "dunctl.collections-packet/1"


def _message(config: Config, ledger: Ledger, invoice_id: str, action: dict, templates: dict) -> dict:
    """A message sent, with its text as its template renders for this case at the time it went out."""
    entry = {"step": action["step_id"], "channel": action["channel"] or action["action"],
             "sent_at": action["finished_at"], "to": action["recipient"], "detail": action["detail"]}
    template = templates.get(action["step_id"])
    if template:
        try:
            shown = render_preview(config, template, ledger=ledger, invoice_id=invoice_id,
                                   now=from_iso(action["finished_at"]))
            entry.update(subject=shown.subject, text=shown.text)
        except DunctlError as exc:     # a template edited or removed since: say so, keep the rest of the packet
            entry["text_unavailable"] = str(exc)
    return entry


def packet(ledger: Ledger, config: Config, invoice_id: str) -> dict:
    detail = show(ledger, invoice_id)
    data = detail.to_dict()
    case, invoice = data["case"], data["invoice"]
    steps = ledger.cases.sequence_definition(detail.case["sequence_hash"]).get("steps", [])
    templates = {s["id"]: s.get("template") for s in steps}
    actions = detail.actions
    sent = [a for a in actions if a["action"] in MESSAGES and a["status"] == "done"]
    customer = detail.customer or {}
    return {
        "schema": SCHEMA,
        "invoice": {k: invoice.get(k) for k in ("id", "number", "currency", "amount_due", "amount_paid",
                                                 "amount_remaining", "status", "created_at", "due_date",
                                                 "collection_method", "hosted_invoice_url", "invoice_pdf",
                                                 "lines")},
        "amount_remaining_text": format_amount(invoice["amount_remaining"], invoice["currency"]),
        "customer": {"id": case["customer_id"], "name": customer.get("name"), "email": customer.get("email"),
                     "phone": customer.get("phone"), "billing_email": json.loads(customer.get("metadata") or "{}")
                     .get("billing_email")},
        "case": {k: case.get(k) for k in ("state", "segment", "sequence", "failure_type", "first_failed_at",
                                           "opened_at", "closed_at", "close_reason", "held_because", "attempts")},
        "messages": [_message(config, ledger, invoice_id, a, templates) for a in sent],
        "attempts": [e for e in detail.timeline if e["kind"] in ("failed", "attempt", "retry", "reclassified")],
        "holds": store.holds_of(ledger.conn, case["id"]),
        "actions": [{k: a[k] for k in ("step_id", "action", "status", "due_at", "finished_at", "recipient",
                                        "detail")} for a in actions],
        "timeline": [{k: e[k] for k in ("at", "kind", "summary")} for e in detail.timeline],
    }


def to_html(p: dict) -> str:
    e = html.escape
    inv, who, case = p["invoice"], p["customer"], p["case"]
    number = e(inv["number"] or inv["id"])
    contact = e(who["billing_email"] or who["email"] or "no email") + (", " + e(who["phone"]) if who["phone"] else "")
    due = e((inv["due_date"] or case["first_failed_at"] or "")[:10])
    parts = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Collections packet: {number}</title>", STYLE, "</head><body>",
             f"<h1>Invoice {number}: {e(p['amount_remaining_text'])} open</h1>",
             f"<p>Customer: {e(who['name'] or who['id'])} ({e(who['id'])}), {contact}</p>",
             f"<p>Due {due}; case {e(case['state'])} ({e(case['sequence'])}). "
             f"Pay: {e(inv['hosted_invoice_url'] or '-')}</p>",
             "<h2>Messages sent</h2>"]
    for m in p["messages"]:
        parts.append(f"<h3>{e(m['sent_at'] or '')} · {e(m['channel'])} to {e(m['to'] or '-')}: "
                     f"{e(m.get('subject') or m['step'])}</h3><pre>{e(m.get('text') or m.get('detail') or '')}</pre>")
    parts.append("<h2>Promises and disputes</h2><ul>")
    parts += [f"<li>{e(h['kind'])} recorded {e(h['created_at'])}, until {e(h['until'] or '-')}: "
              f"{e(h['outcome'] or 'open')}{' (' + e(h['reason']) + ')' if h['reason'] else ''}</li>" for h in p["holds"]]
    parts.append("</ul><h2>Timeline</h2><table>")
    parts += [f"<tr><td>{e(t['at'])}</td><td>{e(t['kind'])}</td><td>{e(t['summary'])}</td></tr>"
              for t in p["timeline"]]
    parts.append("</table></body></html>")
    return "\n".join(parts) + "\n"


def write(p: dict, directory: Path) -> list[Path]:
    """`<invoice>.json` and `<invoice>.html` in `directory` (created), each written whole or not at all."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in (("json", json.dumps(p, indent=2, default=str) + "\n"), ("html", to_html(p))):
        path = directory / f"{p['invoice']['id']}.{suffix}"
        partial = path.with_suffix(f".{suffix}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
        written.append(path)
    return written


def export_directory(config: Config, given: str | None) -> Path:
    """Where `case export` writes: the directory given; else `collections.dir`, where the hand-offs' packets are
    (an AR lead finds every packet in one place); else, with the packets sent only to a webhook, the current
    directory."""
    if given is not None:
        return Path(given)
    if config.file.collections.dir is not None:
        return (config.base_dir / config.file.collections.dir).resolve()
    return Path.cwd()


def export(ledger: Ledger, config: Config, invoice_id: str, directory: str | None, now: datetime) -> list[Path]:
    target = export_directory(config, directory)
    paths = write(packet(ledger, config, invoice_id), target)
    case = ledger.cases.for_invoice(invoice_id)
    with ledger.transaction():
        ledger.cases.add_timeline(case["id"], now, "exported", f"collections packet written to {target}")
    return paths
