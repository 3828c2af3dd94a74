"""The Stripe gateway: a real Stripe account behind the `Gateway` protocol (dunctl/gateway.py).

Sync has two modes, and the cursor (dunctl/stripe/cursor.py, stored with every batch) says which one resumes:

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

Times come from Stripe (the event, payment intent or charge `created`), never from the sync's clock. Requests,
retries, the rate, the budget and errors are dunctl/stripe/client.py's; Stripe JSON becomes dunctl records in
dunctl/stripe/convert.py. With `account` (Connect) every request carries the Stripe-Account header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone

from dunctl.clock import from_unix, utc
from dunctl.errors import CardDeclined, GatewayAuthError, GatewayError
from dunctl.failures import Decline
from dunctl.model import Invoice, PaymentOutcome, Signal, SyncBatch, UsagePreview
from dunctl.stripe.client import PAGE, StripeRequests, keyed, plain, request_id_of
from dunctl.stripe.convert import (collect_payer, deduplicated, id_of, invoice_from, lines_from,
                                   payment_method_from, subscription_field, subscription_from, unstorable,
                                   worth_following)
from dunctl.stripe.cursor import Cursor
from dunctl.stripe.events import EVENT_TYPES, adjusted_snapshot, gather
from dunctl.stripe_permissions import key_hint

# Events from this long before a backfill's first request (by Stripe's clock) are read after it: nothing that
# changed while the backfill ran is missed, and what it already collected costs nothing more.
BACKFILL_OVERLAP = timedelta(minutes=5)
# Four levels is as deep as Stripe expands.
INVOICE_EXPAND = ["customer", "customer.invoice_settings.default_payment_method", "default_payment_method",
                  "parent.subscription_details.subscription"]
PAYMENT_EXPAND = ["data.payment.payment_intent.latest_charge"]
BILLED_STATUSES = frozenset({"active", "trialing", "past_due"})     # subscriptions pre-dunning follows


class StripeGateway:
    """dunctl's door to one Stripe account (test or live, as the key says)."""

    def __init__(self, api_key: str, *, api_base: str | None = None, account: str | None = None,
                 backfill_days: int = 60, **client_options):
        """`client_options` go to StripeRequests: key_env, max_requests_per_second, max_backoff_tries, sleep,
        clock, jitter, http_client, budget."""
        self.mode = "live" if api_key.startswith(("sk_live_", "rk_live_")) else "test"
        self.api_base = api_base
        self.account = account          # a connected account (Stripe-Account header), or None: the key's own
        self.backfill_days = backfill_days
        self._sync_now = datetime(1970, 1, 1, tzinfo=timezone.utc)   # the running sync's clock
        self._backfilled: dict[str, int] = {}    # open invoice -> the attempt the running sync's backfill collected
        self._payments_listed_at: datetime | None = None
        self._client = StripeRequests(api_key, api_base=api_base, account=account, **client_options)

    @property
    def requests(self) -> int:
        """Requests sent to Stripe so far (refused and retried ones too)."""
        return self._client.requests

    @property
    def stripe_date(self) -> datetime | None:
        """Stripe's clock: the Date of its first answer (dunctl/tick/clocks.py); None before any."""
        return self._client.stripe_date

    @classmethod
    def from_config(cls, stripe_config, environ: Mapping[str, str], **options) -> StripeGateway:
        """The gateway a `stripe:` config section describes, with the key read from the variable it names."""
        name = stripe_config.api_key_env
        key = (environ.get(name) or "").strip()
        if not key:
            raise GatewayAuthError(f"no Stripe API key: the environment variable {name} is not set",
                                   hint=f"export {name}=rk_live_... ({key_hint()}; "
                                        "`dunctl check --online` names what this config needs)")
        if not re.match(r"^(sk|rk)_(test|live)_", key):
            raise GatewayAuthError(f"{name} does not hold a Stripe secret or restricted key "
                                   "(they start with sk_ or rk_)",
                                   hint="publishable keys (pk_...) cannot read invoices")
        return cls(key, api_base=stripe_config.api_base, key_env=name,
                   account=getattr(stripe_config, "account", None),
                   max_requests_per_second=stripe_config.max_requests_per_second,
                   max_backoff_tries=stripe_config.max_backoff_tries,
                   backfill_days=stripe_config.backfill_days, **options)

    def __repr__(self) -> str:
        return f"StripeGateway(mode={self.mode!r}, account={self.account!r}, api_base={self.api_base!r})"

    def account_id(self) -> str:
        """The id of the account this gateway acts on (the connected account when `account` is set): one request."""
        return self._client.account_id()

    def sync(self, cursor: dict | None, now: datetime, full: bool = False) -> Iterator[SyncBatch]:
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
        start = self.requests
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
            batch.requests = self.requests - start
            start = self.requests
            yield deduplicated(batch)
            if not page["has_more"]:
                return state

    def _backfill_page(self, invoices: list[dict], payments: dict[str, dict], now: datetime) -> SyncBatch:
        batch = SyncBatch()
        for data in invoices:
            if not worth_following(data, now):
                continue
            payment = None
            if data["status"] == "open" and data.get("attempt_count", 0) > 0:
                payment = payments.get(data["id"]) or self._payment_of(data)
                self._backfilled[data["id"]] = data["attempt_count"]
            self._collect(batch, data, payment)
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
        start = self.requests
        newest = self._client.list_page("/v1/events", "list events", ("event", "read"),
                                                    {"limit": PAGE, "types": list(EVENT_TYPES)})["data"]
        yield SyncBatch(requests=self.requests - start)
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
            start = self.requests
            page = self._client.list_page("/v1/invoice_payments", "list invoice payments", ("invoice", "read"), params)
            self._payments_listed_at = self._payments_listed_at or self._client.stripe_time
            for data in page["data"]:
                invoice_id = data.get("invoice") if isinstance(data.get("invoice"), str) else data["invoice"]["id"]
                if invoice_id not in found or data.get("is_default"):
                    found[invoice_id] = data
            yield SyncBatch(requests=self.requests - start)
            if not page["has_more"] or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def _payment_of(self, invoice: dict) -> dict | None:
        """The invoice's payment (payment intent and latest charge expanded): where the decline lives."""
        page = self._client.call(f"list the payments of invoice {invoice['id']}", ("invoice", "read"),
                                 self._client.v1.invoice_payments.list,
                                 params={"invoice": invoice["id"], "limit": 10, "expand": PAYMENT_EXPAND})
        payments = [p.to_dict() for p in page.data]
        return next((p for p in payments if p.get("is_default")), payments[0] if payments else None)

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
        start = self.requests
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
            batch.requests = self.requests - start
            start = self.requests
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
        found = gather(events, self)
        for invoice_id, (_, _, snapshot) in found.latest.items():
            failure = found.failures.get(invoice_id)
            if failure and snapshot.get("status") == "open":
                if self._backfilled.get(invoice_id, -1) < (snapshot.get("attempt_count") or 0):
                    self._collect_failed(found.batch, snapshot, failure)
                continue       # else the backfill of this run collected this attempt, with its decline
            times = {"failed_at": from_unix(failure["last"]) if failure else None,
                     "first_failed_at": from_unix(failure["first"]) if failure else None}
            if invoice_id in found.refetch:
                self._collect(found.batch, self.fetch("invoice", invoice_id), None, **times)
            else:
                self._admit(found.batch, adjusted_snapshot(found, invoice_id, snapshot), None, **times)
        return found.batch

    def fetch(self, kind: str, object_id: str) -> dict:
        """The object as it is now, in the pinned API version, complete (every line and item)."""
        if kind == "invoice":
            data = self._client.call(f"read invoice {object_id}", ("invoice", "read"),
                                     self._client.v1.invoices.retrieve, object_id,
                                     params={"expand": INVOICE_EXPAND}).to_dict()
            return self._complete_invoice(data)
        if kind == "subscription":
            data = self._client.call(f"read subscription {object_id}", ("subscription", "read"),
                                     self._client.v1.subscriptions.retrieve, object_id).to_dict()
            return self.complete_items(data)
        data = self._client.call(f"read payment method {object_id}", ("payment_method", "read"),
                                 self._client.v1.payment_methods.retrieve, object_id)
        return data.to_dict()

    def _complete_invoice(self, data: dict) -> dict:
        """Follow `has_more` on the invoice's lines (and its expanded subscription's items): Stripe embeds only
        the first 10, and a usage invoice can have hundreds."""
        lines = data.get("lines")
        if isinstance(lines, dict) and lines.get("has_more") and lines.get("data"):
            rest = self._client.rest(f"/v1/invoices/{data['id']}/lines", f"list the lines of invoice {data['id']}",
                                     ("invoice", "read"), {}, lines["data"][-1]["id"])
            data["lines"] = {**lines, "data": lines["data"] + rest, "has_more": False}
        subscription = subscription_field(data)
        if isinstance(subscription, dict):
            self.complete_items(subscription)
        return data

    def complete_items(self, subscription: dict) -> dict:
        """The subscription with every item: Stripe embeds the first 10."""
        items = subscription.get("items")
        if isinstance(items, dict) and items.get("has_more") and items.get("data"):
            rest = self._client.rest("/v1/subscription_items", f"list the items of subscription {subscription['id']}",
                                     ("subscription", "read"), {"subscription": subscription["id"]},
                                     items["data"][-1]["id"])
            subscription["items"] = {**items, "data": items["data"] + rest, "has_more": False}
        return subscription

    def _collect_failed(self, batch: SyncBatch, snapshot: dict, failure: dict) -> None:
        """A new failure: fetch the invoice now (with its customer, payment methods and subscription) and the
        decline; the failure's time stays the event's."""
        current = self.fetch("invoice", snapshot["id"])
        if failure["payment_intent"]:
            intent = self._client.call(f"read payment intent {failure['payment_intent']}", ("payment_intent", "read"),
                                       self._client.v1.payment_intents.retrieve, failure["payment_intent"],
                                       params={"expand": ["latest_charge"]}).to_dict()
            payment = {"payment": {"type": "payment_intent", "payment_intent": intent}}
        else:
            payment = self._payment_of(current)
        self._collect(batch, current, payment, failed_at=from_unix(failure["last"]),
                      first_failed_at=from_unix(failure["first"]))

    def _collect(self, batch: SyncBatch, data: dict, payment: dict | None, failed_at: datetime | None = None,
                 first_failed_at: datetime | None = None) -> None:
        """Add an invoice and whatever came expanded with it (customer, payment methods, subscription)."""
        self._complete_invoice(data)
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

    def charge(self, charge_id: str) -> dict:
        return self._client.call(f"read charge {charge_id}", ("charge", "read"), self._client.v1.charges.retrieve,
                                 charge_id).to_dict()

    def invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        """The invoice a payment intent paid (a disputed charge's): through its invoice payment."""
        page = self._client.call(f"find the invoice of payment intent {payment_intent_id}", ("invoice", "read"),
                                 self._client.v1.invoice_payments.list,
                                 params={"payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
                                         "limit": 1})
        return id_of(page.data[0].to_dict().get("invoice")) if page.data else None

    def sync_subscriptions(self, after: str | None = None) -> Iterator[tuple[SyncBatch, str | None]]:
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
            start = self.requests
            page = self._client.list_page("/v1/subscriptions", "list subscriptions", ("subscription", "read"), params)
            batch = SyncBatch()
            for data in page["data"]:
                if data.get("status") not in BILLED_STATUSES:
                    continue
                collect_payer(batch, data)
                batch.subscriptions.append(subscription_from(data))
            if page["data"]:
                after = page["data"][-1]["id"]
            batch.requests = self.requests - start
            yield deduplicated(batch), after
            if not page["has_more"] or not page["data"]:
                return

    def preview_invoice(self, subscription_id: str) -> UsagePreview:
        """The subscription's upcoming invoice as it stands now (metered usage so far), one request."""
        data = self._client.call(f"preview the upcoming invoice of subscription {subscription_id}", ("invoice", "read"),
                                 self._client.v1.invoices.create_preview,
                                 params={"subscription": subscription_id,
                                         "expand": ["parent.subscription_details.subscription"]})
        invoice = data.to_dict()
        return UsagePreview(subscription_id=subscription_id, currency=invoice.get("currency") or "",
                            amount_due=invoice.get("amount_due") or 0,
                            period_start=from_unix(invoice.get("period_start")),
                            period_end=from_unix(invoice.get("period_end")), lines=lines_from(invoice),
                            request_id=data.last_response.request_id if data.last_response else None)

    def _read_back(self, kind: str, object_id: str, done: Callable[[dict], bool]) -> dict | None:
        """The object as it is now if a write on it `done` shows took effect, else None (after a 5xx)."""
        data = self.fetch(kind, object_id) if kind == "invoice" else \
            self._client.call(f"read {kind} {object_id}", (kind, "read"), self._client.v1.subscriptions.retrieve,
                              object_id).to_dict()
        return data if done(data) else None

    def get_invoice(self, invoice_id: str) -> Invoice:
        """Re-read with the same expansions as the sync (subscription, customer) and every line, so the re-read
        never loses what the sync knew (the subscription, which lines are metered)."""
        data = self.fetch("invoice", invoice_id)
        problem = unstorable(data)
        if problem:
            raise GatewayError(f"invoice {invoice_id} cannot be stored: {problem}", code="unstorable")
        return invoice_from(data)

    def pay_invoice(self, invoice_id: str, idempotency_key: str, payment_method: str | None = None
                    ) -> PaymentOutcome:
        # Without `payment_method` Stripe charges the invoice's default, then the subscription's, then the
        # customer's (https://docs.stripe.com/api/invoices/pay): a retry for a new card names the card.
        params = {"payment_method": payment_method} if payment_method else {}
        key = keyed(idempotency_key, params) if params else idempotency_key
        try:
            data = self._client.write(f"pay invoice {invoice_id}", ("invoice", "write"),
                                      lambda: self._read_back("invoice", invoice_id,
                                                              lambda i: i.get("status") == "paid"),
                                      self._client.v1.invoices.pay, invoice_id, params=params,
                                      options={"idempotency_key": key})
        except CardDeclined as exc:
            return PaymentOutcome(succeeded=False, decline=exc.decline, request_id=exc.request_id,
                                  detail=exc.decline.message or exc.message)
        except GatewayError as exc:
            if exc.code == "invoice_payment_intent_requires_action":
                return PaymentOutcome(succeeded=False, request_id=exc.request_id, detail=exc.message,
                                      decline=Decline(code="authentication_required",
                                                      payment_intent_status="requires_action"))
            raise
        invoice = invoice_from(plain(data))
        request_id = request_id_of(data)
        if invoice.status == "paid":
            return PaymentOutcome(succeeded=True, invoice=invoice, request_id=request_id, detail="paid")
        # A bank debit is accepted for processing: its result arrives days later, with a later sync.
        return PaymentOutcome(succeeded=False, invoice=invoice, request_id=request_id,
                              detail="the payment is processing; its result arrives with a later sync")

    def disable_automatic_retries(self, invoice_id: str, idempotency_key: str) -> None:
        self._client.write(f"turn off automatic collection of invoice {invoice_id}", ("invoice", "write"),
                           lambda: self._read_back("invoice", invoice_id, lambda i: i.get("auto_advance") is False),
                           self._client.v1.invoices.update, invoice_id, params={"auto_advance": False},
                           options={"idempotency_key": idempotency_key})

    def mark_invoice(self, invoice_id: str, metadata: dict[str, str], idempotency_key: str) -> None:
        # Metadata stays editable on a finalized invoice (only amounts and collection_method are frozen); keys
        # not named here are left as they are.
        self._client.call(f"note on invoice {invoice_id} what dunctl last sent", ("invoice", "write"),
                          self._client.v1.invoices.update, invoice_id, params={"metadata": metadata},
                          options={"idempotency_key": idempotency_key})

    def mark_uncollectible(self, invoice_id: str, idempotency_key: str) -> Invoice:
        data = self._client.write(f"mark invoice {invoice_id} uncollectible", ("invoice", "write"),
                                  lambda: self._read_back("invoice", invoice_id,
                                                          lambda i: i.get("status") == "uncollectible"),
                                  self._client.v1.invoices.mark_uncollectible, invoice_id,
                                  options={"idempotency_key": idempotency_key})
        return invoice_from(plain(data))

    def pause_subscription(self, subscription_id: str, behavior: str, idempotency_key: str) -> None:
        params = {"pause_collection": {"behavior": behavior}}
        self._client.write(f"pause collection on subscription {subscription_id}", ("subscription", "write"),
                           lambda: self._read_back("subscription", subscription_id,
                                                   lambda sub: (sub.get("pause_collection") or {}).get("behavior")
                                                   == behavior),
                           self._client.v1.subscriptions.update, subscription_id, params=params,
                           options={"idempotency_key": keyed(idempotency_key, params)})

    def resume_subscription(self, subscription_id: str, idempotency_key: str) -> None:
        # An empty string unsets a parameter in Stripe's form encoding: `pause_collection=""` resumes collection
        # (stripe-python types it as Literal[''] | PauseCollection).
        self._client.call(f"resume collection on subscription {subscription_id}", ("subscription", "write"),
                          self._client.v1.subscriptions.update, subscription_id,
                          params={"pause_collection": ""}, options={"idempotency_key": idempotency_key})

    def cancel_subscription(self, subscription_id: str, comment: str, idempotency_key: str) -> None:
        """Cancel. A DELETE is not idempotent at Stripe (it ignores the idempotency key): a second cancel, after a
        crash or by a person on the Dashboard, is refused, so a subscription found cancelled is success."""
        try:
            self._client.call(f"cancel subscription {subscription_id}", ("subscription", "write"),
                              self._client.v1.subscriptions.cancel, subscription_id,
                              params={"cancellation_details": {"comment": comment}},
                              options={"idempotency_key": idempotency_key})
        except GatewayAuthError:
            raise
        except GatewayError as exc:
            if exc.code in ("rate_limited", "unavailable"):
                raise
            current = self._client.call(f"read subscription {subscription_id}", ("subscription", "read"),
                                        self._client.v1.subscriptions.retrieve, subscription_id)
            if current.status != "canceled":
                raise

    def update_link(self, invoice: Invoice, kind: str, return_url: str | None, idempotency_key: str) -> str:
        if kind == "hosted_invoice":
            url = invoice.hosted_invoice_url or self.get_invoice(invoice.id).hosted_invoice_url
            if not url:
                raise GatewayError(f"invoice {invoice.id} has no hosted invoice page (is it finalized?)",
                                   hint="use link: billing_portal for this step")
            return url
        if kind == "billing_portal":
            params: dict = {"customer": invoice.customer_id, "flow_data": {"type": "payment_method_update"}}
            if return_url:
                params["return_url"] = return_url
            # A session cannot be read back (nor listed): after a 5xx the next try simply opens another one.
            session = self._client.call(f"open a billing portal session for customer {invoice.customer_id}",
                                        ("billing_portal_session", "write"),
                                        self._client.v1.billing_portal.sessions.create,
                                        params=params, options={"idempotency_key": keyed(idempotency_key, params)})
            return session.url
        raise ValueError(f"unknown link kind {kind!r}; use hosted_invoice or billing_portal")
