"""The seam between dunctl and a payment provider.

`tick` talks only to this protocol. Two implementations exist: the Stripe gateway (a real account, through the
official SDK) and the simulated account behind `dunctl demo` and `dunctl simulate`. Both pass the same contract
tests (tests/gateway_contract.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dunctl.model import Invoice, PaymentOutcome, SyncBatch, UsagePreview


class Gateway(Protocol):
    #: "test", "live" or "simulated": which kind of account the ledger follows.
    mode: str

    #: Requests made to the provider so far (for `sync` output and benchmarks).
    requests: int

    #: The provider's clock (Stripe: the `Date` of its first answer), for the tick to compare the machine's clock
    #: with before it acts (dunctl/tick/clocks.py); None when it has not said.
    stripe_date: datetime | None

    def account_id(self) -> str:
        """The id of the account this gateway acts on: a ledger is bound to it (dunctl/account_binding.py)."""

    def sync(self, cursor: dict | None, now: datetime, full: bool = False) -> Iterator[SyncBatch]:
        """Yield changes since `cursor` (everything relevant when `cursor` is None or `full`), oldest first.

        Each batch carries the cursor to resume after it. With nothing new, costs one request."""

    def sync_subscriptions(self, after: str | None = None) -> Iterator[tuple[SyncBatch, str | None]]:
        """Pre-dunning's backfill: the subscriptions that will be charged, a page at a time, with each page's
        last id to resume after (an account whose `sync` already carries them yields nothing)."""

    def preview_invoice(self, subscription_id: str) -> UsagePreview:
        """What the subscription's next invoice would be now (usage so far): pre-dunning's usage alerts."""

    def get_invoice(self, invoice_id: str) -> Invoice:
        """The invoice as the provider sees it right now (used to suppress an action on a paid invoice)."""

    def pay_invoice(self, invoice_id: str, idempotency_key: str, payment_method: str | None = None
                    ) -> PaymentOutcome:
        """Attempt payment with `payment_method`, else the invoice's (its default, the subscription's, the
        customer's, in that order). A decline is an outcome, not an exception."""

    def disable_automatic_retries(self, invoice_id: str, idempotency_key: str) -> None:
        """Stop the provider's own retries for this invoice (Stripe: auto_advance=false)."""

    def mark_invoice(self, invoice_id: str, metadata: dict[str, str], idempotency_key: str) -> None:
        """Set these metadata keys on the invoice (others are left alone): which ledger works it and the last
        customer message it was sent (dunctl/adoption.py)."""

    def mark_uncollectible(self, invoice_id: str, idempotency_key: str) -> Invoice:
        """Write the invoice off."""

    def pause_subscription(self, subscription_id: str, behavior: str, idempotency_key: str) -> None:
        """Pause collection on the subscription (behavior: void, keep_as_draft, mark_uncollectible)."""

    def resume_subscription(self, subscription_id: str, idempotency_key: str) -> None:
        """Lift a pause on collection (the one dunctl's own pause_subscription step made), once the invoice that
        caused it is paid: the subscription bills again as before."""

    def cancel_subscription(self, subscription_id: str, comment: str, idempotency_key: str) -> None:
        """Cancel the subscription, leaving `comment` on it."""

    def update_link(self, invoice: Invoice, kind: str, return_url: str | None, idempotency_key: str) -> str:
        """A one-click link for the customer: kind 'hosted_invoice' (pay or authenticate the invoice) or
        'billing_portal' (a portal session on the payment_method_update flow)."""
