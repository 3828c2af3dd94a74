"""What keeps simulations cheap without changing what they compute."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.assumptions import preset_assumptions
from dunctl.simulation.demo import DEFAULT_START, DemoChannels, _fast, prepare_demo, simulate_config
from dunctl.simulation.population import build_book


FAILING = dataclasses.replace(preset_assumptions("median"), invoice_failure_rate=0.8)   # a small book that acts


def test_a_simulated_ledger_never_waits_for_the_disk(tmp_path):
    """A simulation is rebuilt by re-running: its ledger stays at synchronous=OFF through every tick. A tick's light
    commit used to turn the next ordinary one back to FULL, an fsync per commit for the rest of the run."""
    config = load_config(prepare_demo(tmp_path / "demo", None))
    ledger = _fast(Ledger.open(config.ledger_path))
    try:
        outcome, _ = simulate_config(config, ledger, DemoChannels(config, {}), name="demo", customers=20, seed=3,
                                     start=DEFAULT_START, billing_days=4, assumptions=FAILING)
        assert outcome.actions > 0                                   # ticks that acted: light commits happened
        assert ledger.conn.execute("PRAGMA synchronous").fetchone()[0] == 0
    finally:
        ledger.close()


def test_the_simulated_account_finds_a_customers_invoices_without_reading_the_whole_book(tmp_path):
    """A pause, a cancellation, a new card and a recovered subscription each ask about one customer's (or one
    subscription's) invoices: the account keeps them apart, in the order they were made, as a scan of the
    whole book would give them (a scan per question made a 3,000-customer demo's pauses quadratic)."""
    account = SimulatedAccount(build_book(12, 3, FAILING), seed=3, start=DEFAULT_START, assumptions=FAILING)
    account.advance_to(DEFAULT_START + timedelta(days=40))
    book = account._invoices
    assert len(book) > 12
    for customer in {i.customer_id for i in book.values()}:
        assert book.of_customer(customer) == [i for i in book.values() if i.customer_id == customer]
    for subscription in {i.subscription_id for i in book.values()}:
        assert book.of_subscription(subscription) == [i for i in book.values() if i.subscription_id == subscription]
