"""A planning that calls for the notices its subscription's last one did writes nothing on the notices (issue #25,
the demo's CPU: 1,925 of its 2,242 usage looks, and 440 of its 525 re-plans after sync, planned again what they
had planned, in three statements on the notices each). One that calls for another notice still writes it."""

from __future__ import annotations

from datetime import datetime

import pytest
import yaml

from dunctl.clock import from_iso
from dunctl.config import load_config
from dunctl.notices.views import customer_history
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, traced
from tests.test_notices import DAY, HOUR, PREVIEW, World

SETTINGS = {"notices.usage.expected": {"usd": 10000}, "notices.usage.thresholds": [50, 100],
            "notices.usage.pace": False}


@pytest.fixture
def world(tmp_path, fake_stripe, smtp_server):
    w = World(tmp_path, fake_stripe, smtp_server, **SETTINGS)
    yield w
    w.ledger.close()


def _notice_statements(w: World, call, ran: list[str] | None = None) -> list[str]:
    """The statements `call` runs on the notices of a subscription (planning's writes and its cancel query); all
    of them in `ran`."""
    ran = [] if ran is None else ran
    ran += traced(w.ledger, call)
    return [s for s in ran if "INTO notices" in s or "UPDATE notices" in s
            or "FROM notices" in s and "subscription_id" in s]


def _next_look(w: World, sub: str) -> datetime:
    """When the subscription's usage is looked at next (planning stores it)."""
    return from_iso(w.ledger.conn.execute("SELECT notices_due_at FROM subscriptions WHERE id = ?",
                                          [sub]).fetchone()[0])


def test_a_usage_look_that_calls_for_no_new_notice_writes_only_its_preview(world, fake_stripe):
    _, _, sub = world.customer_with_card(exp=(11, 2026), metered=True, period_end=T0 + 30 * DAY)   # expires Dec 1
    fake_stripe.set_usage(sub, 100)
    world.tick(T0)
    assert world.notices("card_expiring") == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}
    previews = fake_stripe.count(PREVIEW)
    for _ in range(3):
        at = _next_look(world, sub)
        assert _notice_statements(world, lambda: world.tick(at, sync=False)) == []   # was 3 a look: the card
        # notices inserted again (each ignored), the pending ones selected to cancel those no longer called for
    assert fake_stripe.count(PREVIEW) == previews + 3     # each look still fetched its preview
    assert world.notices("card_expiring") == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}


def test_a_subscription_sync_changed_without_changing_its_notices_is_planned_without_writing_them(world,
                                                                                                    fake_stripe):
    cus, pm, sub = world.customer_with_card(exp=(11, 2026), period_end=T0 + 30 * DAY)
    world.tick(T0)
    assert world.notices("card_expiring") == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}
    fake_stripe.edit_payment_method(pm, phone="+15550100")          # synced: the subscription is planned again
    ran: list[str] = []
    statements = _notice_statements(world, lambda: world.tick(T0 + HOUR), ran)
    assert any('"-- customer"' in s and "subscriptions s" in s for s in ran)     # it was planned again
    # found with its subject in that one query: the due subscriptions are not listed first
    assert not [s for s in ran if s.startswith("SELECT id FROM subscriptions INDEXED BY subscriptions_notices_due")]
    assert statements == []              # was 2: the card notices inserted again (each ignored), the pending selected
    assert world.notices("card_expiring") == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}
    # the digest is planning's own: `customer show --json` shows the subscription's facts only
    assert "notices_basis" not in customer_history(world.ledger, cus).to_dict()["subscriptions"][0]


def test_a_usage_look_after_the_usage_rule_changed_plans_the_new_threshold(world, fake_stripe, tmp_path):
    _, _, sub = world.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=T0 + 30 * DAY)
    fake_stripe.set_usage(sub, 6000)               # $20 fee + $60: 80% of the usual $100
    world.tick(T0)
    assert world.notices("usage_alert") == {"usage_alert@50%": "done"}
    # the operator adds a 75% alert; usage has not moved: a look with the same preview now calls for it
    path = tmp_path / "dunctl.yaml"
    data = yaml.safe_load(path.read_text())
    data["notices"]["usage"]["thresholds"] = [50, 75, 100]
    path.write_text(yaml.safe_dump(data))
    world.config = load_config(path)
    world.tick(T0 + 10 * DAY, sync=False)
    assert world.notices("usage_alert") == {"usage_alert@50%": "done", "usage_alert@75%": "done"}
