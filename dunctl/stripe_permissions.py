"""What dunctl asks of a Stripe restricted key: one table, action -> permission.

`dunctl check --online` derives from it the permissions a config needs and probes each; the hint for a missing
key and the README's key list come from it too, so the three cannot drift apart. A permission is named as Stripe
names it in a 403 (`rak_<resource>_<level>`: "Having the 'rak_invoice_write' permission would allow this request
to continue") and, for people, as the Dashboard's API keys page labels it. Write implies read on Stripe's side
(https://docs.stripe.com/keys/restricted-api-keys), but dunctl lists each level it uses, so a key edited down
from write to read is still caught.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

READ, WRITE = "read", "write"
# Anything that looks like a Stripe key (whole, or masked as Stripe's own messages show it): never passed on.
KEY_PATTERN = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]+")
# Resource (as in rak_<resource>_<level>) -> its name on the Dashboard's API keys page.
LABELS = {
    "event": "Events", "invoice": "Invoices", "customer": "Customers", "subscription": "Subscriptions",
    "payment_method": "PaymentMethods", "payment_intent": "PaymentIntents", "charge": "Charges",
    "billing_portal_session": "Customer portal",
}
# A request per permission that needs exactly it and changes nothing: a list of one, or an object that does not
# exist. Stripe checks the key's permissions before it looks the object up, so the probe answers 403 without the
# permission and 404 (or 400 "No such ...") with it; a write aimed at a missing id writes nothing.
_PROBE = "dunctl_preflight_probe"
PROBES: dict[tuple[str, str], tuple[str, str, dict]] = {
    ("event", READ): ("get", "/v1/events", {"limit": 1}),
    ("invoice", READ): ("get", "/v1/invoices", {"limit": 1}),
    ("customer", READ): ("get", f"/v1/customers/cus_{_PROBE}", {}),
    ("subscription", READ): ("get", f"/v1/subscriptions/sub_{_PROBE}", {}),
    ("payment_method", READ): ("get", f"/v1/payment_methods/pm_{_PROBE}", {}),
    ("payment_intent", READ): ("get", f"/v1/payment_intents/pi_{_PROBE}", {}),
    ("charge", READ): ("get", f"/v1/charges/ch_{_PROBE}", {}),
    ("invoice", WRITE): ("post", f"/v1/invoices/in_{_PROBE}", {}),
    ("subscription", WRITE): ("post", f"/v1/subscriptions/sub_{_PROBE}", {}),
    ("billing_portal_session", WRITE): ("post", "/v1/billing_portal/sessions", {"customer": f"cus_{_PROBE}"}),
}


def _always(config) -> bool:
    return True


def _steps(config) -> list:
    return [step for seq in config.sequences.values() for step in seq.steps]


def _has_step(*actions: str) -> Callable[[object], bool]:
    return lambda config: any(step.action in actions for step in _steps(config))


def _dunctl_retries(config) -> bool:
    return config.file.stripe.retries == "dunctl"


def _retry_on_update(config) -> bool:
    return config.file.stripe.retry_on_update


def _customer_messages(config) -> bool:
    return any(step.customer_facing for step in _steps(config))


def _portal_sessions(config) -> bool:
    # dunctl emails no portal session (they expire, see dunctl/config.py), so a valid config never needs this;
    # it stays here because the gateway can still open one (`update_link(kind="billing_portal")`).
    links = {step.link for step in _steps(config)} | {config.file.stripe.update_link}
    notices = config.file.notices
    return "billing_portal" in links or (notices.enabled and notices.link == "billing_portal")


@dataclass(frozen=True)
class StripeAction:
    """One thing dunctl does on Stripe, the permission it takes, and whether a config makes dunctl do it."""

    does: str                                  # what, in words a person reading a failed check understands
    resource: str
    level: str
    needed: Callable[[object], bool]
    when: str                                  # when it is needed, for the README

    @property
    def permission(self) -> tuple[str, str]:
        return self.resource, self.level


# Every request the gateway (dunctl/stripe/) makes, by what it is for. Writes are listed in monitor mode
# too: they are what `mode: live` will need, and `check` is the step before.
ACTIONS: tuple[StripeAction, ...] = (
    StripeAction("sync follows events", "event", READ, _always, "always"),
    StripeAction("sync reads invoices, their lines and payments, and usage previews", "invoice", READ, _always,
                 "always"),
    StripeAction("sync reads customers (names, billing contacts)", "customer", READ, _always, "always"),
    StripeAction("sync reads subscriptions and their items", "subscription", READ, _always, "always"),
    StripeAction("sync reads payment methods (card brand, expiry)", "payment_method", READ, _always, "always"),
    StripeAction("sync reads declines (payment intents)", "payment_intent", READ, _always, "always"),
    StripeAction("sync reads disputed charges", "charge", READ, _always, "always"),
    StripeAction("stripe.retries: dunctl pays invoices and turns off Smart Retries", "invoice", WRITE,
                 _dunctl_retries, "`stripe.retries: dunctl`"),
    StripeAction("stripe.retry_on_update pays the invoice when the customer changes the payment method",
                 "invoice", WRITE, _retry_on_update, "`stripe.retry_on_update: true` (the default)"),
    StripeAction("a customer message notes on the invoice what was sent (invoices.update metadata)", "invoice",
                 WRITE, _customer_messages, "any email or SMS step to the customer"),
    StripeAction("a mark_uncollectible step", "invoice", WRITE, _has_step("mark_uncollectible"),
                 "a `mark_uncollectible` step"),
    StripeAction("a pause_subscription or cancel_subscription step", "subscription", WRITE,
                 _has_step("pause_subscription", "cancel_subscription"),
                 "a `pause_subscription` or `cancel_subscription` step"),
    StripeAction("links to a customer portal session", "billing_portal_session", WRITE, _portal_sessions,
                 "never: dunctl emails no portal session (they expire before customers click)"),
)


def label(permission: tuple[str, str]) -> str:
    """'Invoices: write', as the Dashboard shows it."""
    resource, level = permission
    return f"{LABELS.get(resource, resource.replace('_', ' ').title())}: {level}"


def needed_permissions(config) -> dict[tuple[str, str], list[str]]:
    """The permissions this config needs, in the table's order, each with every reason it is needed."""
    needed: dict[tuple[str, str], list[str]] = {}
    for action in ACTIONS:
        if action.needed(config):
            needed.setdefault(action.permission, []).append(action.does)
    return needed


def all_permissions() -> list[tuple[str, str]]:
    """Every permission some config may need (what a key for any config should hold), portal sessions aside:
    no valid config opens one."""
    found: list[tuple[str, str]] = []
    for action in ACTIONS:
        if action.needed is not _portal_sessions and action.permission not in found:
            found.append(action.permission)
    return found


def key_hint() -> str:
    """What a restricted key for dunctl holds, in one line (the hint when the key is missing)."""
    return "a restricted key with " + ", ".join(label(p) for p in all_permissions())


def readme_rows() -> list[str]:
    """The README's key-permission table rows (tests/test_preflight.py checks the README shows exactly these)."""
    rows = []
    for permission in all_permissions():
        actions = [a for a in ACTIONS if a.permission == permission]
        why = "; ".join(a.does if a.when == "always" else a.when for a in actions)
        resource, level = permission
        rows.append(f"| {LABELS[resource]} | {level} | {why} |")
    return rows


def scrub(text: str | None) -> str | None:
    """Text from Stripe with anything that looks like an API key removed (Stripe's own 401s quote part of the
    key; a proxy or a misconfigured endpoint may echo all of it): it must not reach an error, a log or the
    ledger."""
    return KEY_PATTERN.sub("[key removed]", text) if text else text
