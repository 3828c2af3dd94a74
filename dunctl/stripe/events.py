"""Stripe events -> what dunctl records: one handler per event type dunctl follows (EVENT_HANDLERS).

A new event type is one function and one entry in EVENT_HANDLERS and EVENT_TYPES (tests/test_stripe_events.py
fails when the two differ). Handlers gather a page of events into `Gathered` before any invoice is fetched:
the newest snapshot of each invoice wins, its first failure is the earliest seen, and the ledger never moves paid
or void back to open, so events out of order are fine. The few objects an event does not carry whole (a
subscription in an older API version, a dispute's charge, a mandate's payment method) come through a `Reader`
(dunctl/stripe/client.py's StripeRequests), which fetches them in the pinned API version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from dunctl.clock import from_unix, iso
from dunctl.model import Signal, SyncBatch
from dunctl.stripe.client import PINNED_API_VERSION
from dunctl.stripe.convert import (customer_from, describe_method, id_of, payment_method_from, subscription_field,
                                   subscription_from)

# Stripe's GET /v1/events takes at most 20 `types`, and an idle sync is that one request: every type the sync
# handles is here, and nothing it does not. Not `invoice.payment_succeeded`: Stripe sends it with `invoice.paid`
# for every paid attempt, and `invoice.paid` also covers invoices marked paid out of band.
EVENT_TYPES = (
    "invoice.payment_failed", "invoice.paid", "invoice.payment_action_required",
    "invoice.voided", "invoice.marked_uncollectible", "invoice.updated", "invoice.upcoming",
    "customer.source.expiring", "payment_method.automatically_updated", "payment_method.updated",
    "charge.dispute.created", "customer.subscription.updated", "customer.subscription.deleted", "customer.updated",
    "customer.subscription.paused", "charge.dispute.closed", "mandate.updated",
    # Net-terms invoices (dunctl/receivables) never fail: a new one is known from its finalization. The slot is
    # customer.subscription.resumed's: Stripe also sends customer.subscription.updated leaving status paused,
    # which gives the same subscription_resumed signal (subscription_signals).
    "invoice.finalized",
    "customer.subscription.created",   # pre-dunning (dunctl/notices): new subscriptions
    "payment_method.attached",         # pre-dunning: a new card's expiry, known before it is made the default
)
MAX_EVENT_TYPES = 20


class Reader(Protocol):
    """What the handlers fetch from Stripe (StripeRequests implements it)."""

    def fetch(self, kind: str, object_id: str) -> dict:
        """The object ('invoice', 'subscription' or 'payment_method') as it is now, complete."""

    def complete_items(self, subscription: dict) -> dict:
        """The subscription with every item (Stripe embeds the first 10)."""

    def charge(self, charge_id: str) -> dict:
        """The charge, as JSON."""

    def invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        """The id of the invoice the payment intent paid, if any."""


@dataclass(frozen=True)
class Event:
    """One event as the handlers see it."""

    raw: dict
    order: int                  # its place in the page, oldest first: breaks ties of one second

    @property
    def kind(self) -> str:
        return self.raw["type"]

    @property
    def data(self) -> dict:
        return self.raw["data"]["object"]

    @property
    def previous(self) -> dict:
        return self.raw["data"].get("previous_attributes") or {}

    @property
    def at(self) -> datetime:
        return from_unix(self.raw["created"])

    @property
    def old_shape(self) -> bool:
        """Rendered in an API version older than the one dunctl pins (versions sort by their date)."""
        version = self.raw.get("api_version")
        return bool(version) and version[:10] < PINNED_API_VERSION[:10]


@dataclass
class Gathered:
    """What a page of events says, before any invoice is fetched."""

    batch: SyncBatch = field(default_factory=SyncBatch)
    latest: dict[str, tuple[int, int, dict]] = field(default_factory=dict)   # invoice -> (created, order, snapshot)
    failures: dict[str, dict] = field(default_factory=dict)                  # invoice -> first/last failure seen
    settled: set[str] = field(default_factory=set)                           # invoices paid
    count_before_rise: dict[str, int] = field(default_factory=dict)
    refetch: set[str] = field(default_factory=set)                           # snapshots in an older API shape
    uncounted: set[str] = field(default_factory=set)                         # paid by an attempt not counted
    paid_rose: dict[str, int] = field(default_factory=dict)                  # invoice -> when amount_paid rose


Handler = Callable[[Event, Gathered, Reader], None]


def gather(events: list[dict], reader: Reader) -> Gathered:
    """Run each event (oldest first, each id once) through its handler."""
    found = Gathered()
    seen: set[str] = set()
    for order, raw in enumerate(events):
        if raw["id"] in seen:
            continue
        seen.add(raw["id"])
        request_key = str((raw.get("request") or {}).get("idempotency_key") or "")
        if request_key.startswith("dunctl-"):
            found.batch.dunctl_keys.append(request_key)   # what dunctl did, as the account saw it: a stale-ledger check
        handler = EVENT_HANDLERS.get(raw["type"])
        if handler is not None:        # Stripe lists only EVENT_TYPES; anything else is not ours to read
            handler(Event(raw, order), found, reader)
    return found


# -- invoices --------------------------------------------------------------------------------------------------

def _invoice_snapshot(event: Event, found: Gathered) -> bool:
    """Keep the newest snapshot of the invoice; False for one dunctl does not follow (no id, a draft)."""
    data = event.data
    if not data.get("id") or data.get("status") == "draft":
        return False
    key = (event.raw["created"], event.order)
    if data["id"] not in found.latest or key >= found.latest[data["id"]][:2]:
        found.latest[data["id"]] = (event.raw["created"], event.order, data)
    if event.old_shape:
        found.refetch.add(data["id"])
    before = event.previous.get("amount_paid")
    if isinstance(before, int) and (data.get("amount_paid") or 0) > before:
        # a payment, in part or in full: Stripe's time for it (a partial payment has no other on the invoice)
        found.paid_rose[data["id"]] = max(found.paid_rose.get(data["id"], 0), event.raw["created"])
    found.batch.signals.extend(new_default(data, event.previous, event.at, event.raw, invoice_id=data["id"]))
    return True


def _invoice_failed(event: Event, found: Gathered, reader: Reader) -> None:
    if not _invoice_snapshot(event, found):
        return
    data, created = event.data, event.raw["created"]
    failure = found.failures.setdefault(data["id"], {"first": created, "last": created, "payment_intent": None})
    failure["first"] = min(failure["first"], created)
    failure["last"] = max(failure["last"], created)
    failure["count"] = max(failure.get("count", 0), data.get("attempt_count") or 0)
    if isinstance(data.get("payment_intent"), str):      # an event in the old API shape
        failure["payment_intent"] = data["payment_intent"]


def _invoice_paid(event: Event, found: Gathered, reader: Reader) -> None:
    if not _invoice_snapshot(event, found):
        return
    found.settled.add(event.data["id"])
    if "attempt_count" not in event.previous:
        # Paid by an attempt Stripe did not count (the hosted page, invoices.pay): its count holds nothing new,
        # only schedule steps skipped without a charge, which no retry earned.
        found.uncounted.add(event.data["id"])


def _invoice_changed(event: Event, found: Gathered, reader: Reader) -> None:
    if not _invoice_snapshot(event, found):
        return
    previous, invoice_id = event.previous, event.data["id"]
    if "attempt_count" in previous:
        # The count rose without a failed attempt (Stripe's schedule moving on after a decline it will not
        # retry): keep the count of attempts that happened.
        found.count_before_rise[invoice_id] = min(found.count_before_rise.get(invoice_id, previous["attempt_count"]),
                                                  previous["attempt_count"])


def _invoice_finalized(event: Event, found: Gathered, reader: Reader) -> None:
    # A card invoice matters once it fails; only net-terms ones are followed from their finalization.
    if event.data.get("collection_method") == "send_invoice":
        _invoice_changed(event, found, reader)


def _invoice_upcoming(event: Event, found: Gathered, reader: Reader) -> None:
    data = event.data
    subscription = id_of(subscription_field(data))
    found.batch.signals.append(Signal("invoice_upcoming", event.at, customer_id=id_of(data.get("customer")),
                                      detail=f"{data.get('amount_due')} {data.get('currency')} due"
                                             + (f" on {subscription}" if subscription else ""),
                                      source_id=event.raw["id"]))


def new_default(data: dict, previous: dict, at: datetime, event: dict, **where) -> list[Signal]:
    """A new default payment method on an invoice or a subscription: these come before the customer's default
    when Stripe picks the card (invoice, then subscription, then customer), so each is a new card to retry."""
    if "default_payment_method" not in previous:
        return []
    new = id_of(data.get("default_payment_method"))
    if not new or new == id_of(previous.get("default_payment_method")):
        return []
    return [Signal("payment_method_updated", at, customer_id=id_of(data.get("customer")), payment_method_id=new,
                   detail=f"new default payment method {new} on {data.get('object')} {data.get('id')}",
                   source_id=event["id"], **where)]


def adjusted_snapshot(found: Gathered, invoice_id: str, snapshot: dict) -> dict:
    """The snapshot with the attempt count the ledger should keep: the attempts that happened, not the schedule
    steps Stripe skipped after a decline it will not retry, nor the ones a payment made without an attempt."""
    if invoice_id in found.count_before_rise and invoice_id not in found.settled and snapshot.get("status") == "open":
        return {**snapshot, "attempt_count": found.count_before_rise[invoice_id]}
    if invoice_id in found.uncounted and snapshot.get("status") == "paid":
        # The ledger keeps the highest count it saw: the attempts it knew stay, the skipped steps do not.
        known = max(found.count_before_rise.get(invoice_id, 0), found.failures.get(invoice_id, {}).get("count", 0))
        return {**snapshot, "attempt_count": min(known, snapshot.get("attempt_count") or 0)}
    return snapshot


# -- subscriptions ---------------------------------------------------------------------------------------------

def _subscription(event: Event, found: Gathered, reader: Reader) -> None:
    data = event.data
    current = reader.fetch("subscription", data["id"]) if event.old_shape else reader.complete_items(data)
    found.batch.subscriptions.append(subscription_from(current))
    found.batch.signals.extend(subscription_signals(event.kind, current, event.previous, event.at, event.raw))
    found.batch.signals.extend(new_default(current, event.previous, event.at, event.raw,
                                           subscription_id=current.get("id")))


def _cancelled(sub: dict, previous: dict) -> list[tuple[str, str, dict]]:
    details = sub.get("cancellation_details") or {}
    reason = details.get("reason") or "cancelled"
    return [("subscription_canceled", f"subscription cancelled ({reason}"
             + (f": {details['comment']}" if details.get("comment") else "") + ")",
             {"reason": details.get("reason"), "comment": details.get("comment"),
              "feedback": details.get("feedback")})]


def _paused(sub: dict, previous: dict) -> list[tuple[str, str, dict]]:
    return [("subscription_paused", "subscription paused (status paused)", {"status": "paused"})]


def _resumed(sub: dict, previous: dict) -> list[tuple[str, str, dict]]:
    return [("subscription_resumed", "subscription resumed", {"status": sub.get("status")})]


def _updated(sub: dict, previous: dict) -> list[tuple[str, str, dict]]:
    """What changed in a customer.subscription.updated (or .created): a scheduled cancellation, a pause of
    collection, a status moving to or from paused."""
    found: list[tuple[str, str, dict]] = []
    if "cancel_at_period_end" in previous or "cancel_at" in previous:
        if sub.get("cancel_at_period_end") or sub.get("cancel_at"):
            found.append(("subscription_cancel_scheduled",
                          f"subscription set to cancel on {iso(from_unix(sub.get('cancel_at')))}",
                          {"cancel_at": iso(from_unix(sub.get("cancel_at"))),
                           "cancel_at_period_end": bool(sub.get("cancel_at_period_end"))}))
        else:
            found.append(("subscription_resumed", "scheduled cancellation withdrawn", {"status": sub.get("status")}))
    if "pause_collection" in previous:
        pause = sub.get("pause_collection") or None
        if pause:
            found.append(("subscription_paused", f"collection paused ({pause.get('behavior')})",
                          {"behavior": pause.get("behavior"), "resumes_at": iso(from_unix(pause.get("resumes_at")))}))
        else:
            found.append(("subscription_resumed", "collection resumed", {"status": sub.get("status")}))
    if "status" in previous and previous["status"] != sub.get("status"):
        if sub.get("status") == "paused":
            found.extend(_paused(sub, previous))
        elif previous["status"] == "paused":
            found.extend(_resumed(sub, previous))
    return found


_SUBSCRIPTION_CHANGES = {"customer.subscription.deleted": _cancelled, "customer.subscription.paused": _paused}


def subscription_signals(kind: str, sub: dict, previous: dict, at: datetime, event: dict) -> list[Signal]:
    """The lifecycle signals one subscription event carries (see model.Signal for each kind).

    A change reported twice (customer.subscription.paused and the .updated with status paused) gets one
    source_id, so the ledger keeps one signal. `data.by_dunctl` marks changes dunctl made itself (its
    idempotency keys start with 'dunctl-'), so a case is not held for its own suspension step."""
    request = event.get("request") or {}
    by_dunctl = str(request.get("idempotency_key") or "").startswith("dunctl-")
    # Why Stripe paused it (status_details.paused.subscription.type): a payment failure means Stripe's own
    # failed-payment settings did it, not a person; dunctl follows such a pause and never lifts it.
    paused_for = (((sub.get("status_details") or {}).get("paused") or {}).get("subscription") or {}).get("type")
    found = _SUBSCRIPTION_CHANGES.get(kind, _updated)(sub, previous)
    return [Signal(signal_kind, at, customer_id=id_of(sub.get("customer")), subscription_id=sub.get("id"),
                   detail=detail, source_id=f"{signal_kind}:{sub.get('id')}:{event['created']}",
                   data={**data, "event": event["id"], "by_dunctl": by_dunctl,
                         **({"paused_for": paused_for} if signal_kind == "subscription_paused" and paused_for else {})})
            for signal_kind, detail, data in found]


# -- customers and payment methods ------------------------------------------------------------------------------

def _payment_method_updated(event: Event, found: Gathered, reader: Reader) -> None:
    method = payment_method_from(event.data, updated_at=event.at)
    found.batch.payment_methods.append(method)
    # Only a new number or expiry makes the same payment method worth charging again; an edit of its metadata or
    # billing details leaves the card, and its decline, as they were.
    card = event.previous.get("card") if isinstance(event.previous.get("card"), dict) else {}
    if method.customer_id and {"exp_month", "exp_year", "last4", "fingerprint"} & set(card):
        found.batch.signals.append(Signal("payment_method_updated", event.at, customer_id=method.customer_id,
                                          payment_method_id=method.id,
                                          detail=f"{event.kind}: {describe_method(method)} ({method.id})",
                                          source_id=event.raw["id"], data={"card_changed": True}))


def _payment_method_attached(event: Event, found: Gathered, reader: Reader) -> None:
    # Stored, not a signal: the card is not used until it is made the default (customer.updated or
    # customer.subscription.updated say so), but then its expiry is known without another request.
    found.batch.payment_methods.append(payment_method_from(event.data, updated_at=event.at))


def _customer_updated(event: Event, found: Gathered, reader: Reader) -> None:
    data, previous = event.data, event.previous
    found.batch.customers.append(customer_from(data))
    changed = previous.get("invoice_settings", {}) or {}
    if "default_payment_method" not in changed and "default_source" not in previous:
        return
    new = id_of((data.get("invoice_settings") or {}).get("default_payment_method")) or id_of(data.get("default_source"))
    if new:
        found.batch.signals.append(Signal("payment_method_updated", event.at, customer_id=data["id"],
                                          payment_method_id=new, detail=f"new default payment method {new}",
                                          source_id=event.raw["id"]))


def _source_expiring(event: Event, found: Gathered, reader: Reader) -> None:
    data = event.data
    found.batch.signals.append(Signal("card_expiring", event.at, customer_id=id_of(data.get("customer")),
                                      detail=f"{data.get('brand')} ending {data.get('last4')} expires "
                                             f"{data.get('exp_month')}/{data.get('exp_year')}",
                                      source_id=event.raw["id"]))


def _mandate_updated(event: Event, found: Gathered, reader: Reader) -> None:
    data = event.data
    if data.get("status") != "inactive" or event.previous.get("status", "active") == "inactive":
        return
    method_id = id_of(data.get("payment_method"))
    method = reader.fetch("payment_method", method_id) if method_id else {}
    found.batch.signals.append(Signal("mandate_inactive", event.at, customer_id=id_of(method.get("customer")),
                                      payment_method_id=method_id,
                                      detail=f"mandate {data.get('id')} of {method_id} is inactive: "
                                             "the bank will refuse debits",
                                      source_id=event.raw["id"], data={"mandate": data.get("id")}))


# -- disputes --------------------------------------------------------------------------------------------------

def _dispute(event: Event, found: Gathered, reader: Reader) -> None:
    """A dispute concerns the customer, not an open case: it exists only on a captured charge, so the invoice
    that charge paid is already paid (https://docs.stripe.com/disputes). The customer comes from the charge."""
    data, kind = event.data, event.kind
    charge = data.get("charge") if isinstance(data.get("charge"), dict) else None
    if charge is None and data.get("charge"):
        charge = reader.charge(id_of(data["charge"]))
    charge = charge or {}
    due_by = from_unix((data.get("evidence_details") or {}).get("due_by"))
    status = data.get("status")
    facts = {"dispute": data.get("id"), "status": status, "reason": data.get("reason"),
             "amount": data.get("amount"), "currency": data.get("currency"), "evidence_due_by": iso(due_by),
             "charge": id_of(data.get("charge"))}
    what = f"dispute {data.get('id')} ({data.get('reason')}, {data.get('amount')} {data.get('currency')})"
    # The invoice the disputed charge paid: dispute -> payment intent -> invoice payment -> invoice.
    intent = id_of(data.get("payment_intent")) or id_of(charge.get("payment_intent"))
    found.batch.signals.append(Signal(
        "dispute" if kind == "charge.dispute.created" else "dispute_closed", event.at,
        invoice_id=reader.invoice_of_payment_intent(intent) if intent else None,
        customer_id=id_of(charge.get("customer")),
        detail=f"{status}: {what}" if kind == "charge.dispute.closed" else
        f"{what}, evidence due {iso(due_by) or 'unknown'}", source_id=event.raw["id"], data=facts))


EVENT_HANDLERS: dict[str, Handler] = {
    "invoice.payment_failed": _invoice_failed,
    "invoice.payment_action_required": _invoice_failed,
    "invoice.paid": _invoice_paid,
    "invoice.voided": _invoice_changed,
    "invoice.marked_uncollectible": _invoice_changed,
    "invoice.updated": _invoice_changed,
    "invoice.finalized": _invoice_finalized,
    "invoice.upcoming": _invoice_upcoming,
    "customer.source.expiring": _source_expiring,
    "customer.updated": _customer_updated,
    "payment_method.automatically_updated": _payment_method_updated,
    "payment_method.updated": _payment_method_updated,
    "payment_method.attached": _payment_method_attached,
    "charge.dispute.created": _dispute,
    "charge.dispute.closed": _dispute,
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
    "customer.subscription.paused": _subscription,
    "mandate.updated": _mandate_updated,
}
# The events that report a failed attempt (their snapshot is re-read with its decline).
FAILURE_EVENTS = frozenset(kind for kind, handler in EVENT_HANDLERS.items() if handler is _invoice_failed)
