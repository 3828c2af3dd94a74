"""Stripe JSON -> dunctl records: plain dicts in, dataclasses out. No requests and no SDK here: what the gateway
and the event handlers fetched is turned into `dunctl.model` records, in either API shape (an invoice with
`parent.subscription_details`, or an older one with `subscription` and `payment_intent` on top).

Anything Stripe says that could carry an API key goes through `scrub` (dunctl/stripe_permissions.py) first.
"""

from __future__ import annotations

from datetime import datetime

from dunctl.clock import from_unix
from dunctl.failures import DATA, Decline
from dunctl.model import Customer, Invoice, InvoiceLine, PaymentMethod, Subscription, SyncBatch
from dunctl.stripe_permissions import scrub

PAID_LATE_AFTER = 15 * 60    # seconds after finalization
# The largest amount a record may carry: Stripe's own limit is 12 digits (99,999,999,999.99 in some currencies).
MAX_AMOUNT = 10**12
# The currencies Stripe charges in (dunctl/data/stripe_currencies.txt): any other is a record dunctl cannot store.
CURRENCIES = frozenset(code for line in (DATA / "stripe_currencies.txt").read_text(encoding="utf-8").splitlines()
                       if not line.startswith("#") for code in line.split())


def id_of(value) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value


def subscription_field(invoice: dict):
    """The invoice's subscription: `parent.subscription_details.subscription`, or the old top-level field."""
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    return details.get("subscription") or invoice.get("subscription")


def is_metered(price: dict) -> bool:
    """Is this price billed by usage (a metered price, or one on a meter)?"""
    recurring = price.get("recurring") or {}
    return (recurring.get("usage_type") or price.get("usage_type")) == "metered" or bool(recurring.get("meter"))


def lines_from(invoice: dict) -> list[InvoiceLine] | None:
    """The invoice's lines, each matched to its subscription item by id (parent.subscription_item_details, or
    the price in pricing.price_details), never by position. None when this copy cannot say which lines are
    metered (the subscription not expanded) or holds only some lines (has_more): the ledger then keeps what it
    knew rather than forgetting the usage breakdown."""
    listed = invoice.get("lines") or {}
    if listed.get("has_more"):
        return None
    subscription = subscription_field(invoice)
    by_item: dict[str, bool] = {}
    by_price: dict[str, bool] = {}
    if isinstance(subscription, dict):
        for item in (subscription.get("items") or {}).get("data") or []:
            price = item.get("price") or item.get("plan") or {}
            by_item[item["id"]] = by_price[id_of(price) or ""] = is_metered(price)
    lines = []
    for line in listed.get("data") or []:
        parent = (line.get("parent") or {}).get("subscription_item_details") or {}
        item_id = id_of(parent.get("subscription_item"))
        price = ((line.get("pricing") or {}).get("price_details") or {}).get("price")
        price_id = id_of(price)
        if item_id in by_item:
            metered = by_item[item_id]
        elif isinstance(price, dict):
            metered = is_metered(price)
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


def worth_following(invoice: dict, now: datetime) -> bool:
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
                    default_payment_method_id=id_of((data.get("invoice_settings") or {}).get("default_payment_method")))


def payment_method_from(data: dict, updated_at: datetime | None = None) -> PaymentMethod:
    kind = data.get("type") or ("card" if data.get("object") == "card" else "unknown")
    details = data.get(kind) or {}
    return PaymentMethod(id=data["id"], customer_id=id_of(data.get("customer")), type=kind,
                         brand=details.get("brand") or details.get("bank_name"), last4=details.get("last4"),
                         exp_month=details.get("exp_month"), exp_year=details.get("exp_year"),
                         updated_at=updated_at)


def subscription_from(data: dict) -> Subscription:
    items = (data.get("items") or {}).get("data") or []
    usage_based = any(is_metered(item.get("price") or item.get("plan") or {}) for item in items)
    pause = data.get("pause_collection") or {}
    return Subscription(id=data["id"], customer_id=id_of(data.get("customer")), status=data.get("status") or "unknown",
                        metadata={k: str(v) for k, v in (data.get("metadata") or {}).items()},
                        usage_based=usage_based, pause_behavior=pause.get("behavior"),
                        canceled_at=from_unix(data.get("canceled_at")), **billing_terms(data))


def billing_terms(data: dict) -> dict:
    """What pre-dunning needs of a subscription: its current period (on the items since 2025), the licensed
    prices' amount per period and interval, its own default payment method, and whether it ends."""
    items = (data.get("items") or {}).get("data") or []
    starts = [item["current_period_start"] for item in items if item.get("current_period_start")]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    licensed = [item for item in items if not is_metered(item.get("price") or item.get("plan") or {})]
    amount = sum(((item.get("price") or {}).get("unit_amount") or 0) * (item.get("quantity") or 1) for item in licensed)
    recurring = ((licensed or items or [{}])[0].get("price") or {}).get("recurring") or {}
    return {"current_period_start": from_unix(min(starts) if starts else data.get("current_period_start")),
            "current_period_end": from_unix(min(ends) if ends else data.get("current_period_end")),
            "default_payment_method_id": id_of(data.get("default_payment_method")),
            "interval": recurring.get("interval"), "amount": amount if items else None,
            "currency": data.get("currency"), "cancel_at_period_end": bool(data.get("cancel_at_period_end"))}


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
    subscription = subscription_field(data)
    for raw in (data.get("default_payment_method"),
                subscription.get("default_payment_method") if isinstance(subscription, dict) else None):
        if method is None and raw:
            method = raw if isinstance(raw, dict) else {"id": raw}
    if method is None and isinstance(customer, dict):
        raw = (customer.get("invoice_settings") or {}).get("default_payment_method")
        method = raw if isinstance(raw, dict) else {"id": raw} if raw else None
    return Invoice(
        id=data["id"], customer_id=id_of(customer), currency=data.get("currency") or "",
        amount_due=data.get("amount_due") or 0,
        amount_paid=data.get("amount_paid") or 0, amount_remaining=data.get("amount_remaining") or 0,
        status=data.get("status") or "open", created=from_unix(data.get("created")), number=data.get("number"),
        subscription_id=id_of(subscription_field(data)), billing_reason=data.get("billing_reason"),
        collection_method=data.get("collection_method") or "charge_automatically", attempt_count=attempts,
        next_payment_attempt=from_unix(data.get("next_payment_attempt")),
        hosted_invoice_url=data.get("hosted_invoice_url"),
        due_date=from_unix(data.get("due_date")), invoice_pdf=data.get("invoice_pdf"),
        customer_email=data.get("customer_email") or (customer.get("email") if isinstance(customer, dict) else None),
        customer_name=data.get("customer_name") or (customer.get("name") if isinstance(customer, dict) else None),
        payment_method_id=(method or {}).get("id"),
        payment_method_type=(decline.payment_method_type if decline else None) or (method or {}).get("type"),
        metadata={k: str(v) for k, v in (data.get("metadata") or {}).items()}, lines=lines_from(data),
        first_failed_at=first_failed_at, failed_at=failed_at, decline=decline,
        paid_at=from_unix(transitions.get("paid_at")), voided_at=from_unix(transitions.get("voided_at")),
        marked_uncollectible_at=from_unix(transitions.get("marked_uncollectible_at")),
        auto_advance=data.get("auto_advance"), livemode=bool(data.get("livemode")),
    )


def describe_method(method: PaymentMethod) -> str:
    text = f"{method.brand or method.type} ending {method.last4}" if method.last4 else method.type
    if method.exp_month and method.exp_year:
        text += f", expires {method.exp_month}/{method.exp_year}"
    return text


def collect_payer(batch: SyncBatch, data: dict) -> None:
    """The customer and payment methods that came expanded with an invoice or a subscription."""
    customer = data.get("customer")
    if isinstance(customer, dict):
        batch.customers.append(customer_from(customer))
        default = (customer.get("invoice_settings") or {}).get("default_payment_method")
        if isinstance(default, dict):
            batch.payment_methods.append(payment_method_from(default))
    if isinstance(data.get("default_payment_method"), dict):
        batch.payment_methods.append(payment_method_from(data["default_payment_method"]))


def deduplicated(batch: SyncBatch) -> SyncBatch:
    """One record per id in each list, the last one seen winning (records arrive oldest first)."""
    for name in ("customers", "payment_methods", "subscriptions"):
        records = getattr(batch, name)
        setattr(batch, name, list({record.id: record for record in records}.values()))
    return batch
