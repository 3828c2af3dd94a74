"""What a tick that only plans pre-dunning notices costs beyond an idle one (issue #25, the demo's CPU: 764 of its
1,560 ticks do nothing else, at 18 statements each against an idle tick's 4.8)."""

from __future__ import annotations

from datetime import datetime

import pytest

from dunctl.clock import from_iso
from dunctl.ledger import Ledger
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, traced
from tests.test_notices import DAY, World

SETTINGS = {"notices.usage.expected": {"usd": 10000}, "notices.usage.thresholds": [50, 100],
            "notices.usage.pace": False}


@pytest.fixture
def world(tmp_path, fake_stripe, smtp_server):
    w = World(tmp_path, fake_stripe, smtp_server, **SETTINGS)
    yield w
    w.ledger.close()


def _next_look(w: World, sub: str) -> datetime:
    return from_iso(w.ledger.conn.execute("SELECT notices_due_at FROM subscriptions WHERE id = ?",
                                          [sub]).fetchone()[0])


def test_a_usage_look_that_plans_nothing_new_asks_nothing_again_after_writing_its_preview(world, fake_stripe):
    _, _, sub = world.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=T0 + 30 * DAY)
    fake_stripe.set_usage(sub, 100)
    world.tick(T0)
    at = _next_look(world, sub)
    ran = traced(world.ledger, lambda: setattr(world, "result", world.tick(at, sync=False)))
    commits = [n for n, s in enumerate(ran) if s == "COMMIT"]
    assert any("usage_preview" in s for s in ran[:commits[-1]])       # the look was taken, its preview written
    # what waits was looked at before planning; planning moved only the subscription's next look: the notices
    # due and the actions waiting for a person are as they were (was a query each after the commit)
    assert [s for s in ran[commits[-1] + 1:] if s.startswith("SELECT")] == []
    assert world.result.unknown_waiting == 0 and world.result.actions == []


def test_a_usage_look_that_crosses_an_alert_still_sends_it_in_the_same_tick(world, fake_stripe):
    _, _, sub = world.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=T0 + 30 * DAY)
    fake_stripe.set_usage(sub, 100)
    world.tick(T0)
    fake_stripe.set_usage(sub, 4000)                  # $20 fee + $40: 60% of the usual $100
    result = world.tick(_next_look(world, sub), sync=False)
    assert world.notices("usage_alert") == {"usage_alert@50%": "done"}
    assert [a.status for a in result.actions] == ["done"]


def test_the_subscriptions_due_for_planning_come_first_due_first_then_by_id(tmp_path):
    ledger = Ledger.open(tmp_path / "dunctl.db")
    due = {"sub_a": "2026-11-02T10:00:00Z", "sub_b": "2026-11-02T09:00:00Z", "sub_c": "2026-11-02T10:00:00Z",
           "sub_d": "2026-11-02T08:00:00Z", "sub_e": "2026-11-02T12:00:00Z"}
    with ledger.transaction():
        ledger.conn.executemany("INSERT INTO subscriptions(id, customer_id, status, notices_due_at) "
                                "VALUES (?, 'cus_1', 'active', ?)", list(due.items()))
    # the query reads them in another order (by id): the store orders them, a tick plans them in this order
    assert list(ledger.notices.due_subjects(from_iso("2026-11-02T11:00:00Z"), 3)) == ["sub_d", "sub_b", "sub_a"]
    assert list(ledger.notices.due_subjects(from_iso("2026-11-02T11:00:00Z"), 10)) == ["sub_d", "sub_b", "sub_a",
                                                                                        "sub_c"]
    ledger.close()
