"""The gateway contract, run against the Stripe gateway talking to the fake Stripe server over HTTP."""

from __future__ import annotations

from datetime import datetime

import pytest

from dunctl.stripe.gateway import StripeGateway
from tests.fakestripe import TEST_KEY, FakeStripe, fake_stripe  # noqa: F401  (fixture)
from tests.gateway_contract import GatewayContract


class StripeDriver:
    """Scripts the fake Stripe account; the gateway sees it only through the stripe SDK."""

    def __init__(self, fake: FakeStripe):
        self.fake = fake
        self.gateway = StripeGateway(TEST_KEY, api_base=fake.url, sleep=lambda seconds: None)

    def fail_invoice(self, *, amount: int, currency: str, decline_code: str | None = "insufficient_funds",
                     payment_method_type: str = "card", at: datetime, customer_email: str = "a@example.com") -> str:
        return self.fake.fail_invoice(amount=amount, currency=currency, decline_code=decline_code,
                                      payment_method_type=payment_method_type, email=customer_email, at=at)

    def customer_pays(self, invoice_id: str, at: datetime) -> None:
        self.fake.customer_pays(invoice_id, at=at)

    def next_payment_succeeds(self, invoice_id: str, succeeds: bool, decline_code: str | None = None) -> None:
        self.fake.next_payment_succeeds(invoice_id, succeeds, decline_code)

    def usage_subscription(self, *, currency: str, usage: int) -> str:
        customer = self.fake.add_customer("usage@example.com")
        subscription = self.fake.add_subscription(customer, currency=currency, metered=True)
        self.fake.set_usage(subscription, usage)      # quantity, at the metered price's unit amount
        return subscription


class TestStripeGatewayContract(GatewayContract):
    @pytest.fixture
    def driver(self, fake_stripe):
        return StripeDriver(fake_stripe)
