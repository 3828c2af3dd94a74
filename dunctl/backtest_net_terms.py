"""The net-terms invoices a backtest (`simulate --from-ledger`) replays beside the failed card invoices: every one
the ledger holds (issued in the period), with its customer, amount, lines and due date. What their customers do is
the simulation's net-terms model (dunctl/simulation/net_terms.py), not fitted: the candidates' reminder cadences
are compared on the same invoices with the same luck, as card sequences are."""

from __future__ import annotations

import json
from datetime import datetime

from dunctl.clock import from_iso, iso
from dunctl.ledger import Ledger
from dunctl.ledger.views import net_terms as q
from dunctl.model import Customer, InvoiceLine
from dunctl.simulation.net_terms import HistoricalNetTermsInvoice


def load_net_terms_history(ledger: Ledger, since: datetime | None = None,
                           until: datetime | None = None) -> list[HistoricalNetTermsInvoice]:
    items = []
    for row in q.history(ledger, iso(since), iso(until)):
        customer = Customer(id=row["customer_id"], name=row["name"], email=row["email"], phone=row["phone"],
                            metadata=json.loads(row["customer_metadata"] or "{}"),
                            preferred_locale=row["preferred_locale"], timezone=row["timezone"])
        lines = [InvoiceLine(line.get("description"), int(line.get("amount") or 0), line.get("quantity"))
                 for line in json.loads(row["lines"] or "[]")]
        items.append(HistoricalNetTermsInvoice(
            invoice_id=row["invoice_id"], customer=customer, currency=row["currency"], amount_due=row["amount_due"],
            number=row["number"], created=from_iso(row["created_at"]), due_date=from_iso(row["due_date"]),
            lines=lines or [InvoiceLine("Replayed invoice", row["amount_due"], 1)]))
    return items
