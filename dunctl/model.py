"""The records a gateway hands to the ledger. Provider-neutral: the Stripe gateway and the simulated account
both produce exactly these, so `tick` cannot tell them apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dunctl.failures import Decline


@dataclass
class Customer:
    id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    preferred_locale: str | None = None
    timezone: str | None = None
    livemode: bool = False
    default_payment_method_id: str | None = None   # invoice_settings.default_payment_method (pre-dunning)

    @property
    def billing_email(self) -> str | None:
        return self.metadata.get("billing_email")


@dataclass
class PaymentMethod:
    id: str
    customer_id: str | None
    type: str                      # card, us_bank_account, sepa_debit, ...
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    updated_at: datetime | None = None   # when Stripe says the method (or the customer's default) changed


@dataclass
class Subscription:
    id: str
    customer_id: str
    status: str                    # active, past_due, unpaid, canceled, paused, ...
    metadata: dict[str, str] = field(default_factory=dict)
    usage_based: bool = False      # any metered price
    pause_behavior: str | None = None
    canceled_at: datetime | None = None
    # What pre-dunning needs (dunctl/notices): the current period, the next payment's amount and how it is paid.
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None     # the next renewal, when the next payment is taken
    default_payment_method_id: str | None = None   # the subscription's own; else the customer's default
    interval: str | None = None                    # day | week | month | year (the licensed price's)
    amount: int | None = None                      # the licensed prices' total per period, minor units
    currency: str | None = None
    cancel_at_period_end: bool = False


@dataclass
class InvoiceLine:
    description: str | None
    amount: int
    quantity: int | None = None
    metered: bool = False
    period_start: datetime | None = None
    period_end: datetime | None = None
    subscription_item_id: str | None = None   # the line's subscription item (how lines match items: by id)
    price_id: str | None = None


@dataclass
class Invoice:
    """An invoice as the provider sees it now. `failed_at`/`decline` describe its latest failed attempt."""

    id: str
    customer_id: str
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    status: str                    # draft, open, paid, void, uncollectible
    created: datetime
    number: str | None = None
    subscription_id: str | None = None
    billing_reason: str | None = None
    collection_method: str = "charge_automatically"
    attempt_count: int = 0
    next_payment_attempt: datetime | None = None
    hosted_invoice_url: str | None = None
    # Net-terms invoices (collection_method send_invoice): the date the customer must pay by, and the PDF link
    # their reminders carry (dunctl/receivables).
    due_date: datetime | None = None
    invoice_pdf: str | None = None
    customer_email: str | None = None
    customer_name: str | None = None
    payment_method_id: str | None = None
    payment_method_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # None: this copy of the invoice cannot tell its lines completely (an event's snapshot without the expanded
    # subscription, or more lines than the provider embeds): the ledger keeps the lines it has.
    lines: list[InvoiceLine] | None = field(default_factory=list)
    first_failed_at: datetime | None = None   # when the provider first saw this invoice fail
    failed_at: datetime | None = None         # the latest failed attempt
    decline: Decline | None = None            # the latest failed attempt's codes
    paid_at: datetime | None = None
    # When Stripe recorded the latest rise of amount_paid (the event's `created`; read from a listing, its paid
    # invoice payments' `paid_at`): the date of a partial payment on a net-terms invoice, which the invoice itself
    # does not carry (dunctl/receivables/journal.py)
    amount_paid_at: datetime | None = None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None
    auto_advance: bool | None = None
    livemode: bool = False

    @property
    def has_failed(self) -> bool:
        return self.failed_at is not None or self.attempt_count > 0 and self.decline is not None


@dataclass
class Signal:
    """Something the provider reported that changes a case but is not an invoice field: a dispute, a
    payment method the customer replaced, a subscription the customer cancelled, an upcoming invoice.

    Kinds, and the fields each one sets (beyond kind, at, detail, source_id):

    - dispute                    invoice_id. charge.dispute.created: stop dunning, route to a person.
    - dispute_closed             invoice_id; data.status 'won' | 'lost' (also 'warning_closed'), data.dispute,
                                 data.reason. charge.dispute.closed: won -> record it, the case stays with the
                                 person; lost -> the case ends as written_off with the reason.
    - payment_method_updated     customer_id, payment_method_id (the new one); invoice_id or subscription_id
                                 when the new default is that object's own. payment_method.updated /
                                 .automatically_updated with a new number or expiry (data.card_changed), or a new
                                 default on the invoice, subscription or customer: the card changed, retry now.
                                 An edit of a payment method's metadata or billing details is no signal.
    - mandate_inactive           customer_id, payment_method_id; data.mandate. mandate.updated to inactive: the
                                 bank will refuse debits; a bank-debit case becomes bank_hard.
    - subscription_canceled      customer_id, subscription_id; data.reason, data.comment, data.feedback.
                                 customer.subscription.deleted: end the case (the customer left): no retries,
                                 no emails.
    - subscription_cancel_scheduled  customer_id, subscription_id; data.cancel_at (ISO), data.cancel_at_period_end.
                                 .updated with cancel_at_period_end / cancel_at: hold the case (no retries or
                                 reminders to someone leaving); it ends with subscription_canceled.
    - subscription_paused        customer_id, subscription_id; data.behavior and data.resumes_at (collection
                                 paused) or data.status 'paused'. .updated with pause_collection or status
                                 paused, or customer.subscription.paused: hold the case.
    - subscription_resumed       customer_id, subscription_id; data.status. customer.subscription.resumed, or
                                 .updated clearing pause_collection, leaving status paused, or withdrawing a
                                 scheduled cancellation: resume a held case.
      Every subscription_* signal also has data.event (the event id) and data.by_dunctl (true when dunctl's own
      step made the change, e.g. its pause_subscription step: not a reason to hold the case).
    - card_expiring              customer_id. customer.source.expiring.
    - invoice_upcoming           customer_id. invoice.upcoming.
    - record_rejected            invoice_id, customer_id; data.object, data.id, data.problem. A record sync could
                                 not store (an impossible amount, an unknown currency): skipped, the rest of the
                                 sync went on; shown so a person can look.
    """

    kind: str
    at: datetime
    invoice_id: str | None = None
    customer_id: str | None = None
    detail: str = ""
    source_id: str | None = None   # the provider's event id (or a key derived from it), for de-duplication
    subscription_id: str | None = None
    payment_method_id: str | None = None
    data: dict = field(default_factory=dict)


@dataclass
class SyncBatch:
    """One unit of sync progress. The ledger applies a batch and stores its cursor in one transaction, so a
    sync that dies halfway resumes after the last applied batch."""

    customers: list[Customer] = field(default_factory=list)
    payment_methods: list[PaymentMethod] = field(default_factory=list)
    subscriptions: list[Subscription] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    cursor: dict | None = None     # opaque to the ledger; None leaves the stored cursor as it is
    requests: int = 0              # provider requests this batch cost
    events: int = 0                # provider events this batch consumed
    dunctl_keys: list[str] = field(default_factory=list)   # idempotency keys of dunctl's own requests seen in events


@dataclass
class PaymentOutcome:
    """The result of a payment attempt dunctl made: succeeded, declined (`decline` set), or neither: accepted and
    still processing (bank debits), to be settled by a later sync."""

    succeeded: bool
    invoice: Invoice | None = None     # the invoice after the attempt, when the provider returned it
    decline: Decline | None = None
    request_id: str | None = None
    detail: str = ""


@dataclass
class UsagePreview:
    """The upcoming invoice of a metered subscription as the provider previews it now (pre-dunning usage alerts)."""

    subscription_id: str
    currency: str
    amount_due: int
    period_start: datetime | None = None
    period_end: datetime | None = None
    lines: list[InvoiceLine] = field(default_factory=list)
    request_id: str | None = None
