"""The gateway contract, run against the simulated account behind `dunctl demo` and `dunctl simulate`."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.population import SimCustomer
from tests.gateway_contract import T0, GatewayContract


class SimulatedDriver:
    """Scripts the simulated account through its hooks; customers do nothing by themselves."""

    def __init__(self):
        self.gateway = SimulatedAccount([], seed=0, start=T0, customers_respond=False)

    def fail_invoice(self, *, amount: int, currency: str, decline_code: str | None = "insufficient_funds",
                     payment_method_type: str = "card", at: datetime, customer_email: str = "a@example.com") -> str:
        return self.gateway.script_failure(amount, currency, decline_code, payment_method_type, at, customer_email)

    def customer_pays(self, invoice_id: str, at: datetime) -> None:
        self.gateway.script_payment(invoice_id, at)

    def next_payment_succeeds(self, invoice_id: str, succeeds: bool, decline_code: str | None = None) -> None:
        self.gateway.script_next_payment(invoice_id, succeeds, decline_code)

    def usage_subscription(self, *, currency: str, usage: int) -> str:
        # The simulation draws a period's usage from its assumptions around three fifths of the plan's amount
        # (SimulatedAccount._usage): a plan of that size, ten days into its first period.
        customer = SimCustomer(id="cus_usage", kind="b2b", tier="business", name="Usage Co", email="u@usage.test",
                               billing_email=None, phone=None, currency=currency, timezone="UTC", locale="en",
                               method_type="card", brand="visa", interval="month", usage_based=True,
                               base_amount=usage * 5 // 3, anchor=timedelta(0), subscription_id="sub_usage",
                               payment_method_id="pm_usage")
        self.gateway = SimulatedAccount([customer], seed=0, start=T0, customers_respond=False)
        self.gateway.advance_to(T0 + timedelta(days=10))
        return customer.subscription_id


class TestSimulatedAccountContract(GatewayContract):
    @pytest.fixture
    def driver(self):
        return SimulatedDriver()
