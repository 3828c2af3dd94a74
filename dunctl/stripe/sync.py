"""The Stripe sync: what changed in the account since the cursor, as SyncBatches oldest first.

Two modes, and the cursor (dunctl/stripe/cursor.py, stored with every batch) says which one resumes:
- backfill, on the first run, with `--full`, or when the cursor is older than Stripe keeps events (30 days):
  list the open invoices' failed payments in bulk, note where the events phase will start (BACKFILL_OVERLAP
  before that, by Stripe's clock), then page through the invoices created within `backfill_days` (customers,
  payment methods and subscriptions expanded in the same request), one batch per page, so a backfill that dies
  halfway resumes after its last applied page;
- events, afterwards: `events.list(created[gt]=<the cursor's second>)`, filtered to the event types dunctl
  follows (dunctl/stripe/events.py), applied oldest first. While the cursor's second may still get events (it
  was listed less than SETTLED after it), `created[gte]` instead, skipping the ids of that second already applied
  (Stripe orders events of one second in no promised order). With nothing new that is one request, however many
  events the cursor's second had. The events since the cursor are listed before any is applied (at most 30 days
  of them: an older cursor means a backfill). A failure the backfill of the same run already collected, at the
  same attempt, is not fetched again when its event is read.

What is stored is complete and in the pinned API version: invoice lines and subscription items follow `has_more`;
an event rendered in an older API version re-fetches its object; a copy of an invoice that cannot say which lines
are metered leaves the stored lines alone. An invoice that cannot be stored (an impossible amount, an unknown
currency) becomes a `record_rejected` signal, never an error that blocks the sync.

Times come from Stripe (the event, payment intent or charge `created`), never from the sync's clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from dunctl.clock import from_unix, utc
from dunctl.errors import GatewayError
from dunctl.model import Signal, SyncBatch
from dunctl.stripe.client import INVOICE_EXPAND, PAGE, PAYMENT_EXPAND, StripeRequests
from dunctl.stripe.convert import (collect_payer, deduplicated, id_of, invoice_from, payment_method_from,
                                   subscription_field, subscription_from, unstorable, worth_following)
from dunctl.stripe.cursor import Cursor
from dunctl.stripe.events import EVENT_TYPES, adjusted_snapshot, gather

# Events from this long before a backfill's first request (by Stripe's clock) are read after it: nothing that
# changed while the backfill ran is missed, and what it already collected costs nothing more.
BACKFILL_OVERLAP = timedelta(minutes=5)
BILLED_STATUSES = frozenset({"active", "trialing", "past_due"})     # subscriptions pre-dunning follows


class StripeSync:
    """One account's sync, over its requests; state lives for one run (`run` resets it)."""

    def __init__(self, client: StripeRequests, backfill_days: int):
        self._client = client
        self.backfill_days = backfill_days
        self._sync_now = datetime(1970, 1, 1, tzinfo=timezone.utc)   # the running sync's clock
        self._backfilled: dict[str, int] = {}    # open invoice -> the attempt the running sync's backfill collected
        self._payments_listed_at: datetime | None = None

    def run(self, cursor: dict | None, now: datetime, full: bool = False) -> Iterator[SyncBatch]:
        now = utc(now)
        self._sync_now = now
        self._backfilled = {}
        state = Cursor.load(cursor)
        if state is not None and state.stale(now):
            state = None
        if full or state is None or state.phase == "backfill":
            state = yield from self._backfill(None if full else state, now)
        try:
            yield from self._events(state, now)
        except GatewayError as exc:
            # The cursor's event is gone (Stripe forgot it): nothing to resume from but a backfill.
            if exc.code != "resource_missing":
                raise
            state = yield from self._backfill(None, now)
            yield from self._events(state, now)

    def _backfill(self, state: Cursor | None, now: datetime) -> Iterator[SyncBatch]:
        fresh = state is None
        if fresh:
            state = Cursor.backfill(int((now - timedelta(days=self.backfill_days)).timestamp()), now)
        payments = yield from self._open_payments(state.since)
        if fresh:
            # Stored with the first invoice page: the events from there on are read after the backfill.
            yield from self._events_start(state)
        start = self._client.requests
        params = {"created": {"gte": state.since}, "limit": PAGE, "expand": ["data." + e for e in INVOICE_EXPAND]}
        while True:
            if state.after:
                params["starting_after"] = state.after
            page = self._client.list_page("/v1/invoices", "list invoices", ("invoice", "read"), params)
            batch = self._backfill_page(page["data"], payments, now)
            if page["data"]:
                state.after = page["data"][-1]["id"]
            state.pages += 1
            if not page["has_more"]:
                state = state.backfilled()
            batch.cursor = state.to_dict()
            batch.requests = self._client.requests - start
            start = self._client.requests
            yield deduplicated(batch)
            if not page["has_more"]:
                return state

    def _backfill_page(self, invoices: list[dict], payments: dict[str, dict], now: datetime) -> SyncBatch:
        batch = SyncBatch()
        paid_at: dict[str, int | None] = {}
        for data in invoices:
            if not worth_following(data, now):
                continue
            payment = None
            if data["status"] == "open" and data.get("attempt_count", 0) > 0:
                payment = payments.get(data["id"]) or self._client.payment_of(data)
                self._backfilled[data["id"]] = data["attempt_count"]
            if data["status"] == "open" and data.get("collection_method") == "send_invoice" and data.get("amount_paid"):
                # paid in part: no event says when, its payments do (the journal's date for it)
                paid_at[data["id"]] = self._client.last_paid_at(data["id"])
            self._collect(batch, data, payment)
        for invoice in batch.invoices:
            invoice.amount_paid_at = from_unix(paid_at.get(invoice.id))
        return batch

    def _events_start(self, state: Cursor) -> Iterator[SyncBatch]:
        """Where the events phase after a new backfill starts: BACKFILL_OVERLAP before the backfill's first
        request, by Stripe's clock (that response's Date header: no request spent). Without a Date, the newest
        events' second, one request, as listed (the ids of that second seen). Events the backfill already
        collected cost nothing more when read again (see _backfilled)."""
        state.edge = []
        if self._payments_listed_at is not None:
            state.event_created = int((self._payments_listed_at - BACKFILL_OVERLAP).timestamp())
            return
        start = self._client.requests
        newest = self._client.list_page("/v1/events", "list events", ("event", "read"),
                                        {"limit": PAGE, "types": list(EVENT_TYPES)})["data"]
        yield SyncBatch(requests=self._client.requests - start)
        if newest:
            second = newest[0]["created"]
            state.event, state.event_created = newest[0]["id"], second
            state.edge = [e["id"] for e in newest if e["created"] == second]

    def _open_payments(self, since: int) -> Iterator[SyncBatch]:
        """Invoice id -> its open invoice payment with the payment intent and latest charge, listed in bulk:
        one request per hundred failed invoices instead of one per invoice."""
        found: dict[str, dict] = {}
        params: dict = {"status": "open", "created": {"gte": since}, "limit": PAGE, "expand": PAYMENT_EXPAND}
        self._payments_listed_at = None
        while True:
            start = self._client.requests
            page = self._client.list_page("/v1/invoice_payments", "list invoice payments", ("invoice", "read"), params)
            self._payments_listed_at = self._payments_listed_at or self._client.stripe_time
            for data in page["data"]:
                invoice_id = data.get("invoice") if isinstance(data.get("invoice"), str) else data["invoice"]["id"]
                if invoice_id not in found or data.get("is_default"):
                    found[invoice_id] = data
            yield SyncBatch(requests=self._client.requests - start)
            if not page["has_more"] or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def _events(self, state: Cursor, now: datetime) -> Iterator[SyncBatch]:
        """Every followed event since the cursor's second, oldest first, skipping the ones already applied.

        Listing by time rather than `ending_before=<cursor event>` is what makes the cursor safe within one
        second: Stripe orders events of the same second in no promised order, so an event created in the cursor's
        second could list *behind* the cursor event and never be seen. While the cursor's second may still get
        events, it is listed again (created >= it) and the ids of its events already applied (`edge`) are
        skipped; once it was listed SETTLED after it (`settled`), only later seconds are (created > it) and the
        edge is forgotten. With nothing new that is one request, however many events that second had."""
        created, edge = state.listing()
        params: dict = {"limit": PAGE, "types": list(EVENT_TYPES), "created": created}
        start = self._client.requests
        listed, listed_at = self._list_events(params)
        fresh = [e for e in listed if e["id"] not in edge]
        done = 0
        for first in range(0, max(len(fresh), 1), PAGE):
            chunk = fresh[first:first + PAGE]
            batch = self._from_events(chunk)
            if chunk:
                done = listed.index(chunk[-1]) + 1
            whole = done == len(listed) or listed[done]["created"] != listed[done - 1]["created"]
            batch.cursor = state.advanced(listed[:done], now, listed_at, whole).to_dict()
            batch.events = len(chunk)
            batch.requests = self._client.requests - start
            start = self._client.requests
            yield deduplicated(batch)

    def _list_events(self, params: dict) -> tuple[list[dict], datetime | None]:
        """Every event the params select, oldest first, and Stripe's clock when the listing began."""
        listed: list[dict] = []
        listed_at = None
        while True:
            page = self._client.list_page("/v1/events", "list events", ("event", "read"), params)
            listed_at = listed_at or self._client.stripe_time
            listed.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                break
            params["starting_after"] = page["data"][-1]["id"]
        listed.reverse()                                   # Stripe lists newest first
        return listed, listed_at

    def _from_events(self, events: list[dict]) -> SyncBatch:
        """One batch from events oldest first (dunctl/stripe/events.py), then each invoice they touched: a new
        failure fetched with its decline, a copy in an older API shape fetched again, the rest as the newest event
        showed it."""
        found = gather(events, self._client)
        for invoice_id, (_, _, snapshot) in found.latest.items():
            failure = found.failures.get(invoice_id)
            if failure and snapshot.get("status") == "open":
                if self._backfilled.get(invoice_id, -1) < (snapshot.get("attempt_count") or 0):
                    self._collect_failed(found.batch, snapshot, failure)
                continue       # else the backfill of this run collected this attempt, with its decline
            times = {"failed_at": from_unix(failure["last"]) if failure else None,
                     "first_failed_at": from_unix(failure["first"]) if failure else None}
            if invoice_id in found.refetch:
                self._collect(found.batch, self._client.fetch("invoice", invoice_id), None, **times)
            else:
                self._admit(found.batch, adjusted_snapshot(found, invoice_id, snapshot), None, **times)
        for invoice in found.batch.invoices:
            invoice.amount_paid_at = from_unix(found.paid_rose.get(invoice.id))
        return found.batch

    def _collect_failed(self, batch: SyncBatch, snapshot: dict, failure: dict) -> None:
        """A new failure: fetch the invoice now (with its customer, payment methods and subscription) and the
        decline; the failure's time stays the event's."""
        current = self._client.fetch("invoice", snapshot["id"])
        if failure["payment_intent"]:
            intent = self._client.call(f"read payment intent {failure['payment_intent']}", ("payment_intent", "read"),
                                       self._client.v1.payment_intents.retrieve, failure["payment_intent"],
                                       params={"expand": ["latest_charge"]}).to_dict()
            payment = {"payment": {"type": "payment_intent", "payment_intent": intent}}
        else:
            payment = self._client.payment_of(current)
        self._collect(batch, current, payment, failed_at=from_unix(failure["last"]),
                      first_failed_at=from_unix(failure["first"]))

    def _collect(self, batch: SyncBatch, data: dict, payment: dict | None, failed_at: datetime | None = None,
                 first_failed_at: datetime | None = None) -> None:
        """Add an invoice and whatever came expanded with it (customer, payment methods, subscription)."""
        self._client.complete_invoice(data)
        collect_payer(batch, data)
        subscription = subscription_field(data)
        if isinstance(subscription, dict):
            batch.subscriptions.append(subscription_from(subscription))
        intent = ((payment or {}).get("payment") or {}).get("payment_intent")
        if isinstance(intent, dict):
            method = (intent.get("last_payment_error") or {}).get("payment_method") or intent.get("payment_method")
            if isinstance(method, dict):
                batch.payment_methods.append(payment_method_from(method))
        self._admit(batch, data, intent if isinstance(intent, dict) else None, failed_at=failed_at,
                    first_failed_at=first_failed_at)

    def _admit(self, batch: SyncBatch, data: dict, intent: dict | None, failed_at: datetime | None = None,
               first_failed_at: datetime | None = None) -> None:
        """Add the invoice, or, when it cannot be stored (an impossible amount, an unknown currency), a
        `record_rejected` signal instead: one bad record never blocks the rest of the sync."""
        problem = unstorable(data)
        if problem:
            batch.signals.append(Signal("record_rejected", self._sync_now,
                                        invoice_id=data.get("id"), customer_id=id_of(data.get("customer")),
                                        detail=f"invoice {data.get('id')} skipped: {problem}",
                                        source_id=f"rejected:{data.get('id')}:{problem}",
                                        data={"object": "invoice", "id": data.get("id"), "problem": problem}))
            return
        batch.invoices.append(invoice_from(data, intent, failed_at=failed_at, first_failed_at=first_failed_at))

    def subscriptions(self, after: str | None = None) -> Iterator[tuple[SyncBatch, str | None]]:
        """The subscriptions that will be charged (active, trialing, past_due), their customers and default
        payment methods, a page of 100 per request (expanded in the same request): pre-dunning's backfill. Yields
        each page's batch and its last id."""
        # Without `status` Stripe lists every subscription but the cancelled ones, in one listing (one cursor):
        # a trial's first charge and a past_due one's next need their card as much as an active one's.
        params: dict = {"limit": PAGE,
                        "expand": ["data.default_payment_method", "data.customer",
                                   "data.customer.invoice_settings.default_payment_method"]}
        while True:
            if after:
                params["starting_after"] = after
            start = self._client.requests
            page = self._client.list_page("/v1/subscriptions", "list subscriptions", ("subscription", "read"), params)
            batch = SyncBatch()
            for data in page["data"]:
                if data.get("status") not in BILLED_STATUSES:
                    continue
                collect_payer(batch, data)
                batch.subscriptions.append(subscription_from(data))
            if page["data"]:
                after = page["data"][-1]["id"]
            batch.requests = self._client.requests - start
            yield deduplicated(batch), after
            if not page["has_more"] or not page["data"]:
                return
