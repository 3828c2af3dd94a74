"""The simulated account's state, clock and luck: what `SimulatedAccount` (dunctl/simulation/account.py) is built
on, with the records it keeps that Stripe would not show, and the decline a card code stands for.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.errors import GatewayError
from dunctl.failures import BANK_HARD, CARD_HARD, CARD_UPDATE, Decline
from dunctl.model import Customer, Invoice, InvoiceLine, PaymentMethod, Subscription
from dunctl.simulation.assumptions import DEFAULT, Assumptions
from dunctl.simulation.population import SimCustomer

# Failure types a customer fixes by giving a new payment method (a retry on the old one cannot succeed).
NEEDS_NEW_METHOD = frozenset({CARD_HARD, CARD_UPDATE, BANK_HARD})
# Decline codes Stripe reports as the error code itself rather than as card_declined + decline_code.
OWN_ERROR_CODES = frozenset({"expired_card", "incorrect_cvc", "incorrect_number", "processing_error",
                             "authentication_required", "invalid_expiry_year"})
# ACH return codes and the failure_code Stripe puts on the charge for them.
ACH_FAILURE_CODES = {"R01": "insufficient_funds", "R09": "insufficient_funds", "R02": "account_closed",
                     "R03": "no_account", "R04": "invalid_account_number", "R10": "debit_not_authorized",
                     "R16": "account_frozen", "R20": "bank_account_restricted"}
HOSTED = "https://invoice.stripe.test/i/"
PORTAL = "https://billing.stripe.test/p/session/"


class UnknownObject(GatewayError):
    """The simulated account has no such invoice or subscription (Stripe's resource_missing)."""

    def __init__(self, message: str):
        super().__init__(message, code="resource_missing")


class InvalidRequest(GatewayError):
    """A request Stripe would refuse (paying a void invoice, re-using an idempotency key with other arguments)."""

    def __init__(self, message: str):
        super().__init__(message, code="invalid_request")



@dataclass
class HistoricalInvoice:
    """A failed invoice as a ledger recorded it, for `simulate --from-ledger` to replay."""

    invoice_id: str
    customer: Customer
    subscription_id: str | None
    usage_based: bool
    currency: str
    amount_due: int
    lines: list[InvoiceLine]
    billing_reason: str | None
    payment_method_id: str
    payment_method_type: str
    created: datetime
    first_failed_at: datetime
    decline: Decline                 # the first failure's codes



class InvoiceBook(dict):
    """The account's invoices by id, with each customer's and each subscription's invoice ids in the order they
    were made: a question about one customer's invoices reads theirs, not the whole book (a scan per question
    made a 3,000-customer demo's pauses and cancellations quadratic). Invoices are added by assignment, never
    removed, and keep their customer and subscription."""

    def __init__(self):
        super().__init__()
        self._of_customer: dict[str, list[str]] = {}
        self._of_subscription: dict[str, list[str]] = {}

    def __setitem__(self, invoice_id: str, invoice: Invoice) -> None:
        if invoice_id not in self:
            self._of_customer.setdefault(invoice.customer_id, []).append(invoice_id)
            self._of_subscription.setdefault(invoice.subscription_id, []).append(invoice_id)
        super().__setitem__(invoice_id, invoice)

    def of_customer(self, customer_id: str) -> list[Invoice]:
        """The customer's invoices, oldest first."""
        return [self[i] for i in self._of_customer.get(customer_id, ())]

    def of_subscription(self, subscription_id: str) -> list[Invoice]:
        return [self[i] for i in self._of_subscription.get(subscription_id, ())]


@dataclass
class _CustomerState:
    profile: SimCustomer | None
    customer: Customer
    method: PaymentMethod
    blocked_by: Decline | None = None          # a hard decline on the current method: every charge fails so
    method_changed_at: datetime | None = None  # when the customer (or the card updater) replaced the method
    methods: int = 1
    last_charge: tuple[datetime, Decline | None] | None = None   # the latest renewal charge: when, how it failed
    failed: list[str] = field(default_factory=list)              # invoices that failed, oldest first


@dataclass
class _InvoiceState:
    """What the account knows about an invoice that Stripe would not show: the customer's hidden situation."""

    failure_type: str | None = None
    clears_at: datetime | None = None          # a soft decline's cause goes away (funds back) at this time
    messages: int = 0
    link_kind: str = "hosted_invoice"
    disputed: bool = False
    scripted: list[tuple[bool, str | None]] = field(default_factory=list)   # outcomes of the next attempts
    responding: bool = False                   # a response is already scheduled


@dataclass
class _SubscriptionState:
    subscription: Subscription
    profile: SimCustomer | None
    period: int = 0
    reminded: set = field(default_factory=set)   # renewals whose customer opened a reminder (pre-dunning)
    alerted: set = field(default_factory=set)    # renewals whose customer opened a usage alert


@dataclass
class Stats:
    """What happened inside the account, for `simulate` and the demo summary."""

    invoices: int = 0
    failed: int = 0
    provider_retries: int = 0
    dunctl_retries: int = 0
    recovered_by: Counter = field(default_factory=Counter)
    responses: Counter = field(default_factory=Counter)
    methods_replaced: int = 0
    disputes: int = 0


def add_months(moment: datetime, months: int) -> datetime:
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    days_in_month = [31, 29 if year % 4 == 0 and (year % 100 or year % 400 == 0) else 28, 31, 30, 31, 30, 31, 31,
                     30, 31, 30, 31][month - 1]
    return moment.replace(year=year, month=month, day=min(moment.day, days_in_month))


def add_business_days(moment: datetime, days: int) -> datetime:
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


def draw_usage(rng: random.Random, p: SimCustomer, a: Assumptions) -> tuple[int, int, bool]:
    """(fee, usage, spike) of one renewal of a metered plan. The invoice and the previews before it draw from the
    same generator, named by the renewal, so a preview agrees with the invoice that follows."""
    fee = p.base_amount * 2 // 5
    usage = (p.base_amount - fee) * math.exp(rng.gauss(0, a.usage_sigma))
    spike = rng.random() < a.usage_spike_share
    if spike:
        usage *= rng.uniform(*a.usage_spike_factor)
    return fee, int(round(usage, -2 if p.currency == "jpy" else 0)), spike


class World:
    """The event queue and the records of a simulated account; the other parts (billing, customers,
    pre-dunning) and the Gateway act on them."""

    def __init__(self, *, seed: int, start: datetime, smart_retries: bool = False,
                 bill_until: datetime | None = None, assumptions: Assumptions = DEFAULT,
                 customers_respond: bool = True):
        self.seed = seed
        self.start = self.now = start
        self.smart_retries = smart_retries
        self.bill_until = bill_until
        self.assumptions = assumptions
        self.customers_respond = customers_respond
        self.requests = 0
        self.stats = Stats()
        self._queue: list[tuple[datetime, int, str, tuple]] = []
        self._order = 0
        self._log: list[tuple[str, object]] = []         # (kind, id or Signal); entry i has seq i + 1
        self._customers: dict[str, _CustomerState] = {}
        self._methods: dict[str, PaymentMethod] = {}
        self._subscriptions: dict[str, _SubscriptionState] = {}
        self._invoices = InvoiceBook()
        self._state: dict[str, _InvoiceState] = {}
        self._idempotent: dict[str, tuple[tuple, object]] = {}
        self._drawn: dict[tuple, object] = {}      # what depends only on a subscription and its period (predunning.py)

    # -- randomness and time ----------------------------------------------------------------------------------

    def _rng(self, *parts) -> random.Random:
        """A generator for one decision, named by what is decided: independent of the order things happen in."""
        return random.Random("/".join(map(str, (self.seed, *parts))))

    def _schedule(self, at: datetime, kind: str, *args) -> None:
        self._order += 1
        heapq.heappush(self._queue, (at, self._order, kind, args))

    def advance_to(self, now: datetime) -> None:
        """Let simulated time run until `now`: renewals, Stripe's retries, customers acting. Never goes back."""
        while self._queue and self._queue[0][0] <= now:
            at, _, kind, args = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            getattr(self, f"_on_{kind}")(at, *args)
        self.now = max(self.now, now)

    def _touch(self, kind: str, key) -> None:
        self._log.append((kind, key))

    def _new_method(self, customer_id: str, pm_id: str, method_type: str, brand: str | None, at, index: int):
        rng = self._rng("method", pm_id)
        card = method_type == "card"
        method = PaymentMethod(id=pm_id, customer_id=customer_id, type=method_type, brand=brand if card else None,
                               last4=f"{rng.randrange(10000):04d}", exp_month=rng.randint(1, 12) if card else None,
                               exp_year=self.start.year + rng.randint(1, 4) if card else None, updated_at=at)
        self._methods[pm_id] = method
        return method


def card_decline(code: str, method_type: str = "card") -> Decline:
    """The Decline Stripe reports for a card decline code ('advice:X' is a generic decline with advice code X)."""
    if code.startswith("advice:"):
        return Decline(code="card_declined", decline_code="generic_decline", advice_code=code[7:],
                       payment_method_type=method_type)
    if code == "card_declined":
        return Decline(code="card_declined", payment_method_type=method_type)
    if code == "authentication_required":
        return Decline(code="authentication_required", decline_code="authentication_required",
                       payment_intent_status="requires_action", payment_method_type=method_type)
    return Decline(code=code if code in OWN_ERROR_CODES else "card_declined", decline_code=code,
                   payment_method_type=method_type)

