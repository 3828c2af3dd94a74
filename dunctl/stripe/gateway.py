"""The Stripe gateway: a real Stripe account behind the `Gateway` protocol (dunctl/gateway.py), through
stripe-python 16's StripeClient.

The gateway only wires the parts: syncing is dunctl/stripe/sync.py's (with its cursor in cursor.py and one
handler per event type in events.py); requests, retries, the rate, the tick's budget and errors are
dunctl/stripe/client.py's; Stripe JSON becomes dunctl records in convert.py. What is left here are the actions the
executor takes and the reads it makes right before them. A write that got a 5xx is read back (`_read_back`)
rather than retried under its key. With `account` (Connect) every request carries the Stripe-Account header.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime

from dunctl.clock import from_unix
from dunctl.errors import CardDeclined, GatewayAuthError, GatewayError
from dunctl.failures import Decline
from dunctl.model import Invoice, PaymentOutcome, SyncBatch, UsagePreview
from dunctl.stripe.client import StripeRequests, keyed, plain, request_id_of
from dunctl.stripe.convert import invoice_from, lines_from, unstorable
from dunctl.stripe.sync import StripeSync
from dunctl.stripe_permissions import key_hint


class StripeGateway:
    """dunctl's door to one Stripe account (test or live, as the key says)."""

    def __init__(self, api_key: str, *, api_base: str | None = None, account: str | None = None,
                 backfill_days: int = 60, **client_options):
        """`client_options` go to StripeRequests: key_env, max_requests_per_second, max_backoff_tries, sleep,
        clock, jitter, http_client, budget."""
        self.mode = "live" if api_key.startswith(("sk_live_", "rk_live_")) else "test"
        self.api_base = api_base
        self.account = account          # a connected account (Stripe-Account header), or None: the key's own
        self._client = StripeRequests(api_key, api_base=api_base, account=account, **client_options)
        self._sync = StripeSync(self._client, backfill_days)

    @property
    def backfill_days(self) -> int:
        """How far back a backfill lists invoices (stripe.backfill_days)."""
        return self._sync.backfill_days

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
        return self._sync.run(cursor, now, full)

    def sync_subscriptions(self, after: str | None = None) -> Iterator[tuple[SyncBatch, str | None]]:
        return self._sync.subscriptions(after)

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
        data = self._client.fetch(kind, object_id) if kind == "invoice" else \
            self._client.call(f"read {kind} {object_id}", (kind, "read"), self._client.v1.subscriptions.retrieve,
                              object_id).to_dict()
        return data if done(data) else None

    def get_invoice(self, invoice_id: str) -> Invoice:
        """Re-read with the same expansions as the sync (subscription, customer) and every line, so the re-read
        never loses what the sync knew (the subscription, which lines are metered)."""
        data = self._client.fetch("invoice", invoice_id)
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
            def read():
                return self._client.call(f"read subscription {subscription_id}", ("subscription", "read"),
                                         self._client.v1.subscriptions.retrieve, subscription_id)

            # Refused (already cancelled?): read. A 5xx or no answer may have cancelled it: a read that fails
            # then leaves it unknown (WriteUncertain), never a failed try to make again.
            current = self._client.read_back(exc, read) if exc.code in ("server_error", "no_answer") else read()
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
