"""What pre-dunning costs (issue #25, cause 1): planning a subscription reads its paid invoices through an index,
metered subscriptions are previewed at a cadence that follows how close their usage is to an alert, and the
planning loop stops at the tick's budget."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dunctl.ledger import Ledger
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, failed_invoice, pay, seed, traced
from tests.test_notices import DAY, HOUR, PREVIEW, World


def _statements_of(ledger: Ledger, call) -> list[str]:
    """The SQL statements `call` runs, with their parameters inlined (sqlite3's trace callback)."""
    return [s for s in traced(ledger, call) if s.lstrip().upper().startswith("SELECT")]


def test_planning_a_subscription_reads_its_paid_invoices_through_an_index(tmp_path):
    ledger = Ledger.open(tmp_path / "dunctl.db")
    invoices = [failed_invoice(f"in_{n}", customer_id=f"cus_{n % 3}", subscription_id=f"sub_{n % 3}",
                               failed_at=T0 + n * timedelta(days=1)) for n in range(9)]
    seed(ledger, *invoices)
    for invoice in invoices[:5]:
        pay(ledger, invoice, T0 + timedelta(days=10))
    statements = _statements_of(ledger, lambda: ledger.notices.subject("sub_1"))
    assert any("FROM invoices" in s for s in statements)
    plans = {s: " | ".join(row[3] for row in ledger.conn.execute("EXPLAIN QUERY PLAN " + s)) for s in statements}
    scans = {s: plan for s, plan in plans.items() if "SCAN invoices" in plan}
    assert scans == {}
    assert ledger.notices.subject("sub_1")["paid_amounts"] == [4900, 4900]


# -- usage checks follow how close usage is to an alert ---------------------------------------------------------


@pytest.fixture
def world(tmp_path, fake_stripe, smtp_server):
    worlds = []

    def make(**settings) -> World:
        worlds.append(World(tmp_path, fake_stripe, smtp_server, **{
            "notices.usage.expected": {"usd": 10000}, "notices.usage.thresholds": [50, 75, 100],
            "notices.usage.pace": False, **settings}))
        return worlds[-1]

    yield make
    for w in worlds:
        w.ledger.close()


def test_steady_usage_is_previewed_as_it_nears_an_alert_and_each_alert_still_goes_out_in_time(world, fake_stripe):
    w = world()
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=T0 + 30 * DAY)
    alerts = []
    for tick in range(33):                                       # every 6 hours for 8 days
        fake_stripe.set_usage(sub, 1000 * tick // 4)             # $10 a day on top of the $20 fee
        w.tick(T0 + tick * 6 * HOUR)
        alerts.append(len(w.subjects()))
    # $100 usual: 50% ($50) is reached on day 3, 75% on day 5.5, 100% on day 8, each sent in the tick that sees it
    assert [alerts.index(n) for n in (1, 2, 3)] == [12, 22, 32]
    assert fake_stripe.count(PREVIEW) <= 16                      # was one per 6 hours: 33


def test_usage_far_from_any_alert_is_previewed_a_few_times_a_period(world, fake_stripe):
    w = world()
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=T0 + 30 * DAY)
    fake_stripe.set_usage(sub, 100)
    for tick in range(0, 30 * 24, 12):
        w.tick(T0 + tick * HOUR)
    assert w.subjects() == []
    assert fake_stripe.count(PREVIEW) <= 12                      # was one a tick: 60


def test_planning_notices_stops_at_the_ticks_budget_and_the_next_tick_goes_on(world, fake_stripe):
    w = world(**{"dunning.tick_budget": "1s"})
    for n in range(5):
        w.customer_with_card(exp=(12, 2030), metered=True, period_end=T0 + 30 * DAY, email=f"m{n}@example.com")
    fake_stripe.slow(PREVIEW, 0.4)                                # a slow Stripe: 5 previews take 2 s
    first = w.tick(T0)
    assert fake_stripe.count(PREVIEW) < 5 and first.deferred >= 1
    later = T0
    while w.ledger.subscriptions_to_plan(later) and later < T0 + HOUR:   # cron every 5 minutes
        later += 5 * timedelta(minutes=1)
        w.tick(later)
    assert fake_stripe.count(PREVIEW) == 5                        # each subscription once, none left out
    assert w.ledger.subscriptions_to_plan(later) == []
