"""A fake Stripe API on 127.0.0.1, for tests that go through the real stripe SDK over HTTP.

    from tests.fakestripe import fake_stripe          # fixture: a started FakeStripe, `.url` is its base
    from tests.fakestripe import FakeStripe           # or start one yourself (a context manager)

Objects are built from Stripe's own fixtures (tests/fakestripe_fixtures.json, taken from stripe/fixtures3.json),
so every response has the real shape of API version 2026-10-28.endive. The fake implements what dunctl uses:

- lists with `limit` / `starting_after` / `ending_before` / `has_more`, newest first; `expand[]` (4 levels);
  `types[]` on events; events kept 30 days after the fake's clock;
- `Idempotency-Key` replay (same key and parameters: the same answer; other parameters: 400 idempotency_error),
  a 5xx included: Stripe saves it under the key and replays it, with `Stripe-Should-Retry: false`;
- Stripe-shaped errors with a `Request-Id` header: card errors carrying the payment intent, 401 for an unknown
  key, 403 naming the missing `rak_..._write` permission for a restricted key;
- invoices.pay / update / mark_uncollectible / void, subscriptions update / cancel, billing portal sessions;
- every request's parameters checked against stripe-python's own params types (tests/stripe_params.py): an unknown
  parameter, a wrong type, a missing required one or a value outside an enum is Stripe's 400, as on Stripe
  (`validate_params = False` turns that off, for a test that means to send what Stripe refuses).

Tests script the account directly (no HTTP): `add_customer`, `fail_invoice(decline_code=...)`, `customer_pays`,
`next_payment_succeeds`, `dispute`, `inject(429, times=3)`, `storm(429)`, `old_shape_events = True`, and read
what happened (`open_portal_link(url, at)`: does a portal session URL still open when the customer clicks?): `count("POST /v1/invoices/:id/pay")`, `events`, `invoice(id)`. Every change records events
(newest first, as Stripe lists them). Times are the fake's clock (`set_now`, or the `at=` of a scripted change).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.stripe_params import DOCUMENTED_CODES, ParamError, parse_form, validate

API_VERSION = "2026-10-28.endive"
OLD_API_VERSION = "2020-08-27"
ACCOUNT = "acct_1FakeDunctlTest"
TEST_KEY = "sk_test_fake_dunctl_0000000000000000"
RETENTION = 30 * 86400
PORTAL_SESSION_TTL = 5 * 60   # a billing portal session URL opens for this long after it is created
EMBEDDED = 10          # lines of an invoice, items of a subscription, embedded in the object
# The restricted-key permission that reads an expanded object, where it is not the object's own name.
EXPANDED_PERMISSION = {"invoice_payment": "invoice", "subscription_item": "subscription", "price": "product"}
EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)

_FIXTURES = json.loads(Path(__file__).with_name("fakestripe_fixtures.json").read_text())["resources"]

BANK_TYPES = ("us_bank_account", "sepa_debit", "bacs_debit", "acss_debit", "au_becs_debit")
# Raw NACHA return codes and SEPA reason codes -> the failure_code Stripe puts on the charge.
BANK_NORMALISED = {
    "R01": "insufficient_funds", "R09": "insufficient_funds", "R02": "account_closed", "R03": "no_account",
    "R04": "invalid_account_number", "R16": "account_frozen", "R20": "bank_account_restricted",
    "R15": "recipient_deceased", "R05": "debit_not_authorized", "R07": "debit_not_authorized",
    "R08": "debit_not_authorized", "R10": "debit_not_authorized", "R11": "debit_not_authorized",
    "R29": "debit_not_authorized", "AM04": "insufficient_funds", "AC04": "account_closed",
    "AC01": "invalid_account_number", "AC06": "account_frozen", "MD01": "debit_not_authorized",
    "MD07": "recipient_deceased", "MS02": "generic_could_not_process", "MS03": "generic_could_not_process",
}
# A card decline whose decline code is also the error code (Stripe reports these with code == decline_code).
_OWN_CODE = {"expired_card", "incorrect_cvc", "incorrect_number", "invalid_cvc", "invalid_expiry_month",
             "invalid_expiry_year", "incorrect_zip", "authentication_required", "processing_error"}


_FIXTURE_TEXT = {name: json.dumps(value) for name, value in _FIXTURES.items()}


def template(name: str) -> dict:
    """A fresh copy of Stripe's canonical JSON for one resource."""
    return json.loads(_FIXTURE_TEXT[name])


def clone(value):
    """A deep copy of JSON data (several times faster than copy.deepcopy, which matters for 10k invoices)."""
    return json.loads(json.dumps(value))


def subscription_id_of(invoice: dict) -> str | None:
    """The invoice's subscription (endive shape: parent.subscription_details; null parent without one)."""
    return ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")


def unix(at: datetime | int) -> int:
    if isinstance(at, int):
        return at
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return int(at.timestamp())


class ApiError(Exception):
    """An error the fake answers with, in Stripe's shape."""

    def __init__(self, status: int, type_: str, message: str, code: str | None = None, param: str | None = None,
                 **extra):
        super().__init__(message)
        # Only codes Stripe documents: an integration that branches on an invented one passes here and fails live.
        assert code is None or code in DOCUMENTED_CODES, f"undocumented Stripe error code {code!r}"
        self.status = status
        self.headers: dict[str, str] = {}
        self.body = {"error": {"type": type_, "message": message, **({"code": code} if code else {}),
                               **({"param": param} if param else {}), **extra}}


# Fault statuses that are not HTTP answers: the connection closes with no answer at all.
ANSWER_LOST = 0       # after the request did its work (and was saved under its idempotency key, as Stripe does)
NO_ANSWER = -1        # before it did anything


class AnswerLost(Exception):
    """Close the connection without answering (ANSWER_LOST, NO_ANSWER)."""


@dataclass
class Fault:
    status: int
    remaining: int | None          # None: until calm()
    route: str | None              # "GET /v1/events"; None: every route
    took_effect: bool = False      # a 5xx on a write that did its work first (the answer was lost, not the change)
    should_retry: bool | None = None   # Stripe-Should-Retry sent with it; true: not saved under the key
    then_unreachable: bool = False     # lose_answers: once it answers nothing, nothing else is answered either


@dataclass
class Outcome:
    succeeds: bool
    decline: dict | None = None


def _decline(decline_code: str | None = "insufficient_funds", *, code: str | None = None,
             advice_code: str | None = None, network_advice_code: str | None = None,
             network_decline_code: str | None = None, outcome_reason: str | None = None,
             failure_code: str | None = None, requires_action: bool = False, message: str | None = None) -> dict:
    return {"decline_code": decline_code, "code": code, "advice_code": advice_code,
            "network_advice_code": network_advice_code, "network_decline_code": network_decline_code,
            "outcome_reason": outcome_reason, "failure_code": failure_code,
            "requires_action": requires_action or decline_code == "authentication_required",
            "message": message}


def _fault_error(status: int, should_retry: bool | None = None) -> ApiError:
    if status == 429:
        error = ApiError(429, "invalid_request_error", "Request rate limit exceeded. Learn more about rate limits "
                         "here https://stripe.com/docs/rate-limits.", code="rate_limit")
    else:
        error = ApiError(status, "api_error", "An unknown error occurred")
    if should_retry is not None:
        error.headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
    return error


def _should_retry(status: int) -> dict:
    """A saved 5xx is what every retry under its key gets: Stripe says so (stripe-python honours the header)."""
    return {"Stripe-Should-Retry": "false"} if status >= 500 else {}


def _flag(value) -> bool:
    return str(value).lower() in ("true", "1")


def _range_ok(value: int, flt) -> bool:
    if flt is None:
        return True
    if not isinstance(flt, dict):
        return value == int(flt)
    return all((op != "gt" or value > int(v)) and (op != "gte" or value >= int(v)) and
               (op != "lt" or value < int(v)) and (op != "lte" or value <= int(v)) for op, v in flt.items())


# -- the account ---------------------------------------------------------------------------------------------------


class FakeStripe:
    """A Stripe account you can script, served over HTTP on 127.0.0.1."""

    def __init__(self, *, now: datetime = EPOCH):
        self.lock = threading.RLock()
        self._key: str | None = None                                 # the key of the request being answered
        self.now = unix(now)
        self.store: dict[str, dict[str, dict]] = defaultdict(dict)   # kind -> id -> object
        self.seq: dict[str, int] = {}                                # id -> creation order
        self.events: list[dict] = []                                 # oldest first
        self.counts: Counter = Counter()                             # "GET /v1/events" -> requests
        self.log: list[tuple[str, str, int]] = []                    # (method, path, status)
        self.faults: list[Fault] = []
        self.flaky: tuple[float, random.Random] | None = None        # (share of requests failing, its dice)
        self.latency: dict[str, float] = {}
        self.denied: dict[str, set[str]] = defaultdict(set)          # key -> {"invoice_write", ...}
        self.rejected_keys: set[str] = set()
        self.outcomes: dict[str, list[Outcome]] = defaultdict(list)  # invoice id -> next invoices.pay outcomes
        self.old_shape_events = False
        self._idempotency: dict[tuple[str, str], tuple[str, int, dict]] = {}
        self._payment_of_invoice: dict[str, str] = {}
        self.usage: dict[str, int] = {}                              # subscription -> metered quantity so far
        self._mandate_of: dict[str, str] = {}                        # payment method id -> mandate id
        self.key_accounts: dict[str, str] = {}                       # API key -> its account (default ACCOUNT)
        self.connected_accounts: set[str] = set()                    # accounts a Stripe-Account header may name
        self.account_headers: list[str | None] = []                  # the Stripe-Account header of each request
        self.echo_key_in_errors: bool | int = False                  # errors quoting the key (True: 400s; or a status)
        self.validate_params = True                                  # refuse what Stripe refuses (stripe_params)
        self.date_skew = 0.0                                         # seconds Stripe's Date is off the wall clock
        self._account = ACCOUNT                                      # the account the current request acts on
        self._counter = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- serving ---------------------------------------------------------------------------------------------

    def start(self) -> FakeStripe:
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fakestripe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeStripe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- observing -------------------------------------------------------------------------------------------

    def count(self, route: str | None = None) -> int:
        """Requests received for one route ("POST /v1/invoices/:id/pay"), or in all."""
        with self.lock:
            return self.counts[route] if route else sum(self.counts.values())

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.log.clear()

    def invoice(self, invoice_id: str) -> dict:
        return self.store["invoice"][invoice_id]

    def payment_intent_of(self, invoice_id: str) -> dict:
        payment = self._default_payment(invoice_id)
        return self.store["payment_intent"][payment["payment"]["payment_intent"]]

    def charges_of(self, invoice_id: str) -> list[dict]:
        pi = self.payment_intent_of(invoice_id)["id"]
        return [c for c in self.store["charge"].values() if c["payment_intent"] == pi]

    def subscription_of(self, invoice_id: str) -> dict | None:
        sub = subscription_id_of(self.invoice(invoice_id))
        return self.store["subscription"].get(sub) if sub else None

    def event_types(self) -> list[str]:
        return [e["type"] for e in self.events]

    # -- the clock -------------------------------------------------------------------------------------------

    def set_now(self, at: datetime | int) -> None:
        with self.lock:
            self.now = unix(at)

    def _at(self, at: datetime | int | None) -> int:
        if at is None:
            return self.now
        t = unix(at)
        self.now = max(self.now, t)
        return t

    # -- failure injection and keys --------------------------------------------------------------------------

    def inject(self, status: int = 429, times: int = 1, route: str | None = None, took_effect: bool = False,
               should_retry: bool | None = None) -> None:
        """Answer the next `times` requests (to `route`, or any) with `status` (429 or 5xx). A 5xx to a POST with an
        Idempotency-Key is saved under the key and replayed, as Stripe does; with `took_effect` the write is done
        before the 5xx is answered. `should_retry` sends Stripe-Should-Retry with it (true: Stripe did not start
        the request, so nothing is saved under the key)."""
        with self.lock:
            self.faults.append(Fault(status, times, route, took_effect, should_retry))

    def lose_answers(self, route: str | None = None, times: int | None = 1, *, took_effect: bool = True,
                     then_unreachable: bool = False) -> None:
        """The next `times` requests (to `route`, or any; None: until calm()) get no answer: the connection closes
        once the request is read, as a dropped network does. With `took_effect` the request first did its work
        (saved under its idempotency key, so the same key replays the result): the client cannot tell which.
        `then_unreachable`: from the first lost answer on, no other request gets one either (until calm())."""
        with self.lock:
            self.faults.append(Fault(ANSWER_LOST if took_effect else NO_ANSWER, times, route,
                                     then_unreachable=then_unreachable))

    def storm(self, status: int = 429, route: str | None = None) -> None:
        """Answer every request with `status` until calm()."""
        with self.lock:
            self.faults.append(Fault(status, None, route))

    def fail_share(self, share: float, rng: random.Random) -> None:
        """Answer each request with probability `share` with a 429 or a 500, drawn from `rng` (repeatable: the
        client sends one request at a time), until calm(). Faults land wherever requests go, writes included."""
        with self.lock:
            self.flaky = (share, rng)

    def slow(self, route: str, seconds: float) -> None:
        """Answer requests to `route` only after `seconds` (a slow Stripe: ticks overlap, crashes land mid-call)."""
        self.latency[route] = seconds

    def calm(self) -> None:
        with self.lock:
            self.faults.clear()
            self.flaky = None

    def deny(self, key: str, permission: str) -> None:
        """Make `key` a restricted key without `permission` ("invoice_write", "event_read", ...)."""
        self.denied[key].add(permission)

    def reject_key(self, key: str) -> None:
        self.rejected_keys.add(key)

    # -- ids and storage -------------------------------------------------------------------------------------

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_1Fk{self._counter:09d}dunctl"

    def _put(self, kind: str, obj: dict) -> dict:
        self.store[kind][obj["id"]] = obj
        self.seq[obj["id"]] = self._counter
        self._counter += 1
        return obj

    def _kind_of(self, obj_id: str) -> str | None:
        prefix = obj_id.split("_", 1)[0]
        return {"cus": "customer", "pm": "payment_method", "sub": "subscription", "pi": "payment_intent",
                "ch": "charge", "in": "invoice", "inpay": "invoice_payment", "dp": "dispute", "evt": "event",
                "price": "price", "card": "payment_method", "ba": "payment_method", "mandate": "mandate",
                "si": "subscription_item"}.get(prefix)

    def _lookup(self, obj_id: str) -> dict | None:
        kind = self._kind_of(obj_id)
        if kind == "event":
            return next((e for e in self.events if e["id"] == obj_id), None)
        if kind == "subscription_item":
            return next((i for sub in self.store["subscription"].values() for i in sub["items"]["data"]
                         if i["id"] == obj_id), None)
        return self.store[kind].get(obj_id) if kind else None

    # -- events ----------------------------------------------------------------------------------------------

    def emit(self, type_: str, obj: dict, at: int | None = None, previous_attributes: dict | None = None,
             request: tuple[str | None, str | None] = (None, None)) -> dict:
        """Record an event about `obj` (a snapshot of it as it is now)."""
        event = template("event")
        snapshot = clone(obj)
        self._truncate(snapshot)
        api_version = API_VERSION
        if self.old_shape_events and obj.get("object") == "invoice":
            snapshot = self._old_shape(snapshot)
            api_version = OLD_API_VERSION
        event.update({"id": self._id("evt"), "created": self.now if at is None else at, "type": type_,
                      "api_version": api_version, "livemode": False,
                      "data": {"object": snapshot, **({"previous_attributes": previous_attributes}
                                                      if previous_attributes else {})},
                      "request": {"id": request[0], "idempotency_key": request[1]}})
        self.events.append(event)
        return event

    def _old_shape(self, invoice: dict) -> dict:
        """The invoice as API versions before 2025 showed it: payment_intent, charge and subscription on top."""
        payment = self._default_payment(invoice["id"]) if invoice.get("id") else None
        pi = self.store["payment_intent"].get(payment["payment"]["payment_intent"]) if payment else None
        invoice["payment_intent"] = pi["id"] if pi else None
        invoice["charge"] = pi["latest_charge"] if pi else None
        details = (invoice.get("parent") or {}).get("subscription_details") or {}
        invoice["subscription"] = details.get("subscription")
        invoice.pop("parent", None)
        return invoice

    def _prune(self) -> None:
        horizon = self.now - RETENTION
        if self.events and self.events[0]["created"] < horizon:
            self.events = [e for e in self.events if e["created"] >= horizon]

    # -- scripting: customers, payment methods, subscriptions -----------------------------------------------

    def add_customer(self, email: str | None = "a@example.com", *, name: str | None = "Ada Lovelace",
                     phone: str | None = None, metadata: dict | None = None,
                     preferred_locales: list[str] | None = None, at: datetime | None = None) -> str:
        with self.lock:
            c = template("customer")
            c.update({"id": self._id("cus"), "email": email, "name": name, "phone": phone,
                      "metadata": dict(metadata or {}), "preferred_locales": list(preferred_locales or []),
                      "created": self._at(at), "discount": None, "invoice_prefix": f"F{self._counter:06d}"})
            c["invoice_settings"]["default_payment_method"] = None
            self._put("customer", c)
            return c["id"]

    def add_payment_method(self, customer: str, type: str = "card", *, brand: str = "visa", last4: str = "4242",
                           exp_month: int = 12, exp_year: int = 2030, default: bool = True,
                           at: datetime | None = None) -> str:
        with self.lock:
            pm = template("payment_method")
            pm.update({"id": self._id("pm"), "customer": customer, "type": type, "created": self._at(at),
                       "metadata": {}})
            if type == "card":
                pm["card"].update({"brand": brand, "display_brand": brand, "last4": last4,
                                   "exp_month": exp_month, "exp_year": exp_year})
            else:
                del pm["card"]
                if type == "us_bank_account":
                    pm[type] = {"account_holder_type": "company", "account_type": "checking",
                                "bank_name": "STRIPE TEST BANK", "fingerprint": "FkBank", "last4": last4,
                                "routing_number": "110000000", "networks": {"preferred": "ach",
                                                                            "supported": ["ach"]}}
                else:
                    pm[type] = {"bank_code": "37040044", "country": "DE", "fingerprint": "FkSepa",
                                "last4": last4, "branch_code": None, "generated_from": None}
            self._put("payment_method", pm)
            if type in BANK_TYPES:
                mandate = template("mandate")
                mandate.update({"id": self._id("mandate"), "payment_method": pm["id"], "status": "active",
                                "livemode": False, "payment_method_details": {"type": type, type: {}}})
                mandate["customer_acceptance"]["accepted_at"] = pm["created"]
                if type == "sepa_debit":
                    mandate["payment_method_details"][type] = {"reference": f"FK{self._counter:08d}",
                                                               "url": "https://stripe.fake/mandate"}
                self._put("mandate", mandate)
                self._mandate_of[pm["id"]] = mandate["id"]
            if default:
                self.store["customer"][customer]["invoice_settings"]["default_payment_method"] = pm["id"]
            self.emit("payment_method.attached", pm, pm["created"])
            return pm["id"]

    def add_subscription(self, customer: str, *, amount: int = 2000, currency: str = "usd", metered: bool = False,
                         metadata: dict | None = None, status: str = "active", at: datetime | None = None,
                         default_payment_method: str | None = None) -> str:
        """A subscription with a licensed price, plus a metered (usage-based) price when `metered`; with its own
        `default_payment_method` as Checkout makes them."""
        with self.lock:
            t = self._at(at)
            sub = template("subscription")
            sub_id = self._id("sub")
            items = []
            for usage_type, unit_amount in [("licensed", amount)] + ([("metered", 1)] if metered else []):
                item = clone(template("subscription")["items"]["data"][0])
                price = item["price"]
                price.update({"id": self._id("price"), "currency": currency, "unit_amount": unit_amount,
                              "unit_amount_decimal": str(unit_amount), "created": t, "transform_quantity": None})
                price["recurring"].update({"usage_type": usage_type,
                                           "meter": self._id("mtr") if usage_type == "metered" else None})
                item.update({"id": self._id("si"), "created": t, "subscription": sub_id, "quantity":
                             1 if usage_type == "licensed" else None, "current_period_start": t,
                             "current_period_end": t + 30 * 86400, "billing_thresholds": None})
                item["plan"].update({"id": price["id"], "amount": unit_amount, "currency": currency,
                                     "usage_type": usage_type, "interval_count": 1, "billing_scheme": "per_unit",
                                     "transform_usage": None, "meter": price["recurring"]["meter"]})
                items.append(item)
            sub.update({"id": sub_id, "customer": customer, "status": status, "metadata": dict(metadata or {}),
                        "created": t, "start_date": t, "billing_cycle_anchor": t, "currency": currency,
                        "cancel_at": None, "canceled_at": None, "ended_at": None, "trial_end": None,
                        "trial_start": None, "pause_collection": None, "cancel_at_period_end": False,
                        "pending_update": None, "transfer_data": None, "billing_schedules": [],
                        "next_pending_invoice_item_invoice": None, "pending_invoice_item_interval": None,
                        "default_payment_method": default_payment_method})
            sub["items"] = {"object": "list", "data": items, "has_more": False,
                            "url": f"/v1/subscription_items?subscription={sub_id}"}
            self._put("subscription", sub)
            return sub_id

    def _set_subscription_status(self, sub_id: str | None, status: str, at: int) -> None:
        sub = self.store["subscription"].get(sub_id or "")
        if sub and sub["status"] != status and sub["status"] != "canceled":
            previous = sub["status"]
            sub["status"] = status
            self.emit("customer.subscription.updated", sub, at, {"status": previous})

    # -- scripting: invoices ---------------------------------------------------------------------------------

    def create_invoice(self, customer: str, *, amount: int | None = None, currency: str = "usd",
                       subscription: str | None = None, lines: list[dict] | None = None,
                       collection_method: str = "charge_automatically", due_date: datetime | None = None,
                       metadata: dict | None = None, at: datetime | None = None) -> str:
        """A finalized, open invoice with its payment intent, not yet attempted.

        `lines`: [{"description", "amount", "quantity", "metered"}]; by default one line per subscription item
        (metered items bill 0 unless `lines` say otherwise) or one line for `amount`."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"].get(subscription or "")
            inv_id = self._id("in")
            if lines is None:
                lines = [{"description": "1 × Pro plan (at $%.2f / month)" % ((amount or 2000) / 100),
                          "amount": amount if amount is not None else 2000, "quantity": 1, "metered": False}]
                if sub and len(sub["items"]["data"]) > 1:
                    lines.append({"description": "Usage: 0 API calls", "amount": 0, "quantity": 0,
                                  "metered": True})
            total = sum(line["amount"] for line in lines)
            line_objects = []
            for line in lines:
                lo = template("line_item")
                item = None
                if sub and line.get("subscription_item"):
                    item = next(i for i in sub["items"]["data"] if i["id"] == line["subscription_item"])
                elif sub:
                    usage = "metered" if line.get("metered") else "licensed"
                    item = next((i for i in sub["items"]["data"] if i["price"]["recurring"]["usage_type"] == usage),
                                sub["items"]["data"][0])
                lo.update({"id": self._id("il"), "invoice": inv_id, "amount": line["amount"], "currency": currency,
                           "description": line.get("description"), "quantity": line.get("quantity", 1),
                           "period": {"start": line.get("period_start", t), "end": line.get("period_end",
                                                                                             t + 30 * 86400)},
                           "subtotal": line["amount"], "discount_amounts": [], "pretax_credit_amounts": [],
                           "taxes": []})
                lo["parent"] = {"type": "subscription_item_details" if item else "invoice_item_details",
                                "invoice_item_details": None if item else {
                                    "invoice_item": self._id("ii"), "proration": False, "proration_details":
                                    {"credited_items": None}, "subscription": None},
                                "subscription_item_details": {
                                    "invoice_item": None, "proration": False,
                                    "proration_details": {"credited_items": None},
                                    "subscription": sub["id"], "subscription_item": item["id"]} if item else None}
                lo["pricing"] = {"type": "price_details", "unit_amount_decimal": str(line["amount"]),
                                 "price_details": {"price": item["price"]["id"] if item else self._id("price"),
                                                   "product": "prod_FkPro"}}
                line_objects.append(lo)
            cust = self.store["customer"][customer]
            inv = template("invoice")
            inv.update({
                "id": inv_id, "customer": customer, "currency": currency, "amount_due": total, "amount_paid": 0,
                "amount_remaining": total, "amount_overpaid": 0, "attempt_count": 0, "attempted": False,
                "auto_advance": collection_method == "charge_automatically",
                "billing_reason": "subscription_cycle" if sub else "manual", "collection_method": collection_method,
                "created": t, "customer_email": cust["email"], "customer_name": cust["name"],
                "customer_phone": cust["phone"], "due_date": unix(due_date) if due_date else None,
                "effective_at": t, "from_invoice": None, "last_finalization_error": None,
                "hosted_invoice_url": f"https://invoice.stripe.fake/i/{ACCOUNT}/{inv_id}",
                "invoice_pdf": f"https://pay.stripe.fake/invoice/{inv_id}/pdf",
                "metadata": dict(metadata or {}),
                "next_payment_attempt": t if collection_method == "charge_automatically" else None,
                "number": f"{cust['invoice_prefix']}-{len(self.store['invoice']) + 1:04d}",
                "period_start": t - 30 * 86400, "period_end": t, "status": "open", "subtotal": total,
                "subtotal_excluding_tax": total, "total": total, "total_excluding_tax": total,
                "webhooks_delivered_at": t, "shipping_cost": None, "livemode": False,
                "status_transitions": {"finalized_at": t, "marked_uncollectible_at": None, "paid_at": None,
                                       "voided_at": None},
                "parent": {"type": "subscription_details", "quote_details": None,
                           "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]}}
                if sub else None,
            })
            # fixtures3.json still lists a top-level `subscription: null` on invoices; API versions since
            # 2025-03-31.basil have none (stripe-python 16's Invoice has no such field): the parent says it.
            inv.pop("subscription", None)
            inv["lines"] = {"object": "list", "data": line_objects, "has_more": False,
                            "url": f"/v1/invoices/{inv_id}/lines"}
            self._put("invoice", inv)
            pm = cust["invoice_settings"]["default_payment_method"]
            pi = template("payment_intent")
            pi.update({"id": self._id("pi"), "amount": total, "currency": currency, "customer": customer,
                       "created": t, "status": "requires_payment_method" if not pm else "requires_confirmation",
                       "last_payment_error": None, "latest_charge": None, "payment_method": pm,
                       "description": f"Invoice {inv['number']}", "canceled_at": None, "next_action": None,
                       "transfer_data": None, "processing": None, "payment_method_configuration_details": None,
                       "automatic_payment_methods": None, "setup_future_usage": "off_session",
                       "payment_method_types": [self.store["payment_method"][pm]["type"]] if pm else ["card"]})
            pi["client_secret"] = f"{pi['id']}_secret_fake"
            self._put("payment_intent", pi)
            payment = template("invoice_payment")
            payment.update({"id": self._id("inpay"), "invoice": inv_id, "amount_requested": total,
                            "amount_paid": None, "currency": currency, "created": t, "is_default": True,
                            "livemode": False, "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                            "status": "open", "status_transitions": {"canceled_at": None, "paid_at": None}})
            self._put("invoice_payment", payment)
            self._payment_of_invoice[inv_id] = payment["id"]
            self.emit("invoice.created", inv, t)
            self.emit("invoice.finalized", inv, t)
            return inv_id

    def fail_invoice(self, customer: str | None = None, *, amount: int = 2000, currency: str = "usd",
                     decline_code: str | None = "insufficient_funds", payment_method_type: str = "card",
                     email: str | None = "a@example.com", subscription: str | None = None, metered: bool = False,
                     lines: list[dict] | None = None, at: datetime | None = None, **codes) -> str:
        """An invoice whose first automatic attempt failed. Creates a customer, payment method and subscription
        when no customer is given. `codes`: code, advice_code, network_advice_code, network_decline_code,
        outcome_reason, failure_code (bank debits: the return code; `decline_code` is used when absent),
        requires_action, message."""
        with self.lock:
            t = self._at(at)
            if customer is None:
                customer = self.add_customer(email, at=t)
                self.add_payment_method(customer, payment_method_type, at=t)
                subscription = self.add_subscription(customer, amount=amount, currency=currency, metered=metered,
                                                     at=t)
            inv_id = self.create_invoice(customer, amount=amount, currency=currency, subscription=subscription,
                                         lines=lines, at=t)
            self.attempt(inv_id, False, at=t, decline=_decline(decline_code, **codes))
            return inv_id

    def attempt(self, invoice_id: str, succeeds: bool, *, at: datetime | int | None = None,
                decline: dict | None = None, decline_code: str | None = None, payment_method: str | None = None,
                automatic: bool = True, request: tuple[str | None, str | None] = (None, None), **codes) -> dict:
        """One payment attempt on the invoice: Stripe's automatic collection or Smart Retries (`automatic`), or
        a manual one (invoices.pay, the hosted page). As on Stripe, `attempt_count` counts the first attempt and
        then only automatic ones. Returns the payment intent."""
        with self.lock:
            t = self._at(at)
            inv = self.store["invoice"][invoice_id]
            pi = self.payment_intent_of(invoice_id)
            payment = self._default_payment(invoice_id)
            pm_id = payment_method or pi["payment_method"] or \
                self.store["customer"][inv["customer"]]["invoice_settings"]["default_payment_method"]
            pm = self.store["payment_method"].get(pm_id or "")
            pm_type = pm["type"] if pm else "card"
            if decline is None and not succeeds:
                decline = _decline(decline_code or "generic_decline", **codes)
            charge = template("charge")
            charge.update({"id": self._id("ch"), "amount": inv["amount_remaining"], "currency": inv["currency"],
                           "created": t, "customer": inv["customer"], "payment_intent": pi["id"],
                           "payment_method": pm_id, "description": pi["description"], "captured": succeeds,
                           "amount_captured": inv["amount_remaining"] if succeeds else 0, "paid": succeeds,
                           "status": "succeeded" if succeeds else "failed", "source": None,
                           "balance_transaction": self._id("txn") if succeeds else None,
                           "receipt_url": None, "transfer_data": None, "refunds": {
                               "object": "list", "data": [], "has_more": False, "url": "/v1/refunds"}})
            details = {"type": pm_type}
            if pm and pm_type == "card":
                card = clone(template("charge")["payment_method_details"]["card"])
                card.update({k: pm["card"][k] for k in ("brand", "last4", "exp_month", "exp_year")})
                details["card"] = card
            elif pm:
                details[pm_type] = self._bank_charge_details(pm, t)
            charge["payment_method_details"] = details
            pi["payment_method"] = pm_id
            pi["latest_charge"] = charge["id"]
            pi["payment_method_types"] = [pm_type]
            if succeeds:
                charge["outcome"] = {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                                     "network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                                     "seller_message": "Payment complete.", "type": "authorized"}
                self._put("charge", charge)
                pi.update({"status": "succeeded", "amount_received": pi["amount"], "last_payment_error": None})
                self.emit("charge.succeeded", charge, t)
                self.emit("payment_intent.succeeded", pi, t)
                self._mark_paid(inv, payment, t, counts=automatic or inv["attempt_count"] == 0, request=request)
                return pi
            bank = pm_type in BANK_TYPES
            requires_action = decline["requires_action"] and not bank
            if bank:
                given = decline["failure_code"] or decline["decline_code"] or "insufficient_funds"
                # Stripe normalises the bank's return code (R01, AC04) into charge.failure_code and keeps the
                # raw one as the network's decline code.
                failure_code = BANK_NORMALISED.get(given, given)
                raw = decline["network_decline_code"] or (given if given in BANK_NORMALISED else None)
                code, decline_code = "payment_intent_payment_attempt_failed", None
                message = decline["message"] or f"The payment failed: the bank returned it ({failure_code})."
                charge.update({"failure_code": failure_code, "failure_message": message})
                charge["outcome"] = {"advice_code": None, "network_advice_code": None, "network_decline_code": raw,
                                     "network_status": "declined_by_network", "reason": None,
                                     "risk_level": "not_assessed", "seller_message": message, "type": "issuer_declined"}
                error_type = "invalid_request_error"
            else:
                decline_code = decline["decline_code"]
                code = decline["code"] or ("authentication_required" if requires_action else
                                           decline_code if decline_code in _OWN_CODE else "card_declined")
                message = decline["message"] or {
                    "authentication_required": "Your card was declined. This transaction requires authentication.",
                    "expired_card": "Your card has expired.",
                    "insufficient_funds": "Your card has insufficient funds."}.get(decline_code or "",
                                                                                   "Your card was declined.")
                charge.update({"failure_code": code, "failure_message": message})
                charge["outcome"] = {"advice_code": decline["advice_code"],
                                     "network_advice_code": decline["network_advice_code"],
                                     "network_decline_code": decline["network_decline_code"],
                                     "network_status": "declined_by_network", "reason": decline["outcome_reason"]
                                     or decline_code, "risk_level": "normal", "seller_message":
                                     "The bank did not return any further details with this decline.",
                                     "type": "issuer_declined"}
                error_type = "card_error"
            self._put("charge", charge)
            pi["status"] = "requires_action" if requires_action else "requires_payment_method"
            pi["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {}} if requires_action else None
            pi["last_payment_error"] = {
                "type": error_type, "code": code, "decline_code": decline_code,
                "advice_code": None if bank else decline["advice_code"],
                "network_advice_code": None if bank else decline["network_advice_code"],
                "network_decline_code": None if bank else decline["network_decline_code"],
                "message": message, "charge": charge["id"], "doc_url": f"https://stripe.com/docs/error-codes/{code}",
                "payment_method": clone(pm) if pm else None, "payment_method_type": pm_type}
            if automatic or inv["attempt_count"] == 0:
                inv["attempt_count"] += 1
            inv["attempted"] = True
            inv["next_payment_attempt"] = t + 3 * 86400 if inv["auto_advance"] else None
            self.emit("charge.failed", charge, t)
            self.emit("payment_intent.payment_failed", pi, t)
            if requires_action:
                self.emit("invoice.payment_action_required", inv, t, request=request)
            self.emit("invoice.payment_failed", inv, t, request=request)
            self._set_subscription_status(subscription_id_of(inv), "past_due", t)
            return pi

    def _bank_charge_details(self, pm: dict, t: int) -> dict:
        """payment_method_details.<bank type> of a charge: the debit's own fields, not the payment method's."""
        kind, source = pm["type"], pm[pm["type"]]
        debit_date = datetime.fromtimestamp(t + 3 * 86400, timezone.utc).strftime("%Y-%m-%d")
        if kind == "us_bank_account":
            return {"account_holder_type": source.get("account_holder_type"),
                    "account_type": source.get("account_type"), "bank_name": source.get("bank_name"),
                    "expected_debit_date": debit_date, "fingerprint": source.get("fingerprint"),
                    "last4": source.get("last4"), "mandate": self._mandate_of.get(pm["id"]),
                    "payment_reference": None, "routing_number": source.get("routing_number")}
        return {"bank_code": source.get("bank_code"), "branch_code": source.get("branch_code"),
                "country": source.get("country"), "expected_debit_date": debit_date,
                "fingerprint": source.get("fingerprint"), "last4": source.get("last4"),
                "mandate": self._mandate_of.get(pm["id"])}

    def _default_payment(self, invoice_id: str) -> dict:
        return self.store["invoice_payment"][self._payment_of_invoice[invoice_id]]

    def _mark_paid(self, inv: dict, payment: dict, t: int, *, counts: bool, out_of_band: bool = False,
                   request: tuple[str | None, str | None] = (None, None)) -> None:
        previous = {"status": inv["status"], "amount_paid": inv["amount_paid"]}
        inv.update({"status": "paid", "amount_paid": inv["amount_due"], "amount_remaining": 0,
                    "next_payment_attempt": None, "attempted": True})
        if counts:
            previous["attempt_count"] = inv["attempt_count"]      # as Stripe: every changed field is listed
            inv["attempt_count"] += 1
        inv["status_transitions"]["paid_at"] = t
        payment.update({"status": "paid", "amount_paid": inv["amount_due"]})
        payment["status_transitions"]["paid_at"] = t
        self.emit("invoice.paid", inv, t, previous, request=request)
        if not out_of_band:     # as Stripe: a successful payment attempt, not a payment recorded by hand
            self.emit("invoice.payment_succeeded", inv, t, request=request)
        self._set_subscription_status(subscription_id_of(inv), "active", t)

    def customer_pays(self, invoice_id: str, at: datetime | None = None, *, out_of_band: bool = False) -> None:
        """The customer pays (on the hosted page, or out of band: a wire the finance team records)."""
        with self.lock:
            if out_of_band:
                self._mark_paid(self.invoice(invoice_id), self._default_payment(invoice_id), self._at(at),
                                counts=False, out_of_band=True)
            else:
                self.attempt(invoice_id, True, at=at, automatic=False)

    def retry(self, invoice_id: str, succeeds: bool, at: datetime | None = None, **decline) -> None:
        """Stripe's Smart Retries try again."""
        self.attempt(invoice_id, succeeds, at=at, decline=_decline(**decline) if decline and not succeeds else None)

    def next_payment_succeeds(self, invoice_id: str, succeeds: bool = True, decline_code: str | None = None,
                              **codes) -> None:
        """Script the outcome of the next invoices.pay on this invoice."""
        with self.lock:
            self.outcomes[invoice_id].append(Outcome(succeeds, None if succeeds else
                                                     _decline(decline_code or "generic_decline", **codes)))

    def void(self, invoice_id: str, at: datetime | None = None) -> None:
        with self.lock:
            t = self._at(at)
            self._void(self.invoice(invoice_id), t)

    def _void(self, inv: dict, t: int, request=(None, None)) -> None:
        inv.update({"status": "void", "next_payment_attempt": None, "amount_remaining": 0})
        inv["status_transitions"]["voided_at"] = t
        payment = self._default_payment(inv["id"])
        payment["status"] = "canceled"
        payment["status_transitions"]["canceled_at"] = t
        self.store["payment_intent"][payment["payment"]["payment_intent"]].update(
            {"status": "canceled", "canceled_at": t, "cancellation_reason": "void_invoice"})
        self.emit("invoice.voided", inv, t, {"status": "open"}, request=request)

    def mark_uncollectible(self, invoice_id: str, at: datetime | None = None) -> None:
        with self.lock:
            self._uncollectible(self.invoice(invoice_id), self._at(at))

    def _uncollectible(self, inv: dict, t: int, request=(None, None)) -> None:
        inv.update({"status": "uncollectible", "next_payment_attempt": None})
        inv["status_transitions"]["marked_uncollectible_at"] = t
        self.emit("invoice.marked_uncollectible", inv, t, {"status": "open"}, request=request)

    def dispute(self, invoice_id: str, at: datetime | None = None, *, reason: str = "fraudulent",
                with_payment_intent: bool = True) -> str:
        """The cardholder disputes the paid invoice's charge. As on Stripe, only a captured charge can be
        disputed, so the invoice is paid. `with_payment_intent=False` leaves the dispute's payment_intent empty,
        as on disputes of charges made without one."""
        with self.lock:
            t = self._at(at)
            if self.invoice(invoice_id)["status"] != "paid":
                raise ValueError(f"{invoice_id} is {self.invoice(invoice_id)['status']}: Stripe disputes only "
                                 "captured charges, so only a paid invoice's payment can be disputed")
            pi = self.payment_intent_of(invoice_id)
            charge = self.store["charge"][pi["latest_charge"]]
            if not charge.get("captured"):
                raise ValueError(f"charge {charge['id']} was not captured: it cannot be disputed")
            charge["disputed"] = True
            d = template("dispute")
            d.update({"id": self._id("dp"), "charge": charge["id"], "amount": charge["amount"],
                      "currency": charge["currency"], "created": t, "reason": reason,
                      "payment_intent": pi["id"] if with_payment_intent else None,
                      "status": "needs_response"})
            # Stripe gives the merchant about a week or more to answer with evidence.
            d["evidence_details"] = {**d["evidence_details"], "due_by": t + 9 * 86400}
            self._put("dispute", d)
            self.emit("charge.dispute.created", d, t)
            return d["id"]

    def charged_method(self, invoice_id: str) -> str | None:
        """The payment method invoices.pay without `payment_method` charges, in Stripe's order: the invoice's
        default, else its subscription's, else the customer's invoice_settings.default_payment_method."""
        inv = self.invoice(invoice_id)
        sub = self.store["subscription"].get(subscription_id_of(inv) or "") or {}
        return inv.get("default_payment_method") or sub.get("default_payment_method") or \
            self.store["customer"][inv["customer"]]["invoice_settings"]["default_payment_method"]

    def edit_payment_method(self, payment_method: str, *, at: datetime | None = None, metadata: dict | None = None,
                            phone: str | None = None, exp_month: int | None = None,
                            exp_year: int | None = None) -> None:
        """An update of a payment method (payment_method.updated): its metadata or billing details, or, on a
        card, its expiry (what an API update may change)."""
        with self.lock:
            t = self._at(at)
            pm = self.store["payment_method"][payment_method]
            previous: dict = {}
            if metadata is not None:
                previous["metadata"] = dict(pm.get("metadata") or {})
                pm["metadata"] = {**(pm.get("metadata") or {}), **metadata}
            if phone is not None:
                previous["billing_details"] = clone(pm["billing_details"])
                pm["billing_details"]["phone"] = phone
            card = {k: v for k, v in (("exp_month", exp_month), ("exp_year", exp_year)) if v is not None}
            if card:
                previous["card"] = {k: pm["card"][k] for k in card}
                pm["card"].update(card)
            self.emit("payment_method.updated", pm, t, previous)

    def set_default_payment_method(self, obj: str, payment_method: str | None, *,
                                   at: datetime | None = None) -> None:
        """A default payment method of the invoice or subscription itself (a Checkout-made subscription keeps
        its own), which Stripe charges before the customer's default."""
        with self.lock:
            t = self._at(at)
            kind = "invoice" if obj.startswith("in_") else "subscription"
            target = self.store[kind][obj]
            previous = {"default_payment_method": target.get("default_payment_method")}
            target["default_payment_method"] = payment_method
            self.emit(f"{'invoice' if kind == 'invoice' else 'customer.subscription'}.updated", target, t, previous)

    def replace_default_payment_method(self, customer: str, type: str = "card", *, at: datetime | None = None,
                                       **card) -> str:
        """The customer saves a new default payment method (customer.updated with previous_attributes)."""
        with self.lock:
            t = self._at(at)
            c = self.store["customer"][customer]
            old = c["invoice_settings"]["default_payment_method"]
            pm = self.add_payment_method(customer, type, at=t, **card)
            self.emit("customer.updated", c, t, {"invoice_settings": {"default_payment_method": old}})
            return pm

    def card_automatically_updated(self, payment_method: str, *, exp_year: int = 2031, last4: str | None = None,
                                   at: datetime | None = None) -> None:
        """The card network's updater replaced the card's details."""
        with self.lock:
            t = self._at(at)
            pm = self.store["payment_method"][payment_method]
            previous = {"card": {"exp_year": pm["card"]["exp_year"], "last4": pm["card"]["last4"]}}
            pm["card"]["exp_year"] = exp_year
            if last4:
                pm["card"]["last4"] = last4
            self.emit("payment_method.automatically_updated", pm, t, previous)

    def card_expiring(self, customer: str, at: datetime | None = None) -> None:
        with self.lock:
            t = self._at(at)
            pm = self.store["payment_method"][self.store["customer"][customer]["invoice_settings"]
                                              ["default_payment_method"]]
            card = {"id": self._id("card"), "object": "card", "customer": customer, "brand": "Visa",
                    "last4": pm["card"]["last4"], "exp_month": pm["card"]["exp_month"],
                    "exp_year": pm["card"]["exp_year"], "funding": "credit", "country": "US"}
            self.emit("customer.source.expiring", card, t)

    def invoice_upcoming(self, subscription: str, at: datetime | None = None) -> None:
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            amount = sum(i["price"]["unit_amount"] for i in sub["items"]["data"]
                         if i["price"]["recurring"]["usage_type"] == "licensed")
            inv = template("invoice")
            inv.update({"id": None, "customer": sub["customer"], "amount_due": amount, "amount_remaining": amount,
                        "currency": sub["currency"], "status": "draft", "created": t,
                        "next_payment_attempt": t + 3 * 86400, "billing_reason": "upcoming"})
            inv["parent"] = {"type": "subscription_details", "quote_details": None,
                             "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]}}
            self.emit("invoice.upcoming", inv, t)

    def touch_invoice(self, invoice_id: str, at: datetime | None = None, **metadata) -> None:
        """An unrelated change (invoice.updated), e.g. someone edits metadata in the Dashboard."""
        with self.lock:
            inv = self.invoice(invoice_id)
            previous = {"metadata": dict(inv["metadata"])}
            inv["metadata"].update(metadata)
            self.emit("invoice.updated", inv, self._at(at), previous)

    def pay_part(self, invoice_id: str, amount: int, at: datetime | None = None) -> None:
        """The customer pays part of a net-terms invoice (a partial payment on the hosted page, or a payment
        recorded against it): it stays open for the rest (invoice.updated)."""
        with self.lock:
            inv, t = self.invoice(invoice_id), self._at(at)
            previous = {"amount_paid": inv["amount_paid"], "amount_remaining": inv["amount_remaining"]}
            inv["amount_paid"] += amount
            inv["amount_remaining"] -= amount
            # as Stripe: each payment of the invoice is an invoice payment of its own, paid at its time
            pi = template("payment_intent")
            pi.update({"id": self._id("pi"), "amount": amount, "amount_received": amount, "currency": inv["currency"],
                       "customer": inv["customer"], "created": t, "status": "succeeded", "last_payment_error": None,
                       "latest_charge": None})
            self._put("payment_intent", pi)
            payment = template("invoice_payment")
            payment.update({"id": self._id("inpay"), "invoice": invoice_id, "amount_requested": amount,
                            "amount_paid": amount, "currency": inv["currency"], "created": t, "is_default": False,
                            "livemode": False, "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                            "status": "paid", "status_transitions": {"canceled_at": None, "paid_at": t}})
            self._put("invoice_payment", payment)
            self.emit("invoice.updated", inv, t, previous)

    def credit(self, invoice_id: str, amount: int, at: datetime | None = None) -> None:
        """A credit note on an open invoice: Stripe lowers what is due (invoice.updated)."""
        with self.lock:
            inv = self.invoice(invoice_id)
            previous = {"amount_due": inv["amount_due"], "amount_remaining": inv["amount_remaining"],
                        "pre_payment_credit_notes_amount": inv.get("pre_payment_credit_notes_amount", 0)}
            inv["amount_due"] -= amount
            inv["amount_remaining"] -= amount
            inv["pre_payment_credit_notes_amount"] = previous["pre_payment_credit_notes_amount"] + amount
            self.emit("invoice.updated", inv, self._at(at), previous)

    def move_due_date(self, invoice_id: str, due_date: datetime, at: datetime | None = None) -> None:
        """Someone gives the customer more (or less) time in the Dashboard (invoice.updated)."""
        with self.lock:
            inv = self.invoice(invoice_id)
            previous = {"due_date": inv["due_date"]}
            inv["due_date"] = unix(due_date)
            self.emit("invoice.updated", inv, self._at(at), previous)

    def uncounted_attempt(self, invoice_id: str, at: datetime | None = None) -> None:
        """Stripe's retry schedule moves on (attempt_count + 1) without charging: after a decline it will not
        retry, the scheduled attempt is skipped but still counted."""
        with self.lock:
            inv = self.invoice(invoice_id)
            previous = {"attempt_count": inv["attempt_count"]}
            inv["attempt_count"] += 1
            self.emit("invoice.updated", inv, self._at(at), previous)

    # -- scripting: the customer's lifecycle outside dunctl --------------------------------------------------

    def cancel_subscription(self, subscription: str, at: datetime | None = None, *,
                            reason: str = "cancellation_requested", comment: str | None = None) -> None:
        """The customer (or someone on the Dashboard) cancels the subscription now."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            sub.update({"status": "canceled", "canceled_at": t, "ended_at": t})
            sub["cancellation_details"] = {"comment": comment, "feedback": None, "reason": reason}
            self.emit("customer.subscription.deleted", sub, t)

    def schedule_cancellation(self, subscription: str, at: datetime | None = None, *, undo: bool = False) -> None:
        """The customer cancels at the end of the period (or takes that back: `undo`)."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            previous = {"cancel_at_period_end": sub["cancel_at_period_end"], "cancel_at": sub["cancel_at"]}
            end = sub["items"]["data"][0]["current_period_end"]
            sub.update({"cancel_at_period_end": not undo, "cancel_at": None if undo else end,
                        "canceled_at": None if undo else t})
            sub["cancellation_details"] = {"comment": None, "feedback": None,
                                           "reason": None if undo else "cancellation_requested"}
            self.emit("customer.subscription.updated", sub, t, previous)

    def pause_collection(self, subscription: str, behavior: str | None = "void", at: datetime | None = None,
                         resumes_at: datetime | None = None) -> None:
        """Someone pauses (or, with behavior None, resumes) collection on the Dashboard."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            previous = {"pause_collection": sub["pause_collection"]}
            sub["pause_collection"] = None if behavior is None else {
                "behavior": behavior, "resumes_at": unix(resumes_at) if resumes_at else None}
            self.emit("customer.subscription.updated", sub, t, previous)

    def pause_subscription(self, subscription: str, at: datetime | None = None) -> None:
        """The subscription itself pauses (status paused: a trial ended without a payment method)."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            previous = {"status": sub["status"]}
            sub["status"] = "paused"
            self.emit("customer.subscription.paused", sub, t)
            self.emit("customer.subscription.updated", sub, t, previous)

    def stripe_pauses_for_failure(self, subscription: str, reason: str = "final_payment_failure",
                                  at: datetime | None = None) -> None:
        """Stripe's own failed-payment settings pause the subscription (no request: Stripe did it), with
        status_details.paused saying why."""
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            previous = {"status": sub["status"], "status_details": sub.get("status_details")}
            sub["status"] = "paused"
            sub["status_details"] = {"paused": {"type": "subscription", "transitioned_at": t,
                                                "subscription": {"type": reason}}}
            self.emit("customer.subscription.paused", sub, t)
            self.emit("customer.subscription.updated", sub, t, previous)

    def resume_subscription(self, subscription: str, at: datetime | None = None) -> None:
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            previous = {"status": sub["status"]}
            sub["status"] = "active"
            self.emit("customer.subscription.resumed", sub, t)
            self.emit("customer.subscription.updated", sub, t, previous)

    def close_dispute(self, dispute: str, status: str = "lost", at: datetime | None = None) -> None:
        """The card network decides the dispute: won (the money stays) or lost (it goes back)."""
        with self.lock:
            t = self._at(at)
            d = self.store["dispute"][dispute]
            d["status"] = status
            self.emit("charge.dispute.closed", d, t, {"status": "needs_response"})

    def mandate_inactive(self, payment_method: str, at: datetime | None = None) -> str:
        """The customer's bank revokes the bank-debit mandate."""
        with self.lock:
            t = self._at(at)
            mandate = self.store["mandate"][self._mandate_of[payment_method]]
            mandate["status"] = "inactive"
            self.emit("mandate.updated", mandate, t, {"status": "active"})
            return mandate["id"]

    # -- the HTTP API ----------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict, key: str | None, idempotency_key: str | None,
               account: str | None = None) -> tuple[int, dict, dict]:
        """One API request -> (status, body, extra headers)."""
        delay = self.latency.get(self._route(method, path)[0]) if self.latency else None
        if delay:
            time.sleep(delay)
        with self.lock:
            route, handler, permission, match = self._route(method, path)
            self.counts[route] += 1
            self.account_headers.append(account)
            if key is None or not re.match(r"^(sk|rk)_(test|live)_", key) or key in self.rejected_keys:
                masked = (key or "")[:8] + "*" * 8 + (key or "")[-4:]
                raise ApiError(401, "invalid_request_error", f"Invalid API Key provided: {masked}")
            fault = self._take_fault(route)
            if fault is not None and fault.status in (ANSWER_LOST, NO_ANSWER):
                if fault.then_unreachable:
                    fault.then_unreachable = False
                    self.faults.append(Fault(NO_ANSWER, None, None))
                if fault.status == ANSWER_LOST:
                    try:
                        self._answer(method, path, params, key, idempotency_key, account, route, None)
                    except ApiError:
                        pass
                raise AnswerLost()
            return self._answer(method, path, params, key, idempotency_key, account, route, fault)

    def _answer(self, method: str, path: str, params: dict, key: str, idempotency_key: str | None,
                account: str | None, route: str, fault: Fault | None) -> tuple[int, dict, dict]:
        """handle()'s answer to an authenticated request, `fault` the injected one that answers it (or None)."""
        _, handler, permission, match = self._route(method, path)
        if fault is None and self.flaky is not None and self.flaky[1].random() < self.flaky[0]:
            fault = Fault(self.flaky[1].choice([429, 500]), 1, route)   # fail_share: a seeded share of answers
        keyed = method == "POST" and bool(idempotency_key)
        if fault is not None and (fault.status == 429 or not keyed or fault.should_retry):
            # Stripe's rate limiter runs before its idempotency layer: a 429 is never saved under the key.
            raise _fault_error(fault.status, fault.should_retry)
        if self.echo_key_in_errors:
            status = 400 if self.echo_key_in_errors is True else int(self.echo_key_in_errors)
            raise ApiError(status, "invalid_request_error" if status < 500 else "api_error",
                           f"Invalid request from key {key}: the proxy refused it (Authorization: Bearer {key})")
        if account is not None and account not in self.connected_accounts:
            raise ApiError(403, "invalid_request_error", f"The provided key '{key[:8]}{'*' * 20}{key[-4:]}' "
                           f"does not have access to account '{account}' (or that account does not exist). "
                           "Application access may have been revoked.", code="account_invalid")
        self._account = account or self.key_accounts.get(key, ACCOUNT)
        if handler is None:
            raise ApiError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")
        self._key = key
        self._check_permission(permission)
        if self.validate_params:
            self._validate(route, params)
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
            raise ApiError(400, "invalid_request_error", f"Idempotent key length is {len(idempotency_key)}, "
                           "which is outside accepted lengths. Idempotent Keys must be 1-255 characters long.")
        if keyed:
            return self._idempotent(method, path, params, key, idempotency_key, handler, match, fault)
        return 200, handler(match, params, (None, None)), {}

    def _check_permission(self, permission: str) -> None:
        """A restricted key needs the endpoint's permission, and the read permission of every object it expands
        (Stripe checks each expansion: an invoice listed with its customer needs Customers: read too)."""
        key = self._key
        if key is not None and permission in self.denied.get(key, ()):
            masked = key[:8] + "*" * 20 + key[-4:]
            raise ApiError(403, "invalid_request_error",
                           f"The provided key '{masked}' does not have the required permissions for this "
                           f"endpoint on account '{self.key_accounts.get(key, ACCOUNT)}'. Having the "
                           f"'rak_{permission}' permission would allow this request to continue.")

    def _take_fault(self, route: str) -> Fault | None:
        """The injected fault that answers this request, if any (counted down)."""
        found = None
        for fault in self.faults:
            if fault.route in (None, route) and fault.remaining != 0:
                if fault.remaining is not None:
                    fault.remaining -= 1
                found = fault
                break
        self.faults = [f for f in self.faults if f.remaining != 0]
        return found

    def _idempotent(self, method: str, path: str, params: dict, key: str, idempotency_key: str, handler, match,
                    fault: Fault | None) -> tuple[int, dict, dict]:
        """A POST under an Idempotency-Key. Stripe saves the first result once the endpoint started executing,
        a 500 included, and replays it for 24 hours; the same key with other parameters is a 400
        (https://docs.stripe.com/api/idempotent_requests)."""
        fingerprint = hashlib.sha256(json.dumps([method, path, params], sort_keys=True).encode()).hexdigest()
        saved = self._idempotency.get((key, idempotency_key))
        if saved:
            if saved[0] != fingerprint:
                raise ApiError(400, "idempotency_error",
                               "Keys for idempotent requests can only be used with the same parameters "
                               "they were first used with. Try using a key other than "
                               f"'{idempotency_key}' if you meant to execute a different request.")
            return saved[1], clone(saved[2]), {"Idempotent-Replayed": "true", **_should_retry(saved[1])}
        if fault is None or fault.took_effect:
            try:
                status, body = 200, handler(match, params, (None, idempotency_key))
            except ApiError as exc:
                if exc.status >= 500:
                    raise
                status, body = exc.status, exc.body
        if fault is not None:
            status, body = fault.status, _fault_error(fault.status).body
        self._idempotency[(key, idempotency_key)] = (fingerprint, status, clone(body))
        return status, body, _should_retry(status)

    @staticmethod
    def _validate(route: str, params: dict) -> None:
        # Before the idempotency store: Stripe saves no result for a request that failed validation
        # (https://docs.stripe.com/api/idempotent_requests).
        try:
            validate(route, params)
        except ParamError as exc:
            raise ApiError(400, "invalid_request_error", exc.message, code=exc.code, param=exc.param) from None
        except LookupError as exc:    # a route added to _ROUTES without its params type: say so, loudly
            raise ApiError(500, "api_error", f"{exc} (add it to PARAMS)") from None

    _ROUTES = [
        ("GET", r"/v1/events", "events_list", "event_read"),
        ("GET", r"/v1/events/(?P<id>[^/]+)", "retrieve", "event_read"),
        ("GET", r"/v1/invoices", "invoices_list", "invoice_read"),
        ("GET", r"/v1/invoices/(?P<id>[^/]+)", "retrieve", "invoice_read"),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)", "invoice_update", "invoice_write"),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)/pay", "invoice_pay", "invoice_write"),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)/mark_uncollectible", "invoice_uncollectible", "invoice_write"),
        ("POST", r"/v1/invoices/(?P<id>[^/]+)/void", "invoice_void", "invoice_write"),
        ("GET", r"/v1/invoice_payments", "invoice_payments_list", "invoice_read"),
        ("GET", r"/v1/payment_intents/(?P<id>[^/]+)", "retrieve", "payment_intent_read"),
        ("GET", r"/v1/charges/(?P<id>[^/]+)", "retrieve", "charge_read"),
        ("GET", r"/v1/customers/(?P<id>[^/]+)", "retrieve", "customer_read"),
        ("GET", r"/v1/payment_methods/(?P<id>[^/]+)", "retrieve", "payment_method_read"),
        ("GET", r"/v1/subscriptions/(?P<id>[^/]+)", "retrieve", "subscription_read"),
        ("POST", r"/v1/subscriptions/(?P<id>[^/]+)", "subscription_update", "subscription_write"),
        ("DELETE", r"/v1/subscriptions/(?P<id>[^/]+)", "subscription_cancel", "subscription_write"),
        ("GET", r"/v1/disputes/(?P<id>[^/]+)", "retrieve", "dispute_read"),
        ("POST", r"/v1/billing_portal/sessions", "portal_session", "billing_portal_session_write"),
        ("GET", r"/v1/account", "account", "account_read"),
        ("GET", r"/v1/mandates/(?P<id>[^/]+)", "retrieve", "mandate_read"),
        ("GET", r"/v1/invoices/(?P<id>[^/]+)/lines", "invoice_lines", "invoice_read"),
        ("GET", r"/v1/subscription_items", "subscription_items", "subscription_read"),
    ]

    def _route(self, method: str, path: str):
        for verb, pattern, name, permission in self._ROUTES:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                route = f"{verb} " + re.sub(r"\(\?P<id>\[\^/\]\+\)", ":id", pattern)
                return route, getattr(self, "_h_" + name), permission, match
        return f"{method} {path}", None, None, None

    # -- rendering -------------------------------------------------------------------------------------------

    def _render(self, obj: dict, expand: list[str] | None) -> dict:
        out = clone(obj)
        self._truncate(out)
        for path in expand or []:
            parts = path.split(".")
            if len(parts) > 4:
                raise ApiError(400, "invalid_request_error",
                               f"You cannot expand more than 4 levels of a property. Property: {path}",
                               param="expand")
            self._expand(out, parts, path)
        return out

    @staticmethod
    def _truncate(obj: dict) -> None:
        """Stripe embeds the first 10 of an invoice's lines and a subscription's items; the rest is paged
        (has_more) through /v1/invoices/:id/lines and /v1/subscription_items."""
        embedded = obj.get("lines") if obj.get("object") == "invoice" else \
            obj.get("items") if obj.get("object") == "subscription" else None
        if isinstance(embedded, dict) and len(embedded.get("data") or []) > EMBEDDED:
            embedded["data"] = embedded["data"][:EMBEDDED]
            embedded["has_more"] = True

    def _expand(self, node, parts: list[str], path: str) -> None:
        if not parts or node is None:
            return
        field, rest = parts[0], parts[1:]
        if isinstance(node, list):
            for item in node:
                self._expand(item, parts, path)
            return
        if not isinstance(node, dict) or field not in node:
            raise ApiError(400, "invalid_request_error", f"This property cannot be expanded ({path}).",
                           param="expand")
        value = node[field]
        if isinstance(value, str):
            kind = self._kind_of(value)
            if kind:
                self._check_permission(f"{EXPANDED_PERMISSION.get(kind, kind)}_read")
            target = self._lookup(value)
            if target is None:
                raise ApiError(400, "invalid_request_error", f"This property cannot be expanded ({path}).",
                               param="expand")
            value = node[field] = clone(target)
            self._truncate(value)
        self._expand(value, rest, path)

    def _list(self, items: list[dict], params: dict, url: str, universe: list[dict] | None = None) -> dict:
        """Stripe list semantics over `items` (newest first). A cursor may name an object that the filters
        leave out (an event of another type): its place in `universe` (everything, in the same order) counts."""
        limit = int(params.get("limit", 10))
        if not 1 <= limit <= 100:
            raise ApiError(400, "invalid_request_error", "This value must be between 1 and 100.", param="limit")
        order = {o["id"]: n for n, o in enumerate(universe if universe is not None else items)}
        for param in ("starting_after", "ending_before"):
            if params.get(param) and params[param] not in order:
                raise ApiError(404, "invalid_request_error", f"No such object: '{params[param]}'",
                               code="resource_missing", param=param)
        if params.get("starting_after"):
            rest = [i for i in items if order[i["id"]] > order[params["starting_after"]]]
            page, has_more = rest[:limit], len(rest) > limit
        elif params.get("ending_before"):
            newer = [i for i in items if order[i["id"]] < order[params["ending_before"]]]
            page, has_more = newer[-limit:], len(newer) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        expand = [e.removeprefix("data.") for e in params.get("expand", []) if e.startswith("data.")]
        for e in params.get("expand", []):
            if not e.startswith("data."):   # a list's own properties: the objects' are under data
                raise ApiError(400, "invalid_request_error", f"This property cannot be expanded ({e}).",
                               param="expand")
            if len(e.split(".")) > 4:
                raise ApiError(400, "invalid_request_error",
                               f"You cannot expand more than 4 levels of a property. Property: {e}",
                               param="expand")
        return {"object": "list", "url": url, "has_more": has_more,
                "data": [self._render(i, expand) for i in page]}

    def _newest_first(self, kind: str) -> list[dict]:
        return sorted(self.store[kind].values(), key=lambda o: (o["created"], self.seq[o["id"]]), reverse=True)

    def _get(self, kind: str, obj_id: str) -> dict:
        obj = self.store[kind].get(obj_id)
        if obj is None:
            raise ApiError(404, "invalid_request_error", f"No such {kind.replace('_', ' ')}: '{obj_id}'",
                           code="resource_missing", param="id")
        return obj

    # -- handlers --------------------------------------------------------------------------------------------

    def _h_retrieve(self, match, params, request):
        obj_id = match["id"]
        obj = self._lookup(obj_id)
        if obj is None:
            raise ApiError(404, "invalid_request_error", f"No such object: '{obj_id}'", code="resource_missing",
                           param="id")
        return self._render(obj, params.get("expand"))

    def _h_account(self, match, params, request):
        account = template("account")
        account.update({"id": self._account, "email": "billing@fake.test",
                        "external_accounts": {"object": "list", "data": [], "has_more": False,
                                              "url": f"/v1/accounts/{self._account}/external_accounts"}})
        return account

    def _h_invoice_lines(self, match, params, request):
        inv = self._get("invoice", match["id"])
        return self._list(inv["lines"]["data"], params, f"/v1/invoices/{inv['id']}/lines")

    def _h_subscription_items(self, match, params, request):
        sub = self._get("subscription", params.get("subscription") or "")
        return self._list(sub["items"]["data"], params, "/v1/subscription_items")

    def _h_events_list(self, match, params, request):
        self._prune()
        types = params.get("types") or ([params["type"]] if params.get("type") else None)
        if types and len(types) > 20:
            raise ApiError(400, "invalid_request_error", "You may pass at most 20 types.", param="types")
        # Newest first by `created`, as Stripe lists them (events scripted with an earlier `at=` sort back in time);
        # within one second, in the order they happened.
        universe = [e for _, e in sorted(enumerate(self.events), key=lambda pair: (pair[1]["created"], pair[0]),
                                         reverse=True)]
        items = [e for e in universe if (not types or e["type"] in types)
                 and _range_ok(e["created"], params.get("created"))]
        return self._list(items, params, "/v1/events", universe)

    def _h_invoices_list(self, match, params, request):
        items = [i for i in self._newest_first("invoice")
                 if _range_ok(i["created"], params.get("created"))
                 and (not params.get("status") or i["status"] == params["status"])
                 and (not params.get("customer") or i["customer"] == params["customer"])
                 and (not params.get("collection_method") or i["collection_method"] == params["collection_method"])
                 and (not params.get("subscription")
                      or subscription_id_of(i) == params["subscription"])]
        return self._list(items, params, "/v1/invoices")

    def _h_invoice_payments_list(self, match, params, request):
        payment = params.get("payment") or {}
        items = [p for p in self._newest_first("invoice_payment")
                 if _range_ok(p["created"], params.get("created"))
                 and (not params.get("invoice") or p["invoice"] == params["invoice"])
                 and (not params.get("status") or p["status"] == params["status"])
                 and (not payment.get("payment_intent") or p["payment"]["payment_intent"] == payment["payment_intent"])]
        return self._list(items, params, "/v1/invoice_payments")

    def _h_invoice_update(self, match, params, request):
        inv = self._get("invoice", match["id"])
        previous = {}
        if "auto_advance" in params:
            previous["auto_advance"] = inv["auto_advance"]
            inv["auto_advance"] = _flag(params["auto_advance"])
            if not inv["auto_advance"]:
                inv["next_payment_attempt"] = None
        if "metadata" in params:
            previous["metadata"] = dict(inv["metadata"])
            inv["metadata"].update(params["metadata"] or {})
        self.emit("invoice.updated", inv, previous_attributes=previous, request=request)
        return self._render(inv, params.get("expand"))

    def _h_invoice_pay(self, match, params, request):
        inv = self._get("invoice", match["id"])
        if inv["status"] == "paid":
            raise ApiError(400, "invalid_request_error", "Invoice is already paid")
        if inv["status"] not in ("open", "uncollectible"):
            raise ApiError(400, "invalid_request_error", f"You can only pay an invoice that is open or "
                           f"uncollectible; this one is {inv['status']}.")
        if _flag(params.get("paid_out_of_band", "false")):
            self._mark_paid(inv, self._default_payment(inv["id"]), self.now, counts=False, out_of_band=True,
                            request=request)
            return self._render(inv, params.get("expand"))
        pi = self.payment_intent_of(inv["id"])
        method = params.get("payment_method") or self.charged_method(inv["id"])
        queued = self.outcomes.get(inv["id"])
        if queued:
            outcome = queued.pop(0)
        else:
            # Unscripted: the same decline again on the card that failed; another card succeeds.
            error = pi["last_payment_error"] or {}
            changed = method and method != pi["payment_method"]
            outcome = Outcome(True) if changed or not error else Outcome(False, _decline(
                error.get("decline_code"), code=error.get("code"), advice_code=error.get("advice_code"),
                network_advice_code=error.get("network_advice_code"),
                failure_code=self.store["charge"][pi["latest_charge"]]["failure_code"]))
        pi = self.attempt(inv["id"], outcome.succeeds, decline=outcome.decline, automatic=False,
                          payment_method=method, request=request)
        if outcome.succeeds:
            return self._render(inv, params.get("expand"))
        error = pi["last_payment_error"]
        raise ApiError(402, "card_error", error["message"], code=error["code"],
                       **{k: error[k] for k in ("decline_code", "advice_code", "network_advice_code",
                                                "network_decline_code", "doc_url", "charge") if error.get(k)},
                       payment_intent=clone(pi), payment_method=clone(error["payment_method"]),
                       request_log_url=f"https://dashboard.stripe.fake/logs/{inv['id']}")

    def _h_invoice_uncollectible(self, match, params, request):
        inv = self._get("invoice", match["id"])
        if inv["status"] != "open":
            raise ApiError(400, "invalid_request_error", f"You can only mark an open invoice as uncollectible; "
                           f"this one is {inv['status']}.")
        self._uncollectible(inv, self.now, request)
        return self._render(inv, params.get("expand"))

    def _h_invoice_void(self, match, params, request):
        inv = self._get("invoice", match["id"])
        if inv["status"] not in ("open", "uncollectible"):
            raise ApiError(400, "invalid_request_error", f"You can only void an open invoice; this one is "
                           f"{inv['status']}.")
        self._void(inv, self.now, request)
        return self._render(inv, params.get("expand"))

    def _h_subscription_update(self, match, params, request):
        sub = self._get("subscription", match["id"])
        previous = {}
        if "pause_collection" in params:
            previous["pause_collection"] = sub["pause_collection"]
            value = params["pause_collection"]
            if value in ("", None):
                sub["pause_collection"] = None
            else:
                if value.get("behavior") not in ("void", "keep_as_draft", "mark_uncollectible"):
                    raise ApiError(400, "invalid_request_error", "Invalid pause_collection[behavior]",
                                   param="pause_collection[behavior]")
                sub["pause_collection"] = {"behavior": value["behavior"],
                                           "resumes_at": int(value["resumes_at"]) if value.get("resumes_at")
                                           else None}
        if "metadata" in params:
            previous["metadata"] = dict(sub["metadata"])
            sub["metadata"].update(params["metadata"] or {})
        self.emit("customer.subscription.updated", sub, previous_attributes=previous, request=request)
        return self._render(sub, params.get("expand"))

    def _h_subscription_cancel(self, match, params, request):
        sub = self._get("subscription", match["id"])
        if sub["status"] == "canceled":
            raise ApiError(400, "invalid_request_error", "A canceled subscription can only update its "
                           "cancellation_details and metadata.", code="resource_missing")
        sub.update({"status": "canceled", "canceled_at": self.now, "ended_at": self.now})
        details = params.get("cancellation_details") or {}
        sub["cancellation_details"] = {"comment": details.get("comment"), "feedback": details.get("feedback"),
                                       "reason": "cancellation_requested"}
        self.emit("customer.subscription.deleted", sub, request=request)
        return self._render(sub, params.get("expand"))

    def _h_portal_session(self, match, params, request):
        customer = params.get("customer")
        if not customer or customer not in self.store["customer"]:
            raise ApiError(400, "invalid_request_error", f"No such customer: '{customer}'", param="customer",
                           code="resource_missing")
        flow = params.get("flow_data") or None
        session = template("billing_portal.session")
        sid = self._id("bps")
        session.update({"id": sid, "customer": customer, "created": self.now, "livemode": False,
                        "return_url": params.get("return_url"), "configuration": "bpc_1FkDefaultConfig",
                        "url": f"https://billing.stripe.fake/p/session/test_{sid}"})
        if flow:
            if flow.get("type") not in ("payment_method_update", "subscription_cancel", "subscription_update",
                                        "subscription_update_confirm"):
                raise ApiError(400, "invalid_request_error", "Invalid flow_data[type]", param="flow_data[type]")
            session["flow"] = {"type": flow["type"], "after_completion": {"type": "portal_homepage",
                                                                          "hosted_confirmation": None,
                                                                          "redirect": None},
                               "subscription_cancel": None, "subscription_update": None,
                               "subscription_update_confirm": None}
        else:
            session["flow"] = None
        after = params.get("after_expiration")
        session["after_expiration"] = {"type": after["type"], "customer_login": {
            "expires_at": int(after["customer_login"]["expires_at"])
            if (after.get("customer_login") or {}).get("expires_at") else None}} if after else None
        self._put("billing_portal.session", session)
        return clone(session)

    def open_portal_link(self, url: str, at: datetime | None = None) -> str:
        """What a customer who clicks a portal session URL at `at` gets: "portal" while the session lives,
        "login" after it expired when it was created with after_expiration customer_login (until its expires_at),
        else "expired". Stripe: sessions "are short-lived and will expire if the customer does not visit the URL";
        the fake gives them PORTAL_SESSION_TTL, less than any email waits for its reader."""
        with self.lock:
            t = unix(at) if at is not None else self.now
            session = next(s for s in self.store["billing_portal.session"].values() if s["url"] == url)
            if t <= session["created"] + PORTAL_SESSION_TTL:
                return "portal"
            login = (session["after_expiration"] or {}).get("customer_login")
            return "login" if login is not None and (login["expires_at"] is None or t <= login["expires_at"]) \
                else "expired"

    # -- pre-dunning (dunctl/notices): subscriptions listed, renewed, metered usage, upcoming-invoice previews -----

    def set_billing(self, subscription: str, *, interval: str | None = None, period_start: datetime | None = None,
                    period_end: datetime | None = None, default_payment_method: str | None = None,
                    emit: bool = False, at: datetime | None = None) -> None:
        """Change a subscription's interval, current period or own default payment method (an event with
        `emit`, as Stripe sends on renewal)."""
        with self.lock:
            sub = self.store["subscription"][subscription]
            previous = {}
            for item in sub["items"]["data"]:
                if interval:
                    item["price"]["recurring"]["interval"] = interval
                    item["plan"]["interval"] = interval
                if period_start is not None:
                    previous.setdefault("items", {})
                    item["current_period_start"] = unix(period_start)
                if period_end is not None:
                    item["current_period_end"] = unix(period_end)
            if default_payment_method is not None:
                previous["default_payment_method"] = sub["default_payment_method"]
                sub["default_payment_method"] = default_payment_method
            if emit:
                self.emit("customer.subscription.updated", sub, self._at(at), previous or {"items": {}})

    def set_usage(self, subscription: str, quantity: int) -> None:
        """The metered usage reported so far this period (billed at the metered price's unit amount)."""
        with self.lock:
            self.usage[subscription] = quantity

    def cancel_now(self, subscription: str, at: datetime | None = None) -> None:
        with self.lock:
            t = self._at(at)
            sub = self.store["subscription"][subscription]
            sub.update({"status": "canceled", "canceled_at": t, "ended_at": t})
            self.emit("customer.subscription.deleted", sub, t)

    def _h_subscriptions_list(self, match, params, request):
        # As Stripe: no `status` lists every subscription but the cancelled ones; `all` lists them all.
        status = params.get("status")
        items = [s for s in self._newest_first("subscription")
                 if (status == "all" or s["status"] == status or (not status and s["status"] != "canceled"))
                 and (not params.get("customer") or s["customer"] == params["customer"])]
        return self._list(items, params, "/v1/subscriptions")

    def _h_invoice_preview(self, match, params, request):
        sub = self._get("subscription", params.get("subscription") or "")
        if sub["status"] == "canceled":
            raise ApiError(400, "invalid_request_error", "No upcoming invoices for customer: " + sub["customer"],
                           code="invoice_upcoming_none")
        inv = template("invoice")
        lines, total = [], 0
        for item in sub["items"]["data"]:
            price = item["price"]
            metered = price["recurring"]["usage_type"] == "metered"
            quantity = self.usage.get(sub["id"], 0) if metered else (item.get("quantity") or 1)
            amount = quantity * (price["unit_amount"] or 0)
            total += amount
            lines.append({"id": self._id("il"), "object": "line_item", "amount": amount, "currency": sub["currency"],
                          "description": f"{quantity} x {'usage' if metered else 'plan'} (at {price['unit_amount']})",
                          "quantity": quantity,
                          "period": {"start": item["current_period_start"], "end": item["current_period_end"]},
                          "parent": {"type": "subscription_item_details",
                                     "subscription_item_details": {"subscription_item": item["id"],
                                                                   "subscription": sub["id"], "proration": False}},
                          "pricing": {"type": "price_details",
                                      "price_details": {"price": price["id"], "product": price.get("product")}}})
        item = sub["items"]["data"][0]
        # Stripe's Invoice.id: "For preview invoices created using the create preview endpoint, this id will be
        # prefixed with `upcoming_in`" (a preview is never stored: it cannot be retrieved, listed or paid).
        preview_id = "upcoming_" + self._id("in")
        for line in lines:
            line["invoice"] = preview_id
        inv.update({"id": preview_id, "object": "invoice", "customer": sub["customer"], "currency": sub["currency"],
                    "amount_due": total, "amount_remaining": total, "amount_paid": 0, "subtotal": total,
                    "total": total, "status": "draft", "created": self.now, "billing_reason": "upcoming",
                    "period_start": item["current_period_start"], "period_end": item["current_period_end"],
                    "attempt_count": 0, "hosted_invoice_url": None})
        inv["lines"] = {"object": "list", "data": lines, "has_more": False, "url": f"/v1/invoices/{preview_id}/lines"}
        inv["parent"] = {"type": "subscription_details", "quote_details": None,
                         "subscription_details": {"metadata": sub["metadata"], "subscription": sub["id"]}}
        return self._render(inv, params.get("expand"))


class _Handler(BaseHTTPRequestHandler):
    fake: FakeStripe
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16       # headers and body leave in one write: no delayed-ACK stall per request

    def date_time_string(self, timestamp=None) -> str:
        """The Date header by the fake's clock, as Stripe's by its own (the cursor settles a second by it); a test
        sets `date_skew` to put Stripe's clock off the machine's (issue 20, defect 9)."""
        from email.utils import formatdate

        return formatdate(self.fake.now + self.fake.date_skew, usegmt=True)

    def log_message(self, *args) -> None:   # keep test output clean
        pass

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        pairs = parse_qsl(split.query, keep_blank_values=True) + parse_qsl(body, keep_blank_values=True)
        auth = self.headers.get("Authorization") or ""
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        fake = self.fake
        try:
            status, payload, headers = fake.handle(method, split.path, parse_form(pairs), key,
                                                   self.headers.get("Idempotency-Key"),
                                                   self.headers.get("Stripe-Account"))
        except AnswerLost:
            self.close_connection = True      # no status line: the client sees the connection drop
            return
        except ApiError as exc:
            status, payload, headers = exc.status, exc.body, exc.headers
        with fake.lock:
            fake._counter += 1
            request_id = f"req_Fk{fake._counter:012d}"
            fake.log.append((method, split.path, status))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", request_id)
        self.send_header("Stripe-Version", self.headers.get("Stripe-Version") or API_VERSION)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


# Pre-dunning routes, first: /v1/invoices/create_preview must not be taken for an invoice id.
FakeStripe._ROUTES[:0] = [
    ("POST", r"/v1/invoices/create_preview", "invoice_preview", "invoice_read"),
    ("GET", r"/v1/subscriptions", "subscriptions_list", "subscription_read"),
]


@pytest.fixture
def fake_stripe():
    """A started fake Stripe account; `fake_stripe.url` is the api_base to give the gateway."""
    with FakeStripe() as fake:
        yield fake
