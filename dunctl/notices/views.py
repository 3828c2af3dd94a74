"""What people look at: notices due soon (for `status`) and one customer's history (for `customer show`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from dunctl.errors import UsageError
from dunctl.ledger import Ledger
from dunctl.ledger.views.notices import due_within

UPCOMING_DAYS = 14


@dataclass
class UpcomingNotice:
    kind: str
    offset: str
    object_id: str
    customer_id: str
    customer: str
    due_at: str
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


def upcoming(ledger: Ledger, now: datetime, days: int = UPCOMING_DAYS) -> list[UpcomingNotice]:
    """Notices still to be sent within `days` (overdue ones included: the next tick sends them)."""
    return [UpcomingNotice(n["kind"], n["offset"], n["object_id"], n["customer_id"],
                           n["customer_name"] or n["customer_email"] or n["customer_id"], n["next_due_at"],
                           n["status"])
            for n in due_within(ledger, now + timedelta(days=days))]


@dataclass
class CustomerHistory:
    customer: dict
    subscriptions: list[dict]
    notices: list[dict]
    cases: list[dict]
    timeline: list[dict] = field(default_factory=list)   # notices and case events, oldest first

    def to_dict(self) -> dict:
        customer = {**self.customer, "metadata": json.loads(self.customer.get("metadata") or "{}")}
        notices = [{**n, "data": json.loads(n["data"] or "{}")} for n in self.notices]
        cases = [{k: v for k, v in c.items() if k != "sequence_def"} for c in self.cases]
        # notices_basis is planning's own bookkeeping (a digest, dunctl/notices/planning.py), not a fact to show
        subscriptions = [{k: v for k, v in s.items() if k != "notices_basis"} for s in self.subscriptions]
        return {"customer": customer, "subscriptions": subscriptions, "notices": notices, "cases": cases,
                "timeline": self.timeline}


def customer_history(ledger: Ledger, customer_id: str) -> CustomerHistory:
    customer = ledger.sync.customer(customer_id)
    if customer is None:
        raise UsageError(f"no customer {customer_id} in the ledger",
                         "customers arrive with sync; check the id (cus_...) or run `dunctl sync`")
    notices = ledger.notices.of_customer(customer_id)
    cases = ledger.cases.of_customer(customer_id)
    timeline = []
    for n in notices:
        at = n["finished_at"] or n["due_at"]
        what = f"{n['kind']} ({n['offset']} before, {n['object_id']})" if n["kind"] in ("card_expiring",
                                                                                       "upcoming_renewal") \
            else f"{n['kind']} ({n['offset']}, {n['object_id']})"
        detail = n["error"] or n["subject"] or n["detail"] or ""
        timeline.append({"at": at, "kind": f"notice {n['status']}", "summary": f"{what}: {detail}".rstrip(": ")})
    for c in cases:
        for entry in ledger.cases.timeline(c["id"]):
            timeline.append({"at": entry["at"], "kind": entry["kind"], "summary": f"{c['invoice_id']}: "
                                                                                   f"{entry['summary']}"})
    timeline.sort(key=lambda e: e["at"] or "")
    return CustomerHistory(customer, ledger.sync.customer_subscriptions(customer_id), notices, cases, timeline)
