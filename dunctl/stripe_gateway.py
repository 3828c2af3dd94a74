"""The Stripe gateway: a real Stripe account behind the `Gateway` protocol, through stripe-python 16's StripeClient.

Sync has two modes, and the cursor (opaque to the ledger, stored with every batch) says which one resumes:

- backfill, on the first run, with `--full`, or when the cursor is older than Stripe keeps events (30 days):
  list the open invoices' failed payments in bulk, note where the events phase will start (BACKFILL_OVERLAP
  before that, by Stripe's clock), then page through the invoices created within `backfill_days` (customers,
  payment methods and subscriptions expanded in the same request), one batch per page, so a backfill that dies
  halfway resumes after its last applied page;
- events, afterwards: `events.list(created[gt]=<the cursor's second>)`, filtered to the event types dunctl
  follows, applied oldest first. While the cursor's second may still get events (it was listed less than
  SETTLED after it), `created[gte]` instead, skipping the ids of that second already applied (Stripe orders
  events of one second in no promised order). With nothing new that is one request, however many events the
  cursor's second had. The events since the cursor are listed before any is applied (at most 30 days of them: an
  older cursor means a backfill). A failure the backfill of the same run already collected, at the same attempt,
  is not fetched again when its event is read.

What is stored is complete and in the pinned API version: invoice lines and subscription items follow `has_more`;
an event rendered in an older API version re-fetches its object; a copy of an invoice that cannot say which lines
are metered leaves the stored lines alone. An invoice that cannot be stored (an impossible amount, an unknown
currency) becomes a `record_rejected` signal, never an error that blocks the sync.

Times come from Stripe (the event, payment intent or charge `created`), never from the sync's clock. Every request
goes through one token bucket and one backoff loop; every Stripe error becomes a dunctl error carrying Stripe's
request id. The API key is handed to the SDK and nowhere else: never stored here, logged or put in a message, and
any text from Stripe that looks like a key is scrubbed. With `account` (Connect) every request carries the
Stripe-Account header.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

import stripe

from dunctl.clock import from_iso, from_unix, iso, utc
from dunctl.errors import CardDeclined, GatewayAuthError, GatewayError
from dunctl.failures import DATA, Decline
from dunctl.model import (Customer, Invoice, InvoiceLine, PaymentMethod, PaymentOutcome, Signal, Subscription,
                          SyncBatch, UsagePreview)
from dunctl.stripe_permissions import key_hint

CURSOR_VERSION = 1
PAGE = 100
# The API version the SDK pins (and every request sends). An event rendered in an older version carries an older
# shape of its object (an invoice with payment_intent and subscription on top, no parent): re-fetch the object.
PINNED_API_VERSION = stripe.api_version
# Stripe keeps events 30 days; a cursor checked longer ago than this may have missed some, so backfill instead.
EVENT_WINDOW = timedelta(days=29)
# Stripe stamps each event with the second it was created in: a second listed this long after it gets no more
# events, so its events as listed then are all it will ever have (the margin covers clock skew between the two).
SETTLED = timedelta(seconds=60)
# Events from this long before a backfill's first request (by Stripe's clock) are read after it: nothing that
# changed while the backfill ran is missed, and what it already collected costs nothing more.
BACKFILL_OVERLAP = timedelta(minutes=5)
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
FAILURE_EVENTS = frozenset({"invoice.payment_failed", "invoice.payment_action_required"})
# Four levels is as deep as Stripe expands.
INVOICE_EXPAND = ["customer", "customer.invoice_settings.default_payment_method", "default_payment_method",
                  "parent.subscription_details.subscription"]
PAYMENT_EXPAND = ["data.payment.payment_intent.latest_charge"]
BILLED_STATUSES = frozenset({"active", "trialing", "past_due"})     # subscriptions pre-dunning follows

# Restricted-key permission (as Stripe names it in a 403) -> the resource's name on the Dashboard's key page.
PERMISSION_NAMES = {
    "invoice": "Invoices", "event": "Events", "customer": "Customers", "subscription": "Subscriptions",
    "payment_intent": "PaymentIntents", "charge": "Charges", "dispute": "Disputes",
    "payment_method": "PaymentMethods", "billing_portal_session": "Customer portal",
    "billing_portal": "Customer portal",
}
PAID_LATE_AFTER = 15 * 60    # seconds after finalization
# Anything that looks like a Stripe key (whole, or masked as Stripe's own messages show it): never passed on.
KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]+")
# The largest amount a record may carry: Stripe's own limit is 12 digits (99,999,999,999.99 in some currencies).
MAX_AMOUNT = 10**12
# The currencies Stripe charges in (dunctl/data/stripe_currencies.txt): any other is a record dunctl cannot store.
CURRENCIES = frozenset(code for line in (DATA / "stripe_currencies.txt").read_text(encoding="utf-8").splitlines()
                       if not line.startswith("#") for code in line.split())
RETRY_BASE = 0.5       # seconds; doubles per try
RETRY_CAP = 30.0
# Stripe answers in well under a second; a request that gets less than this of the tick's budget is not sent.
MIN_REQUEST_TIME = 1.0
REQUEST_TIMEOUT = 80.0          # seconds: stripe-python's own default, for a gateway without a budget
# A tick's Stripe calls may run this far past `dunning.tick_budget` (a quarter of it, at most 5 s), so the tick
# itself, which stops starting work at its budget, finds out first and gives the rest back as due.
BUDGET_MARGIN = 5.0


class TokenBucket:
    """At most `rate` requests a second on average, bursts of up to one second's worth."""

    def __init__(self, rate: float, clock: Callable[[], float], sleep: Callable[[float], None]):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.stamp = clock()

    def take(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            wait = (1 - self.tokens) / self.rate
            self.sleep(wait)
            self.tokens = 1.0
            self.stamp = self.clock()
        self.tokens -= 1


class _TimedClient(stripe.RequestsClient):
    """stripe-python's requests client, each request's timeout set just before it is sent: what is left of the
    tick's budget. (The SDK takes one timeout when the client is built, and the gateway lives for the whole tick.)
    requests applies it to the connection and to each read: a Stripe that accepts and never answers costs at most
    what was left."""

    def __init__(self, timeout_for: Callable[[], float]):
        super().__init__(timeout=REQUEST_TIMEOUT)
        self._timeout_for = timeout_for

    def request(self, method, url, headers, post_data=None):
        self._timeout = self._timeout_for()
        return super().request(method, url, headers, post_data)


class StripeGateway:
    """dunctl's door to one Stripe account (test or live, as the key says)."""

    def __init__(self, api_key: str, *, api_base: str | None = None, key_env: str = "STRIPE_API_KEY",
                 account: str | None = None,
                 max_requests_per_second: float = 25.0, max_backoff_tries: int = 6, backfill_days: int = 60,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random, http_client: stripe.HTTPClient | None = None,
                 budget: float | None = None):
        self.mode = "live" if api_key.startswith(("sk_live_", "rk_live_")) else "test"
        self.requests = 0
        self.api_base = api_base
        self.key_env = key_env
        self.account = account          # a connected account (Stripe-Account header), or None: the key's own
        self._sync_now = datetime(1970, 1, 1, tzinfo=timezone.utc)   # the running sync's clock
        self.stripe_date: datetime | None = None   # Stripe's clock: the Date of its first answer (tick/clocks.py)
        self._backfilled: dict[str, int] = {}    # open invoice -> the attempt the running sync's backfill collected
        self.stripe_time: datetime | None = None   # Stripe's clock (the Date of its last list response), if it said
        self._payments_listed_at: datetime | None = None
        self.max_backoff_tries = max_backoff_tries
        self.backfill_days = backfill_days
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._bucket = TokenBucket(max_requests_per_second, clock, sleep)
        # A tick's budget (seconds, from now): every request's timeout, retry and sleep comes out of what is left.
        self._deadline = None if budget is None else clock() + budget + min(BUDGET_MARGIN, budget / 4)
        # The SDK retries nothing here: every retry (and its sleep) is ours, so it is counted and testable.
        self._client = stripe.StripeClient(api_key, base_addresses={"api": api_base} if api_base else None,
                                           stripe_account=account, max_network_retries=0,
                                           http_client=http_client or _TimedClient(self._timeout))

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
        """The id of the account this gateway acts on (the connected account when `account` is set): one request.
        A restricted key without the Account permission still learns it: Stripe's 403 names the account."""

        def current() -> str:
            try:
                return self._client.v1.accounts.retrieve_current().id
            except stripe.PermissionError as exc:
                found = re.search(r"on account '(acct_[A-Za-z0-9]+)'", exc.user_message or "")
                if found:
                    return found.group(1)
                raise

        return self._call("read which account the key belongs to", ("account", "read"), current)

    # -- requests ------------------------------------------------------------------------------------------------

    def _call(self, what: str, permission: tuple[str, str], method: Callable, *args, **kwargs):
        """One Stripe call, rate-limited, retried with backoff while a retry can help, within the tick's budget, its
        errors translated. A write (it carries an idempotency key) that got a 5xx is not retried: Stripe saved the
        5xx under its key and answers every retry with it (https://docs.stripe.com/api/idempotent_requests); the
        caller reads the object back instead. `Stripe-Should-Retry`, when Stripe sends it, decides."""
        write = bool((kwargs.get("options") or {}).get("idempotency_key"))
        tries = 0
        while True:
            self._before_request(what)
            tries += 1
            try:
                answer = method(*args, **kwargs)
                self._note_date(answer)
                return answer
            except stripe.StripeError as exc:
                if not _worth_retrying(exc, write):
                    raise self._translate(exc, what, permission) from None
                transient = exc
            delay = self._backoff(tries, transient)
            if tries > self.max_backoff_tries or delay > self._remaining() - MIN_REQUEST_TIME:
                raise self._gave_up(transient, what, tries) from None
            self._sleep(delay)

    def _before_request(self, what: str) -> None:
        self._bucket.take()
        if self._remaining() < MIN_REQUEST_TIME:
            raise GatewayError(f"the tick's time (dunning.tick_budget) ran out before trying to {what}",
                               code="unavailable", hint="nothing was sent; the next tick tries again")
        self.requests += 1

    def _remaining(self) -> float:
        """Seconds left of the tick's budget (with its margin); unbounded without one."""
        return float("inf") if self._deadline is None else self._deadline - self._clock()

    def _timeout(self) -> float:
        return max(0.1, min(REQUEST_TIMEOUT, self._remaining()))

    def _gave_up(self, transient: stripe.StripeError, what: str, tries: int) -> GatewayError:
        limited = isinstance(transient, stripe.RateLimitError)
        reason = "rate-limited the request (429)" if limited else \
            f"failed ({transient.http_status or 'no connection'})"
        return GatewayError(f"Stripe {reason} to {what} {tries} times in a row; gave up"
                            + (f" (request {transient.request_id})" if transient.request_id else ""),
                            request_id=transient.request_id, code="rate_limited" if limited else "unavailable",
                            hint="nothing was lost: the next run resumes from the last stored sync cursor")

    def _write(self, what: str, permission: tuple[str, str], took_effect: Callable[[], object | None],
               method: Callable, *args, **kwargs):
        """A write under an idempotency key. After a 5xx the object is read back: a write that took effect is
        success (`took_effect` returns what to return in its place); one that did not fails this try, and since
        the 5xx is saved under the key, the next try is made under a new key (dunctl.tick.effects)."""
        try:
            return self._call(what, permission, method, *args, **kwargs)
        except GatewayError as exc:
            if exc.code != "server_error":
                raise
            failed = exc
        found = took_effect()
        if found is not None:
            return found
        raise GatewayError(f"{failed.message}; read back, it had not taken effect", request_id=failed.request_id,
                           code="unavailable", hint="Stripe saved the error under the idempotency key; the next "
                                                    "try uses a new key")

    def _note_date(self, answer) -> None:
        """Keep the `Date` header of Stripe's first answer: Stripe's clock, read seconds after the CLI read the
        machine's. A raw answer (StripeResponse) carries its headers; an object, on `last_response`."""
        if self.stripe_date is not None:
            return
        response = answer if isinstance(answer, stripe.StripeResponse) else getattr(answer, "last_response", None)
        headers = {name.lower(): value for name, value in (getattr(response, "headers", None) or {}).items()}
        self.stripe_date = _date_header(headers)   # None when unreadable: no clock to compare with

    def _list(self, path: str, what: str, permission: tuple[str, str], params: dict) -> dict:
        """A list page as plain JSON, for the backfill's bulk pages: through the SDK's `raw_request` (same
        encoding, headers and errors), skipping the StripeObject tree it would build and we would only flatten
        again with to_dict(), which costs more than the request itself on pages of expanded invoices."""
        response = self._call(what, permission, self._client.raw_request, "get", path, **params)
        self.stripe_time = _date_header(response.headers)
        return response.data

    def _backoff(self, tries: int, exc: stripe.StripeError) -> float:
        delay = min(RETRY_CAP, RETRY_BASE * 2 ** (tries - 1))
        delay *= 0.5 + 0.5 * self._jitter()
        retry_after = (exc.headers or {}).get("retry-after") if exc.headers else None
        if retry_after and str(retry_after).isdigit():
            delay = max(delay, float(retry_after))
        return delay

    def _translate(self, exc: stripe.StripeError, what: str, permission: tuple[str, str]) -> GatewayError:
        rid = exc.request_id
        tag = f" (request {rid})" if rid else ""
        if isinstance(exc, stripe.AuthenticationError):
            # Stripe's own message repeats part of the key: never pass it on.
            return GatewayAuthError(f"Stripe rejected the API key in {self.key_env} (401) when trying to {what}{tag}",
                                    request_id=rid, code="authentication",
                                    hint=f"check that {self.key_env} holds a current key of this account; "
                                         "rolled keys stop working")
        if isinstance(exc, stripe.PermissionError):
            unreachable = re.search(r"does not have access to account '(acct_[A-Za-z0-9]+)'", exc.user_message or "")
            if unreachable:
                return GatewayAuthError(f"the key cannot reach Stripe account {unreachable.group(1)} (stripe.account)"
                                        f"{tag}", request_id=rid, code="account_invalid",
                                        hint="check the connected account's id, and that it is still connected "
                                             "to your platform")
            resource, level = permission
            found = re.search(r"rak_([a-z_]+?)_(read|write)", exc.user_message or "")
            if found:
                resource, level = found.group(1), found.group(2)
            label = PERMISSION_NAMES.get(resource, resource.replace("_", " ").title())
            noun = label.lower() if label != "Customer portal" else "customer portal sessions"
            return GatewayAuthError(f"the key cannot {level} {noun}: give the restricted key {label}: {level}{tag}",
                                    request_id=rid, code="permission",
                                    hint="edit the key on the Dashboard's API keys page")
        if isinstance(exc, stripe.CardError):
            decline = decline_from_error(exc.json_body if isinstance(exc.json_body, dict) else {})
            return CardDeclined(f"Stripe declined the payment when trying to {what}: "
                                f"{decline.shown_code or scrub(exc.code)}{tag}", decline, request_id=rid)
        if isinstance(exc, stripe.IdempotencyError):
            return GatewayError(f"Stripe refused to {what}: its idempotency key was already used with other "
                                f"parameters{tag}", request_id=rid, code="idempotency_error")
        message = scrub(exc.user_message) or exc.__class__.__name__
        if (exc.http_status or 0) >= 500:
            return GatewayError(f"Stripe failed ({exc.http_status}) to {what}: {message}{tag}", request_id=rid,
                                code="server_error")
        return GatewayError(f"Stripe refused to {what}: {message}{tag}", request_id=rid,
                            code=getattr(exc, "code", None))

    # -- sync ----------------------------------------------------------------------------------------------------

    def sync(self, cursor: dict | None, now: datetime, full: bool = False) -> Iterator[SyncBatch]:
        now = utc(now)
        self._sync_now = now
        self._backfilled = {}
        state = dict(cursor) if cursor else None
        if state and (state.get("v") != CURSOR_VERSION or self._stale(state, now)):
            state = None
        if full or state is None or state.get("phase") == "backfill":
            state = yield from self._backfill(None if full else state, now)
        try:
            yield from self._events(state, now)
        except GatewayError as exc:
            # The cursor's event is gone (Stripe forgot it): nothing to resume from but a backfill.
            if exc.code != "resource_missing":
                raise
            state = yield from self._backfill(None, now)
            yield from self._events(state, now)

    def _stale(self, state: dict, now: datetime) -> bool:
        checked = from_iso(state.get("checked_at") or state.get("started_at"))
        return checked is None or now - checked > EVENT_WINDOW

    def _backfill(self, state: dict | None, now: datetime) -> Iterator[SyncBatch]:
        fresh = state is None
        if fresh:
            since = int((now - timedelta(days=self.backfill_days)).timestamp())
            state = {"v": CURSOR_VERSION, "phase": "backfill", "event": None, "event_created": None, "edge": [],
                     "settled": False, "since": since, "started_at": iso(now), "after": None, "pages": 0}
        payments = yield from self._open_payments(state["since"])
        if fresh:
            # Stored with the first invoice page: the events from there on are read after the backfill.
            state.update((yield from self._events_start()))
        start = self.requests
        params = {"created": {"gte": state["since"]}, "limit": PAGE, "expand": ["data." + e for e in INVOICE_EXPAND]}
        while True:
            if state["after"]:
                params["starting_after"] = state["after"]
            page = self._list("/v1/invoices", "list invoices", ("invoice", "read"), params)
            batch = SyncBatch()
            for data in page["data"]:
                if not _worth_following(data, now):
                    continue
                payment = None
                if data["status"] == "open" and data.get("attempt_count", 0) > 0:
                    payment = payments.get(data["id"]) or self._payment_of(data)
                    self._backfilled[data["id"]] = data["attempt_count"]
                self._collect(batch, data, payment)
            if page["data"]:
                state["after"] = page["data"][-1]["id"]
            state["pages"] += 1
            if page["has_more"]:
                batch.cursor = dict(state)
            else:
                state = {"v": CURSOR_VERSION, "phase": "events", "event": state["event"],
                         "event_created": state["event_created"], "edge": state.get("edge"),
                         "settled": state.get("settled", False), "since": state["since"],
                         "checked_at": state["started_at"]}
                batch.cursor = dict(state)
            batch.requests = self.requests - start
            start = self.requests
            yield _deduplicated(batch)
            if not page["has_more"]:
                return state

    def _events_start(self) -> Iterator[SyncBatch]:
        """Where the events phase after a new backfill starts: BACKFILL_OVERLAP before the backfill's first
        request, by Stripe's clock (that response's Date header: no request spent). Without a Date, the newest
        events' second, one request, as listed (the ids of that second seen). Events the backfill already
        collected cost nothing more when read again (see _backfilled)."""
        if self._payments_listed_at is not None:
            return {"event_created": int((self._payments_listed_at - BACKFILL_OVERLAP).timestamp()), "edge": []}
        start = self.requests
        newest = self._list("/v1/events", "list events", ("event", "read"),
                            {"limit": PAGE, "types": list(EVENT_TYPES)})["data"]
        yield SyncBatch(requests=self.requests - start)
        if not newest:
            return {"event_created": None, "edge": []}
        second = newest[0]["created"]
        return {"event": newest[0]["id"], "event_created": second,
                "edge": [e["id"] for e in newest if e["created"] == second]}

    def _open_payments(self, since: int) -> Iterator[SyncBatch]:
        """Invoice id -> its open invoice payment with the payment intent and latest charge, listed in bulk:
        one request per hundred failed invoices instead of one per invoice."""
        found: dict[str, dict] = {}
        params: dict = {"status": "open", "created": {"gte": since}, "limit": PAGE, "expand": PAYMENT_EXPAND}
        self._payments_listed_at = None
        while True:
            start = self.requests
            page = self._list("/v1/invoice_payments", "list invoice payments", ("invoice", "read"), params)
            self._payments_listed_at = self._payments_listed_at or self.stripe_time
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
        page = self._call(f"list the payments of invoice {invoice['id']}", ("invoice", "read"),
                          self._client.v1.invoice_payments.list,
                          params={"invoice": invoice["id"], "limit": 10, "expand": PAYMENT_EXPAND})
        payments = [p.to_dict() for p in page.data]
        return next((p for p in payments if p.get("is_default")), payments[0] if payments else None)

    def _events(self, state: dict, now: datetime) -> Iterator[SyncBatch]:
        """Every followed event since the cursor's second, oldest first, skipping the ones already applied.

        Listing by time rather than `ending_before=<cursor event>` is what makes the cursor safe within one
        second: Stripe orders events of the same second in no promised order, so an event created in the cursor's
        second could list *behind* the cursor event and never be seen. While the cursor's second may still get
        events, it is listed again (created >= it) and the ids of its events already applied (`edge`) are
        skipped; once it was listed SETTLED after it (`settled`), only later seconds are (created > it) and the
        edge is forgotten. With nothing new that is one request, however many events that second had."""
        edge_second = state.get("event_created")
        edge = set(state.get("edge") or ([state["event"]] if state.get("event") else []))
        if edge_second is None:
            created = {"gte": state["since"]}
        elif state.get("settled"):
            created, edge = {"gt": edge_second}, set()     # that second's events were all applied
        else:
            created = {"gte": edge_second}
        params: dict = {"limit": PAGE, "types": list(EVENT_TYPES), "created": created}
        start = self.requests
        listed: list[dict] = []
        listed_at = None                                   # Stripe's clock when the listing began
        while True:
            page = self._list("/v1/events", "list events", ("event", "read"), params)
            listed_at = listed_at or self.stripe_time
            listed.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                break
            params["starting_after"] = page["data"][-1]["id"]
        listed.reverse()                                   # Stripe lists newest first
        fresh = [e for e in listed if e["id"] not in edge]
        done = 0
        for first in range(0, max(len(fresh), 1), PAGE):
            chunk = fresh[first:first + PAGE]
            batch = self._from_events(chunk)
            if chunk:
                done = listed.index(chunk[-1]) + 1
            whole = done == len(listed) or listed[done]["created"] != listed[done - 1]["created"]
            batch.cursor = _advanced(state, listed[:done], now, listed_at, whole)
            batch.events = len(chunk)
            batch.requests = self.requests - start
            start = self.requests
            yield _deduplicated(batch)

    def _from_events(self, events: list[dict]) -> SyncBatch:
        """One batch from events oldest first. Out of order is fine: the newest snapshot of each invoice wins,
        its first failure is the earliest seen, and the ledger never moves paid or void back to open."""
        batch = SyncBatch()
        latest: dict[str, tuple[int, int, dict]] = {}
        failures: dict[str, dict] = {}
        settled: set[str] = set()
        count_before_rise: dict[str, int] = {}
        refetch: set[str] = set()
        uncounted: set[str] = set()
        seen: set[str] = set()
        for order, event in enumerate(events):
            if event["id"] in seen:
                continue
            seen.add(event["id"])
            request_key = str((event.get("request") or {}).get("idempotency_key") or "")
            if request_key.startswith("dunctl-"):
                batch.dunctl_keys.append(request_key)   # what dunctl did, as the account saw it: a stale-ledger check
            data = event["data"]["object"]
            previous = event["data"].get("previous_attributes") or {}
            kind, at = event["type"], from_unix(event["created"])
            old_shape = _older_than_pinned(event.get("api_version"))
            if kind == "invoice.upcoming":
                batch.signals.append(Signal("invoice_upcoming", at, customer_id=_id(data.get("customer")),
                                            detail=f"{data.get('amount_due')} {data.get('currency')} due"
                                                   + _sub_note(data), source_id=event["id"]))
            elif kind.startswith("invoice."):
                if not data.get("id") or data.get("status") == "draft":
                    continue
                if kind == "invoice.finalized" and data.get("collection_method") != "send_invoice":
                    continue   # a card invoice matters once it fails; only net-terms ones are followed from here
                key = (event["created"], order)
                if data["id"] not in latest or key >= latest[data["id"]][:2]:
                    latest[data["id"]] = (event["created"], order, data)
                if old_shape:
                    refetch.add(data["id"])
                batch.signals.extend(_new_default(data, previous, at, event, invoice_id=data["id"]))
                if kind in FAILURE_EVENTS:
                    seen_failure = failures.setdefault(data["id"], {"first": event["created"],
                                                                    "last": event["created"],
                                                                    "payment_intent": None})
                    seen_failure["first"] = min(seen_failure["first"], event["created"])
                    seen_failure["last"] = max(seen_failure["last"], event["created"])
                    seen_failure["count"] = max(seen_failure.get("count", 0), data.get("attempt_count") or 0)
                    if isinstance(data.get("payment_intent"), str):      # an event in the old API shape
                        seen_failure["payment_intent"] = data["payment_intent"]
                elif kind == "invoice.paid":
                    settled.add(data["id"])
                    if "attempt_count" not in previous:
                        # Paid by an attempt Stripe did not count (the hosted page, invoices.pay): its count holds
                        # nothing new, only schedule steps skipped without a charge, which no retry earned.
                        uncounted.add(data["id"])
                elif "attempt_count" in previous:
                    # The count rose without a failed attempt (Stripe's schedule moving on after a decline it will
                    # not retry): keep the count of attempts that happened.
                    count_before_rise[data["id"]] = min(count_before_rise.get(data["id"], previous["attempt_count"]),
                                                        previous["attempt_count"])
            elif kind.startswith("customer.subscription."):
                current = self._fetch("subscription", data["id"]) if old_shape else self._complete_items(data)
                batch.subscriptions.append(subscription_from(current))
                batch.signals.extend(subscription_signals(kind, current, previous, at, event))
                batch.signals.extend(_new_default(current, previous, at, event, subscription_id=current.get("id")))
            elif kind in ("payment_method.automatically_updated", "payment_method.updated"):
                method = payment_method_from(data, updated_at=at)
                batch.payment_methods.append(method)
                # Only a new number or expiry makes the same payment method worth charging again; an edit of
                # its metadata or billing details leaves the card, and its decline, as they were.
                if method.customer_id and _card_details_changed(previous):
                    batch.signals.append(Signal("payment_method_updated", at, customer_id=method.customer_id,
                                                payment_method_id=method.id,
                                                detail=f"{kind}: {_describe(method)} ({method.id})",
                                                source_id=event["id"], data={"card_changed": True}))
            elif kind == "payment_method.attached":
                # Stored, not a signal: the card is not used until it is made the default (customer.updated or
                # customer.subscription.updated say so), but then its expiry is known without another request.
                batch.payment_methods.append(payment_method_from(data, updated_at=at))
            elif kind == "customer.updated":
                batch.customers.append(customer_from(data))
                changed = previous.get("invoice_settings", {}) or {}
                if "default_payment_method" in changed or "default_source" in previous:
                    new = _id((data.get("invoice_settings") or {}).get("default_payment_method")) \
                        or _id(data.get("default_source"))
                    if new:
                        batch.signals.append(Signal("payment_method_updated", at, customer_id=data["id"],
                                                    payment_method_id=new,
                                                    detail=f"new default payment method {new}",
                                                    source_id=event["id"]))
            elif kind == "customer.source.expiring":
                batch.signals.append(Signal("card_expiring", at, customer_id=_id(data.get("customer")),
                                            detail=f"{data.get('brand')} ending {data.get('last4')} expires "
                                                   f"{data.get('exp_month')}/{data.get('exp_year')}",
                                            source_id=event["id"]))
            elif kind in ("charge.dispute.created", "charge.dispute.closed"):
                batch.signals.append(self._dispute_signal(kind, data, at, event["id"]))
            elif kind == "mandate.updated":
                if data.get("status") == "inactive" and previous.get("status", "active") != "inactive":
                    method_id = _id(data.get("payment_method"))
                    method = self._fetch("payment_method", method_id) if method_id else {}
                    batch.signals.append(Signal("mandate_inactive", at, customer_id=_id(method.get("customer")),
                                                payment_method_id=method_id,
                                                detail=f"mandate {data.get('id')} of {method_id} is inactive: "
                                                       "the bank will refuse debits",
                                                source_id=event["id"], data={"mandate": data.get("id")}))
        for invoice_id, (_, _, snapshot) in latest.items():
            failure = failures.get(invoice_id)
            if failure and snapshot.get("status") == "open":
                if self._backfilled.get(invoice_id, -1) < (snapshot.get("attempt_count") or 0):
                    self._collect_failed(batch, snapshot, failure)
                continue       # else the backfill of this run collected this attempt, with its decline
            times = {"failed_at": from_unix(failure["last"]) if failure else None,
                     "first_failed_at": from_unix(failure["first"]) if failure else None}
            if invoice_id in refetch:
                self._collect(batch, self._fetch("invoice", invoice_id), None, **times)
                continue
            if invoice_id in count_before_rise and invoice_id not in settled and snapshot.get("status") == "open":
                snapshot = {**snapshot, "attempt_count": count_before_rise[invoice_id]}
            elif invoice_id in uncounted and snapshot.get("status") == "paid":
                # The ledger keeps the highest count it saw: the attempts it knew stay, the skipped steps do not.
                known = max(count_before_rise.get(invoice_id, 0), failures.get(invoice_id, {}).get("count", 0))
                snapshot = {**snapshot, "attempt_count": min(known, snapshot.get("attempt_count") or 0)}
            self._admit(batch, snapshot, None, **times)
        return batch

    def _fetch(self, kind: str, object_id: str) -> dict:
        """The object as it is now, in the pinned API version, complete (every line and item)."""
        if kind == "invoice":
            data = self._call(f"read invoice {object_id}", ("invoice", "read"), self._client.v1.invoices.retrieve,
                              object_id, params={"expand": INVOICE_EXPAND}).to_dict()
            return self._complete_invoice(data)
        if kind == "subscription":
            data = self._call(f"read subscription {object_id}", ("subscription", "read"),
                              self._client.v1.subscriptions.retrieve, object_id).to_dict()
            return self._complete_items(data)
        data = self._call(f"read payment method {object_id}", ("payment_method", "read"),
                          self._client.v1.payment_methods.retrieve, object_id)
        return data.to_dict()

    def _complete_invoice(self, data: dict) -> dict:
        """Follow `has_more` on the invoice's lines (and its expanded subscription's items): Stripe embeds only
        the first 10, and a usage invoice can have hundreds."""
        lines = data.get("lines")
        if isinstance(lines, dict) and lines.get("has_more") and lines.get("data"):
            rest = self._rest(f"/v1/invoices/{data['id']}/lines", f"list the lines of invoice {data['id']}",
                              ("invoice", "read"), {}, lines["data"][-1]["id"])
            data["lines"] = {**lines, "data": lines["data"] + rest, "has_more": False}
        subscription = _subscription_field(data)
        if isinstance(subscription, dict):
            self._complete_items(subscription)
        return data

    def _complete_items(self, subscription: dict) -> dict:
        items = subscription.get("items")
        if isinstance(items, dict) and items.get("has_more") and items.get("data"):
            rest = self._rest("/v1/subscription_items", f"list the items of subscription {subscription['id']}",
                              ("subscription", "read"), {"subscription": subscription["id"]}, items["data"][-1]["id"])
            subscription["items"] = {**items, "data": items["data"] + rest, "has_more": False}
        return subscription

    def _rest(self, path: str, what: str, permission: tuple[str, str], params: dict, after: str) -> list[dict]:
        found: list[dict] = []
        while True:
            page = self._list(path, what, permission, {**params, "limit": PAGE, "starting_after": after})
            found.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return found
            after = page["data"][-1]["id"]

    def _collect_failed(self, batch: SyncBatch, snapshot: dict, failure: dict) -> None:
        """A new failure: fetch the invoice now (with its customer, payment methods and subscription) and the
        decline; the failure's time stays the event's."""
        current = self._fetch("invoice", snapshot["id"])
        if failure["payment_intent"]:
            intent = self._call(f"read payment intent {failure['payment_intent']}", ("payment_intent", "read"),
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
        _collect_payer(batch, data)
        subscription = _subscription_field(data)
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
                                        invoice_id=data.get("id"), customer_id=_id(data.get("customer")),
                                        detail=f"invoice {data.get('id')} skipped: {problem}",
                                        source_id=f"rejected:{data.get('id')}:{problem}",
                                        data={"object": "invoice", "id": data.get("id"), "problem": problem}))
            return
        batch.invoices.append(invoice_from(data, intent, failed_at=failed_at, first_failed_at=first_failed_at))

    def _dispute_signal(self, kind: str, data: dict, at: datetime, event_id: str) -> Signal:
        """A dispute concerns the customer, not an open case: it exists only on a captured charge, so the invoice
        that charge paid is already paid (https://docs.stripe.com/disputes). The customer comes from the charge."""
        charge = data.get("charge") if isinstance(data.get("charge"), dict) else None
        if charge is None and data.get("charge"):
            charge = self._call(f"read charge {_id(data['charge'])}", ("charge", "read"),
                                self._client.v1.charges.retrieve, _id(data["charge"])).to_dict()
        charge = charge or {}
        due_by = from_unix((data.get("evidence_details") or {}).get("due_by"))
        status = data.get("status")
        facts = {"dispute": data.get("id"), "status": status, "reason": data.get("reason"),
                 "amount": data.get("amount"), "currency": data.get("currency"), "evidence_due_by": iso(due_by),
                 "charge": _id(data.get("charge"))}
        what = f"dispute {data.get('id')} ({data.get('reason')}, {data.get('amount')} {data.get('currency')})"
        return Signal("dispute" if kind == "charge.dispute.created" else "dispute_closed", at,
                      invoice_id=self._invoice_of_dispute(data, charge), customer_id=_id(charge.get("customer")),
                      detail=f"{status}: {what}" if kind == "charge.dispute.closed" else
                      f"{what}, evidence due {iso(due_by) or 'unknown'}", source_id=event_id, data=facts)

    def _invoice_of_dispute(self, dispute: dict, charge: dict) -> str | None:
        """The invoice a disputed charge paid: dispute -> payment intent -> invoice payment -> invoice."""
        intent = _id(dispute.get("payment_intent")) or _id(charge.get("payment_intent"))
        if not intent:
            return None
        page = self._call(f"find the invoice of payment intent {intent}", ("invoice", "read"),
                          self._client.v1.invoice_payments.list,
                          params={"payment": {"type": "payment_intent", "payment_intent": intent}, "limit": 1})
        return _id(page.data[0].to_dict().get("invoice")) if page.data else None

    # -- pre-dunning (dunctl/notices) -----------------------------------------------------------------------------

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
            page = self._list("/v1/subscriptions", "list subscriptions", ("subscription", "read"), params)
            batch = SyncBatch()
            for data in page["data"]:
                if data.get("status") not in BILLED_STATUSES:
                    continue
                _collect_payer(batch, data)
                batch.subscriptions.append(subscription_from(data))
            if page["data"]:
                after = page["data"][-1]["id"]
            batch.requests = self.requests - start
            yield _deduplicated(batch), after
            if not page["has_more"] or not page["data"]:
                return

    def preview_invoice(self, subscription_id: str) -> UsagePreview:
        """The subscription's upcoming invoice as it stands now (metered usage so far), one request."""
        data = self._call(f"preview the upcoming invoice of subscription {subscription_id}", ("invoice", "read"),
                          self._client.v1.invoices.create_preview,
                          params={"subscription": subscription_id,
                                  "expand": ["parent.subscription_details.subscription"]})
        invoice = data.to_dict()
        return UsagePreview(subscription_id=subscription_id, currency=invoice.get("currency") or "",
                            amount_due=invoice.get("amount_due") or 0,
                            period_start=from_unix(invoice.get("period_start")),
                            period_end=from_unix(invoice.get("period_end")), lines=_lines(invoice),
                            request_id=data.last_response.request_id if data.last_response else None)

    # -- reading and acting --------------------------------------------------------------------------------------

    def _read_back(self, kind: str, object_id: str, done: Callable[[dict], bool]) -> dict | None:
        """The object as it is now if a write on it `done` shows took effect, else None (after a 5xx)."""
        data = self._fetch(kind, object_id) if kind == "invoice" else \
            self._call(f"read {kind} {object_id}", (kind, "read"), self._client.v1.subscriptions.retrieve,
                       object_id).to_dict()
        return data if done(data) else None

    def get_invoice(self, invoice_id: str) -> Invoice:
        """Re-read with the same expansions as the sync (subscription, customer) and every line, so the re-read
        never loses what the sync knew (the subscription, which lines are metered)."""
        data = self._fetch("invoice", invoice_id)
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
            data = self._write(f"pay invoice {invoice_id}", ("invoice", "write"),
                               lambda: self._read_back("invoice", invoice_id, lambda i: i.get("status") == "paid"),
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
        invoice = invoice_from(_plain(data))
        request_id = _request_id(data)
        if invoice.status == "paid":
            return PaymentOutcome(succeeded=True, invoice=invoice, request_id=request_id, detail="paid")
        # A bank debit is accepted for processing: its result arrives days later, with a later sync.
        return PaymentOutcome(succeeded=False, invoice=invoice, request_id=request_id,
                              detail="the payment is processing; its result arrives with a later sync")

    def disable_automatic_retries(self, invoice_id: str, idempotency_key: str) -> None:
        self._write(f"turn off automatic collection of invoice {invoice_id}", ("invoice", "write"),
                    lambda: self._read_back("invoice", invoice_id, lambda i: i.get("auto_advance") is False),
                    self._client.v1.invoices.update, invoice_id, params={"auto_advance": False},
                    options={"idempotency_key": idempotency_key})

    def mark_invoice(self, invoice_id: str, metadata: dict[str, str], idempotency_key: str) -> None:
        # Metadata stays editable on a finalized invoice (only amounts and collection_method are frozen); keys
        # not named here are left as they are.
        self._call(f"note on invoice {invoice_id} what dunctl last sent", ("invoice", "write"),
                   self._client.v1.invoices.update, invoice_id, params={"metadata": metadata},
                   options={"idempotency_key": idempotency_key})

    def mark_uncollectible(self, invoice_id: str, idempotency_key: str) -> Invoice:
        data = self._write(f"mark invoice {invoice_id} uncollectible", ("invoice", "write"),
                           lambda: self._read_back("invoice", invoice_id, lambda i: i.get("status") == "uncollectible"),
                           self._client.v1.invoices.mark_uncollectible, invoice_id,
                           options={"idempotency_key": idempotency_key})
        return invoice_from(_plain(data))

    def pause_subscription(self, subscription_id: str, behavior: str, idempotency_key: str) -> None:
        params = {"pause_collection": {"behavior": behavior}}
        self._write(f"pause collection on subscription {subscription_id}", ("subscription", "write"),
                    lambda: self._read_back("subscription", subscription_id,
                                            lambda sub: (sub.get("pause_collection") or {}).get("behavior") == behavior),
                    self._client.v1.subscriptions.update, subscription_id, params=params,
                    options={"idempotency_key": keyed(idempotency_key, params)})

    def resume_subscription(self, subscription_id: str, idempotency_key: str) -> None:
        # An empty string unsets a parameter in Stripe's form encoding: `pause_collection=""` resumes collection
        # (stripe-python types it as Literal[''] | PauseCollection).
        self._call(f"resume collection on subscription {subscription_id}", ("subscription", "write"),
                   self._client.v1.subscriptions.update, subscription_id,
                   params={"pause_collection": ""}, options={"idempotency_key": idempotency_key})

    def cancel_subscription(self, subscription_id: str, comment: str, idempotency_key: str) -> None:
        """Cancel. A DELETE is not idempotent at Stripe (it ignores the idempotency key): a second cancel, after a
        crash or by a person on the Dashboard, is refused, so a subscription found cancelled is success."""
        try:
            self._call(f"cancel subscription {subscription_id}", ("subscription", "write"),
                       self._client.v1.subscriptions.cancel, subscription_id,
                       params={"cancellation_details": {"comment": comment}},
                       options={"idempotency_key": idempotency_key})
        except GatewayAuthError:
            raise
        except GatewayError as exc:
            if exc.code in ("rate_limited", "unavailable"):
                raise
            current = self._call(f"read subscription {subscription_id}", ("subscription", "read"),
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
            session = self._call(f"open a billing portal session for customer {invoice.customer_id}",
                                 ("billing_portal_session", "write"), self._client.v1.billing_portal.sessions.create,
                                 params=params, options={"idempotency_key": keyed(idempotency_key, params)})
            return session.url
        raise ValueError(f"unknown link kind {kind!r}; use hosted_invoice or billing_portal")


# -- Stripe JSON -> dunctl records (plain dicts in, dataclasses out) -----------------------------------------------


def keyed(idempotency_key: str, params: dict) -> str:
    """The idempotency key for a write whose parameters can change between tries (a portal `return_url`, a pause
    `behavior` edited in the config): the step's key plus a short hash of the parameters. Stripe refuses a key
    reused with other parameters (400 idempotency_error, "Keys for idempotent requests can only be used with the
    same parameters they were first used with"), so changed parameters get a key of their own."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{idempotency_key}~{digest}"


def _plain(data) -> dict:
    """A response as JSON: an SDK object, or the plain dict a read-back returned."""
    return data if isinstance(data, dict) else data.to_dict()


def _request_id(data) -> str | None:
    response = getattr(data, "last_response", None)
    return response.request_id if response else None


def _worth_retrying(exc: stripe.StripeError, write: bool) -> bool:
    """Would the same request, sent again, get another answer? Stripe says so itself in `Stripe-Should-Retry`
    when it can (stripe-python's _should_retry honours it first too); otherwise a 429 (its rate limiter runs
    before the idempotency layer), a 409 (a concurrent request with the same key), no connection, and a 5xx on
    a read. Never a 5xx on a write: it is saved under the key and replayed for 24 hours."""
    advice = str((exc.headers or {}).get("stripe-should-retry") or "").lower()
    if advice in ("true", "false"):
        return advice == "true"
    if isinstance(exc, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = exc.http_status or 0
    return status == 409 or (status >= 500 and not write)


def scrub(text: str | None) -> str | None:
    """Text from Stripe with anything that looks like an API key removed (Stripe's own 401s quote part of the
    key; a proxy or a misconfigured endpoint may echo all of it): it must not reach an error, a log or the
    ledger."""
    return KEY_PATTERN.sub("[key removed]", text) if text else text


def _advanced(state: dict, events: list[dict], now: datetime, listed_at: datetime | None,
              whole: bool = True) -> dict:
    """The events cursor after `events` (oldest first, as listed from `listed_at` by Stripe's clock), checked at
    `now`: the newest event, its second, and every event id of that second already applied (`edge`), unless that
    second was settled when listed and `whole` (no event of it listed after these, in a batch still to come)."""
    state = dict(state)
    if events:
        newest = events[-1]
        edge = [e["id"] for e in events if e["created"] == newest["created"]]
        if state.get("event_created") == newest["created"] and not state.get("settled"):
            earlier = state.get("edge") or ([state["event"]] if state.get("event") else [])
            edge = list(dict.fromkeys(earlier + edge))
        state.update(event=newest["id"], event_created=newest["created"], edge=edge, settled=False)
    if whole and state.get("event_created") is not None and _settled(state["event_created"], listed_at):
        state.update(edge=[], settled=True)     # listed after its second settled: every event of it was seen
    state["checked_at"] = iso(now)
    return state


def _settled(second: int, stripe_time: datetime | None) -> bool:
    """Can Stripe still create events stamped `second`? Judged by Stripe's clock, never dunctl's; unknown: yes."""
    return stripe_time is not None and stripe_time - from_unix(second) >= SETTLED


def _date_header(headers) -> datetime | None:
    """Stripe's clock from a response's Date header (second precision), None without a readable one."""
    try:
        text = (headers or {}).get("Date") or (headers or {}).get("date")   # requests' headers ignore case
        return utc(parsedate_to_datetime(text)) if text else None
    except (TypeError, ValueError, IndexError):
        return None


def _collect_payer(batch: SyncBatch, data: dict) -> None:
    """The customer and payment methods that came expanded with an invoice or a subscription."""
    customer = data.get("customer")
    if isinstance(customer, dict):
        batch.customers.append(customer_from(customer))
        default = (customer.get("invoice_settings") or {}).get("default_payment_method")
        if isinstance(default, dict):
            batch.payment_methods.append(payment_method_from(default))
    if isinstance(data.get("default_payment_method"), dict):
        batch.payment_methods.append(payment_method_from(data["default_payment_method"]))


def _card_details_changed(previous: dict) -> bool:
    """Did a payment method event change the card's number or expiry (what the card updater does)?"""
    card = previous.get("card") if isinstance(previous.get("card"), dict) else {}
    return bool({"exp_month", "exp_year", "last4", "fingerprint"} & set(card))


def _new_default(data: dict, previous: dict, at: datetime, event: dict, **where) -> list[Signal]:
    """A new default payment method on an invoice or a subscription: these come before the customer's default
    when Stripe picks the card (invoice, then subscription, then customer), so each is a new card to retry."""
    if "default_payment_method" not in previous:
        return []
    new = _id(data.get("default_payment_method"))
    if not new or new == _id(previous.get("default_payment_method")):
        return []
    return [Signal("payment_method_updated", at, customer_id=_id(data.get("customer")), payment_method_id=new,
                   detail=f"new default payment method {new} on {data.get('object')} {data.get('id')}",
                   source_id=event["id"], **where)]


def _deduplicated(batch: SyncBatch) -> SyncBatch:
    """One record per id in each list, the last one seen winning (records arrive oldest first)."""
    for name in ("customers", "payment_methods", "subscriptions"):
        records = getattr(batch, name)
        setattr(batch, name, list({record.id: record for record in records}.values()))
    return batch


def _id(value) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value


def _sub_note(invoice: dict) -> str:
    sub = _id(_subscription_field(invoice))
    return f" on {sub}" if sub else ""


def _subscription_field(invoice: dict):
    """The invoice's subscription: `parent.subscription_details.subscription`, or the old top-level field."""
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    return details.get("subscription") or invoice.get("subscription")


def _worth_following(invoice: dict, now: datetime) -> bool:
    """Backfill keeps invoices that failed, open ones past due, and closed ones a case may be waiting on."""
    status, attempts = invoice.get("status"), invoice.get("attempt_count") or 0
    if status == "open":
        due = invoice.get("due_date")
        # every open net-terms invoice: its reminders start before it falls due (dunctl/receivables)
        return attempts > 0 or (due is not None and (from_unix(due) < now
                                                      or invoice.get("collection_method") == "send_invoice"))
    if status == "paid":
        # Manual payments after a failure do not raise attempt_count, so a payment well after finalization (the
        # first automatic attempt) also means an earlier attempt failed: a case may be waiting for it.
        transitions = invoice.get("status_transitions") or {}
        paid, finalized = transitions.get("paid_at"), transitions.get("finalized_at")
        late = paid is not None and finalized is not None and paid - finalized > PAID_LATE_AFTER
        return attempts > 1 or (late and invoice.get("collection_method") == "charge_automatically")
    if status in ("void", "uncollectible"):
        return attempts > 0
    return False


def customer_from(data: dict) -> Customer:
    metadata = {k: str(v) for k, v in (data.get("metadata") or {}).items()}
    locales = data.get("preferred_locales") or []
    return Customer(id=data["id"], name=data.get("name"), email=data.get("email"), phone=data.get("phone"),
                    metadata=metadata, preferred_locale=locales[0] if locales else None,
                    timezone=metadata.get("timezone"), livemode=bool(data.get("livemode")),
                    default_payment_method_id=_id((data.get("invoice_settings") or {}).get("default_payment_method")))


def payment_method_from(data: dict, updated_at: datetime | None = None) -> PaymentMethod:
    kind = data.get("type") or ("card" if data.get("object") == "card" else "unknown")
    details = data.get(kind) or {}
    return PaymentMethod(id=data["id"], customer_id=_id(data.get("customer")), type=kind,
                         brand=details.get("brand") or details.get("bank_name"), last4=details.get("last4"),
                         exp_month=details.get("exp_month"), exp_year=details.get("exp_year"),
                         updated_at=updated_at)


def subscription_from(data: dict) -> Subscription:
    items = (data.get("items") or {}).get("data") or []
    usage_based = any(_metered(item.get("price") or item.get("plan") or {}) for item in items)
    pause = data.get("pause_collection") or {}
    return Subscription(id=data["id"], customer_id=_id(data.get("customer")), status=data.get("status") or "unknown",
                        metadata={k: str(v) for k, v in (data.get("metadata") or {}).items()},
                        usage_based=usage_based, pause_behavior=pause.get("behavior"),
                        canceled_at=from_unix(data.get("canceled_at")), **billing_terms(data))


def billing_terms(data: dict) -> dict:
    """What pre-dunning needs of a subscription: its current period (on the items since 2025), the licensed
    prices' amount per period and interval, its own default payment method, and whether it ends."""
    items = (data.get("items") or {}).get("data") or []
    starts = [item["current_period_start"] for item in items if item.get("current_period_start")]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    licensed = [item for item in items if not _metered(item.get("price") or item.get("plan") or {})]
    amount = sum(((item.get("price") or {}).get("unit_amount") or 0) * (item.get("quantity") or 1) for item in licensed)
    recurring = ((licensed or items or [{}])[0].get("price") or {}).get("recurring") or {}
    return {"current_period_start": from_unix(min(starts) if starts else data.get("current_period_start")),
            "current_period_end": from_unix(min(ends) if ends else data.get("current_period_end")),
            "default_payment_method_id": _id(data.get("default_payment_method")),
            "interval": recurring.get("interval"), "amount": amount if items else None,
            "currency": data.get("currency"), "cancel_at_period_end": bool(data.get("cancel_at_period_end"))}


def _metered(price: dict) -> bool:
    recurring = price.get("recurring") or {}
    return (recurring.get("usage_type") or price.get("usage_type")) == "metered" or bool(recurring.get("meter"))


def _lines(invoice: dict) -> list[InvoiceLine] | None:
    """The invoice's lines, each matched to its subscription item by id (parent.subscription_item_details, or
    the price in pricing.price_details), never by position. None when this copy cannot say which lines are
    metered (the subscription not expanded) or holds only some lines (has_more): the ledger then keeps what it
    knew rather than forgetting the usage breakdown."""
    listed = invoice.get("lines") or {}
    if listed.get("has_more"):
        return None
    subscription = _subscription_field(invoice)
    by_item: dict[str, bool] = {}
    by_price: dict[str, bool] = {}
    if isinstance(subscription, dict):
        for item in (subscription.get("items") or {}).get("data") or []:
            price = item.get("price") or item.get("plan") or {}
            by_item[item["id"]] = by_price[_id(price) or ""] = _metered(price)
    lines = []
    for line in listed.get("data") or []:
        parent = (line.get("parent") or {}).get("subscription_item_details") or {}
        item_id = _id(parent.get("subscription_item"))
        price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        price_id = _id(price)
        if item_id in by_item:
            metered = by_item[item_id]
        elif isinstance(price, dict):
            metered = _metered(price)
        elif price_id in by_price:
            metered = by_price[price_id]
        elif item_id:
            return None                 # a subscription line whose item this copy does not show
        else:
            metered = False             # a one-off invoice item
        period = line.get("period") or {}
        lines.append(InvoiceLine(description=line.get("description"), amount=line.get("amount") or 0,
                                 quantity=line.get("quantity"), metered=metered,
                                 period_start=from_unix(period.get("start")), period_end=from_unix(period.get("end")),
                                 subscription_item_id=item_id, price_id=price_id))
    return lines


def unstorable(invoice: dict) -> str | None:
    """Why this invoice cannot be stored (an impossible amount, an unknown currency), or None."""
    currency = invoice.get("currency")
    if not isinstance(currency, str) or currency.lower() not in CURRENCIES:
        return f"unknown currency {currency!r}"
    for name in ("amount_due", "amount_paid", "amount_remaining"):
        value = invoice.get(name) or 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_AMOUNT:
            return f"impossible {name} {value!r}"
    return None


def _older_than_pinned(api_version: str | None) -> bool:
    """An event rendered in an API version older than the one dunctl pins (versions sort by their date)."""
    return bool(api_version) and api_version[:10] < PINNED_API_VERSION[:10]


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
    found: list[tuple[str, str, dict]] = []
    pause = sub.get("pause_collection") or None
    if kind == "customer.subscription.deleted":
        details = sub.get("cancellation_details") or {}
        reason = details.get("reason") or "cancelled"
        found.append(("subscription_canceled", f"subscription cancelled ({reason}"
                      + (f": {details['comment']}" if details.get("comment") else "") + ")",
                      {"reason": details.get("reason"), "comment": details.get("comment"),
                       "feedback": details.get("feedback")}))
    elif kind == "customer.subscription.paused":
        found.append(("subscription_paused", "subscription paused (status paused)", {"status": "paused"}))
    elif kind == "customer.subscription.resumed":
        found.append(("subscription_resumed", "subscription resumed", {"status": sub.get("status")}))
    else:
        if "cancel_at_period_end" in previous or "cancel_at" in previous:
            if sub.get("cancel_at_period_end") or sub.get("cancel_at"):
                found.append(("subscription_cancel_scheduled",
                              f"subscription set to cancel on {iso(from_unix(sub.get('cancel_at')))}",
                              {"cancel_at": iso(from_unix(sub.get("cancel_at"))),
                               "cancel_at_period_end": bool(sub.get("cancel_at_period_end"))}))
            else:
                found.append(("subscription_resumed", "scheduled cancellation withdrawn", {"status": sub.get("status")}))
        if "pause_collection" in previous:
            if pause:
                found.append(("subscription_paused", f"collection paused ({pause.get('behavior')})",
                              {"behavior": pause.get("behavior"),
                               "resumes_at": iso(from_unix(pause.get("resumes_at")))}))
            else:
                found.append(("subscription_resumed", "collection resumed", {"status": sub.get("status")}))
        if "status" in previous and previous["status"] != sub.get("status"):
            if sub.get("status") == "paused":
                found.append(("subscription_paused", "subscription paused (status paused)", {"status": "paused"}))
            elif previous["status"] == "paused":
                found.append(("subscription_resumed", "subscription resumed", {"status": sub.get("status")}))
    return [Signal(signal_kind, at, customer_id=_id(sub.get("customer")), subscription_id=sub.get("id"),
                   detail=detail, source_id=f"{signal_kind}:{sub.get('id')}:{event['created']}",
                   data={**data, "event": event["id"], "by_dunctl": by_dunctl,
                         **({"paused_for": paused_for} if signal_kind == "subscription_paused" and paused_for else {})})
            for signal_kind, detail, data in found]


def decline_from_intent(intent: dict) -> Decline | None:
    """The codes of a payment intent's latest failed attempt: last_payment_error plus its charge's outcome."""
    error = intent.get("last_payment_error") or {}
    charge = intent.get("latest_charge") if isinstance(intent.get("latest_charge"), dict) else {}
    if not error and not (charge.get("failure_code")) and intent.get("status") != "requires_action":
        return None
    outcome = charge.get("outcome") or {}
    method = error.get("payment_method") if isinstance(error.get("payment_method"), dict) else \
        intent.get("payment_method") if isinstance(intent.get("payment_method"), dict) else {}
    method_type = method.get("type") or error.get("payment_method_type") or \
        (charge.get("payment_method_details") or {}).get("type") or \
        ((intent.get("payment_method_types") or [None])[0])
    return Decline(code=error.get("code"), decline_code=error.get("decline_code"),
                   advice_code=error.get("advice_code") or outcome.get("advice_code"),
                   network_decline_code=error.get("network_decline_code") or outcome.get("network_decline_code"),
                   network_advice_code=error.get("network_advice_code") or outcome.get("network_advice_code"),
                   failure_code=charge.get("failure_code"), outcome_reason=outcome.get("reason"),
                   payment_intent_status=intent.get("status"), payment_method_type=method_type,
                   message=scrub(error.get("message") or charge.get("failure_message")))


def decline_from_error(body: dict) -> Decline:
    """The decline in a card error's body (what invoices.pay answers with 402)."""
    error = body.get("error") or {}
    intent = error.get("payment_intent") if isinstance(error.get("payment_intent"), dict) else {}
    method = error.get("payment_method") if isinstance(error.get("payment_method"), dict) else {}
    return Decline(code=error.get("code"), decline_code=error.get("decline_code"),
                   advice_code=error.get("advice_code"), network_decline_code=error.get("network_decline_code"),
                   network_advice_code=error.get("network_advice_code"),
                   payment_intent_status=intent.get("status"),
                   payment_method_type=method.get("type") or error.get("payment_method_type")
                   or (intent.get("payment_method_types") or [None])[0],
                   message=scrub(error.get("message")))


def invoice_from(data: dict, intent: dict | None = None, *, failed_at: datetime | None = None,
                 first_failed_at: datetime | None = None) -> Invoice:
    """A dunctl Invoice from Stripe's JSON (either API shape), with the decline from its payment intent.

    Failure times: the event's when known; otherwise the latest charge's `created` (the failed attempt) and,
    for the first failure, the payment intent's `created` (its first attempt) when there were several."""
    transitions = data.get("status_transitions") or {}
    customer = data.get("customer")
    decline = decline_from_intent(intent) if intent else None
    attempts = data.get("attempt_count") or 0
    if intent and decline and failed_at is None:
        charge = intent.get("latest_charge") if isinstance(intent.get("latest_charge"), dict) else {}
        failed_at = from_unix(charge.get("created") if charge.get("status") == "failed" else None) or \
            from_unix(intent.get("created"))
    if failed_at is None and data.get("status") == "open" and attempts > 0 and data.get("attempted"):
        failed_at = from_unix(transitions.get("finalized_at") or data.get("created"))
    if first_failed_at is None and failed_at is not None:
        first_failed_at = failed_at if attempts <= 1 or not intent else \
            min(failed_at, from_unix(intent.get("created")) or failed_at)
    method = None
    if intent:
        raw = (intent.get("last_payment_error") or {}).get("payment_method") or intent.get("payment_method")
        method = raw if isinstance(raw, dict) else {"id": raw} if raw else None
    # No attempt yet: the card a payment will use, in Stripe's order (invoice, subscription, customer).
    subscription = _subscription_field(data)
    for raw in (data.get("default_payment_method"),
                subscription.get("default_payment_method") if isinstance(subscription, dict) else None):
        if method is None and raw:
            method = raw if isinstance(raw, dict) else {"id": raw}
    if method is None and isinstance(customer, dict):
        raw = (customer.get("invoice_settings") or {}).get("default_payment_method")
        method = raw if isinstance(raw, dict) else {"id": raw} if raw else None
    return Invoice(
        id=data["id"], customer_id=_id(customer), currency=data.get("currency") or "",
        amount_due=data.get("amount_due") or 0,
        amount_paid=data.get("amount_paid") or 0, amount_remaining=data.get("amount_remaining") or 0,
        status=data.get("status") or "open", created=from_unix(data.get("created")), number=data.get("number"),
        subscription_id=_id(_subscription_field(data)), billing_reason=data.get("billing_reason"),
        collection_method=data.get("collection_method") or "charge_automatically", attempt_count=attempts,
        next_payment_attempt=from_unix(data.get("next_payment_attempt")),
        hosted_invoice_url=data.get("hosted_invoice_url"),
        due_date=from_unix(data.get("due_date")), invoice_pdf=data.get("invoice_pdf"),
        customer_email=data.get("customer_email") or (customer.get("email") if isinstance(customer, dict) else None),
        customer_name=data.get("customer_name") or (customer.get("name") if isinstance(customer, dict) else None),
        payment_method_id=(method or {}).get("id"),
        payment_method_type=(decline.payment_method_type if decline else None) or (method or {}).get("type"),
        metadata={k: str(v) for k, v in (data.get("metadata") or {}).items()}, lines=_lines(data),
        first_failed_at=first_failed_at, failed_at=failed_at, decline=decline,
        paid_at=from_unix(transitions.get("paid_at")), voided_at=from_unix(transitions.get("voided_at")),
        marked_uncollectible_at=from_unix(transitions.get("marked_uncollectible_at")),
        auto_advance=data.get("auto_advance"), livemode=bool(data.get("livemode")),
    )


def _describe(method: PaymentMethod) -> str:
    text = f"{method.brand or method.type} ending {method.last4}" if method.last4 else method.type
    if method.exp_month and method.exp_year:
        text += f", expires {method.exp_month}/{method.exp_year}"
    return text
