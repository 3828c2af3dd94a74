"""Requests to Stripe: stripe-python 16's StripeClient set up for dunctl, and every call through one pipeline.

Each request takes a token from one bucket (`max_requests_per_second`), is sent with what is left of the tick's
budget as its timeout, is retried with backoff while a retry can help (Stripe-Should-Retry decides when Stripe
says), and any Stripe error becomes a dunctl error carrying Stripe's request id. The SDK retries nothing itself:
every retry and its sleep is ours, so it is counted and testable. The API key is handed to the SDK and nowhere
else, and text from Stripe that looks like a key is scrubbed (convert.scrub). Reads of one object (`fetch`) come
back whole: every invoice line and subscription item, following `has_more`.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

import requests
import stripe
import urllib3

from dunctl.clock import utc
from dunctl.errors import CardDeclined, GatewayAuthError, GatewayError, OutOfTime, WriteUncertain
from dunctl.stripe.convert import decline_from_error, id_of, subscription_field
from dunctl.stripe_permissions import LABELS, scrub

# The API version the SDK pins (and every request sends). An event rendered in an older version carries an older
# shape of its object (an invoice with payment_intent and subscription on top, no parent): re-fetch the object.
PINNED_API_VERSION = stripe.api_version
PAGE = 100
# Four levels is as deep as Stripe expands.
INVOICE_EXPAND = ["customer", "customer.invoice_settings.default_payment_method", "default_payment_method",
                  "parent.subscription_details.subscription"]
PAYMENT_EXPAND = ["data.payment.payment_intent.latest_charge"]
# Restricted-key permission (as Stripe names it in a 403) -> the resource's name on the Dashboard's key page.
PERMISSION_NAMES = {**LABELS, "dispute": "Disputes", "billing_portal": "Customer portal"}
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


class StripeRequests:
    """One Stripe account's requests: rate-limited, retried, within a budget, their errors translated."""

    def __init__(self, api_key: str, *, api_base: str | None = None, key_env: str = "STRIPE_API_KEY",
                 account: str | None = None, max_requests_per_second: float = 25.0, max_backoff_tries: int = 6,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random, http_client: stripe.HTTPClient | None = None,
                 budget: float | None = None):
        self.requests = 0
        self.key_env = key_env
        self.stripe_date: datetime | None = None   # Stripe's clock: the Date of its first answer (tick/clocks.py)
        self.stripe_time: datetime | None = None   # Stripe's clock (the Date of its last list response), if it said
        self.max_backoff_tries = max_backoff_tries
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

    @property
    def v1(self):
        """The SDK's v1 services (`requests.call(..., requests.v1.invoices.pay, ...)`)."""
        return self._client.v1

    def account_id(self) -> str:
        """The id of the account the requests act on (the connected account when one is set): one request.
        A restricted key without the Account permission still learns it: Stripe's 403 names the account."""

        def current() -> str:
            try:
                return self._client.v1.accounts.retrieve_current().id
            except stripe.PermissionError as exc:
                found = re.search(r"on account '(acct_[A-Za-z0-9]+)'", exc.user_message or "")
                if found:
                    return found.group(1)
                raise

        return self.call("read which account the key belongs to", ("account", "read"), current)

    def call(self, what: str, permission: tuple[str, str], method: Callable, *args, **kwargs):
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
                raise self._gave_up(transient, what, tries, write) from None
            self._sleep(delay)

    def _before_request(self, what: str) -> None:
        self._bucket.take()
        if self._remaining() < MIN_REQUEST_TIME:
            raise OutOfTime(f"the tick's time (dunning.tick_budget) ran out before trying to {what}",
                            code="unavailable", hint="nothing was sent; the next tick tries again")
        self.requests += 1

    def _remaining(self) -> float:
        """Seconds left of the tick's budget (with its margin); unbounded without one."""
        return float("inf") if self._deadline is None else self._deadline - self._clock()

    def _timeout(self) -> float:
        return max(0.1, min(REQUEST_TIMEOUT, self._remaining()))

    def _gave_up(self, transient: stripe.StripeError, what: str, tries: int, write: bool) -> GatewayError:
        limited = isinstance(transient, stripe.RateLimitError)
        if write and isinstance(transient, stripe.APIConnectionError) and _may_have_arrived(transient):
            # The last try was sent and no answer came: Stripe may have done the work (the caller reads back).
            return GatewayError(f"Stripe did not answer the request to {what} ({tries} tries); it may have "
                                "arrived", code="no_answer",
                                hint="read back before trying again: the write may have taken effect")
        reason = "rate-limited the request (429)" if limited else \
            f"failed ({transient.http_status or 'no connection'})"
        return GatewayError(f"Stripe {reason} to {what} {tries} times in a row; gave up"
                            + (f" (request {transient.request_id})" if transient.request_id else ""),
                            request_id=transient.request_id, code="rate_limited" if limited else "unavailable",
                            hint="nothing was lost: the next run resumes from the last stored sync cursor")

    def write(self, what: str, permission: tuple[str, str], took_effect: Callable[[], object | None],
              method: Callable, *args, **kwargs):
        """A write under an idempotency key. After a 5xx, or when its last try was sent and no answer came, the
        object is read back: a write that took effect is success (`took_effect` returns what to return in its
        place); one that did not fails this try, and the next is made under a new key (dunctl.tick.effects: a 5xx
        is saved under its key). When the read fails too, nobody knows: WriteUncertain, never a failed try that
        the next tick would make again under a new key."""
        try:
            return self.call(what, permission, method, *args, **kwargs)
        except GatewayError as exc:
            if exc.code not in ("server_error", "no_answer"):
                raise
            failed = exc
        found = self.read_back(failed, took_effect)
        if found is not None:
            return found
        raise GatewayError(f"{failed.message}; read back, it had not taken effect", request_id=failed.request_id,
                           code="unavailable", hint="the next try uses a new key (Stripe saves a 5xx under the one it had)")

    @staticmethod
    def read_back(failed: GatewayError, took_effect: Callable[[], object | None]):
        """What `took_effect` finds after the write that `failed` without saying whether it was done; when the read
        fails too (a GatewayError, not a refused key nor the tick's time running out), WriteUncertain."""
        try:
            return took_effect()
        except (GatewayAuthError, OutOfTime):
            raise                 # out of time: the claim is given back, and its next try keeps its key
        except GatewayError as exc:
            raise WriteUncertain(f"{failed.message}; reading it back failed too ({exc.message}), so whether it took "
                                 "effect is unknown", request_id=failed.request_id, code="uncertain",
                                 hint="look at the object on the Stripe Dashboard, then `dunctl case resolve`") from None

    def _note_date(self, answer) -> None:
        """Keep the `Date` header of Stripe's first answer: Stripe's clock, read seconds after the CLI read the
        machine's. A raw answer (StripeResponse) carries its headers; an object, on `last_response`."""
        if self.stripe_date is not None:
            return
        response = answer if isinstance(answer, stripe.StripeResponse) else getattr(answer, "last_response", None)
        headers = {name.lower(): value for name, value in (getattr(response, "headers", None) or {}).items()}
        self.stripe_date = date_header(headers)   # None when unreadable: no clock to compare with

    def list_page(self, path: str, what: str, permission: tuple[str, str], params: dict) -> dict:
        """A list page as plain JSON, for the backfill's bulk pages: through the SDK's `raw_request` (same
        encoding, headers and errors), skipping the StripeObject tree it would build and we would only flatten
        again with to_dict(), which costs more than the request itself on pages of expanded invoices."""
        response = self.call(what, permission, self._client.raw_request, "get", path, **params)
        self.stripe_time = date_header(response.headers)
        return response.data

    def rest(self, path: str, what: str, permission: tuple[str, str], params: dict, after: str) -> list[dict]:
        """Every item of a list after `after`, page by page (an invoice's lines, a subscription's items)."""
        found: list[dict] = []
        while True:
            page = self.list_page(path, what, permission, {**params, "limit": PAGE, "starting_after": after})
            found.extend(page["data"])
            if not page["has_more"] or not page["data"]:
                return found
            after = page["data"][-1]["id"]

    # -- reads: objects whole, in the pinned API version (the sync's and the event handlers') --------------------

    def fetch(self, kind: str, object_id: str) -> dict:
        """The object as it is now, in the pinned API version, complete (every line and item)."""
        if kind == "invoice":
            data = self.call(f"read invoice {object_id}", ("invoice", "read"),
                             self._client.v1.invoices.retrieve, object_id,
                             params={"expand": INVOICE_EXPAND}).to_dict()
            return self.complete_invoice(data)
        if kind == "subscription":
            data = self.call(f"read subscription {object_id}", ("subscription", "read"),
                             self._client.v1.subscriptions.retrieve, object_id).to_dict()
            return self.complete_items(data)
        data = self.call(f"read payment method {object_id}", ("payment_method", "read"),
                         self._client.v1.payment_methods.retrieve, object_id)
        return data.to_dict()

    def complete_invoice(self, data: dict) -> dict:
        """Follow `has_more` on the invoice's lines (and its expanded subscription's items): Stripe embeds only
        the first 10, and a usage invoice can have hundreds."""
        lines = data.get("lines")
        if isinstance(lines, dict) and lines.get("has_more") and lines.get("data"):
            rest = self.rest(f"/v1/invoices/{data['id']}/lines", f"list the lines of invoice {data['id']}",
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
            rest = self.rest("/v1/subscription_items", f"list the items of subscription {subscription['id']}",
                             ("subscription", "read"), {"subscription": subscription["id"]},
                             items["data"][-1]["id"])
            subscription["items"] = {**items, "data": items["data"] + rest, "has_more": False}
        return subscription

    def charge(self, charge_id: str) -> dict:
        return self.call(f"read charge {charge_id}", ("charge", "read"), self._client.v1.charges.retrieve,
                         charge_id).to_dict()

    def invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        """The invoice a payment intent paid (a disputed charge's): through its invoice payment."""
        page = self.call(f"find the invoice of payment intent {payment_intent_id}", ("invoice", "read"),
                         self._client.v1.invoice_payments.list,
                         params={"payment": {"type": "payment_intent", "payment_intent": payment_intent_id},
                                 "limit": 1})
        return id_of(page.data[0].to_dict().get("invoice")) if page.data else None

    def payment_of(self, invoice: dict) -> dict | None:
        """The invoice's payment (payment intent and latest charge expanded): where the decline lives."""
        page = self.call(f"list the payments of invoice {invoice['id']}", ("invoice", "read"),
                         self._client.v1.invoice_payments.list,
                         params={"invoice": invoice["id"], "limit": 10, "expand": PAYMENT_EXPAND})
        payments = [p.to_dict() for p in page.data]
        return next((p for p in payments if p.get("is_default")), payments[0] if payments else None)

    def last_paid_at(self, invoice_id: str) -> int | None:
        """When Stripe recorded the invoice's latest payment (unix seconds; its paid invoice payments'
        `status_transitions.paid_at`): the date of a part paid, for a sync that reads the invoice from a listing
        rather than from the event that raised its amount paid."""
        page = self.call(f"list the paid payments of invoice {invoice_id}", ("invoice", "read"),
                         self._client.v1.invoice_payments.list,
                         params={"invoice": invoice_id, "status": "paid", "limit": 10})
        times = [(p.to_dict().get("status_transitions") or {}).get("paid_at") for p in page.data]
        return max((t for t in times if t), default=None)

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


def keyed(idempotency_key: str, params: dict) -> str:
    """The idempotency key for a write whose parameters can change between tries (a portal `return_url`, a pause
    `behavior` edited in the config): the step's key plus a short hash of the parameters. Stripe refuses a key
    reused with other parameters (400 idempotency_error, "Keys for idempotent requests can only be used with the
    same parameters they were first used with"), so changed parameters get a key of their own."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{idempotency_key}~{digest}"


def plain(data) -> dict:
    """A response as JSON: an SDK object, or the plain dict a read-back returned."""
    return data if isinstance(data, dict) else data.to_dict()


def request_id_of(data) -> str | None:
    response = getattr(data, "last_response", None)
    return response.request_id if response else None


def _may_have_arrived(exc: stripe.APIConnectionError) -> bool:
    """Could Stripe have received the request this connection error cut off? Not when no connection was made
    (refused, a name that does not resolve, a connect timeout: urllib3's ConnectTimeoutError and its subclasses
    NewConnectionError, NameResolutionError, inside the error requests raises); yes when the connection broke or
    went silent after the request was sent. stripe-python raises APIConnectionError from the requests error."""
    cause = exc.__cause__
    if isinstance(cause, requests.exceptions.ConnectTimeout):
        return False
    if isinstance(cause, requests.exceptions.ConnectionError) and cause.args:
        if isinstance(getattr(cause.args[0], "reason", None), urllib3.exceptions.ConnectTimeoutError):
            return False
    return True


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


def date_header(headers) -> datetime | None:
    """Stripe's clock from a response's Date header (second precision), None without a readable one."""
    try:
        text = (headers or {}).get("Date") or (headers or {}).get("date")   # requests' headers ignore case
        return utc(parsedate_to_datetime(text)) if text else None
    except (TypeError, ValueError, IndexError):
        return None
