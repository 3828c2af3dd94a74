"""What a tick that only plans pre-dunning notices costs beyond an idle one (issue #25, the demo's CPU: 764 of its
1,560 ticks do nothing else, at 18 statements each against an idle tick's 4.8)."""

from __future__ import annotations

import random
from datetime import timedelta

from dunctl.clock import from_iso
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.notices import planner
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, starter, traced
from tests.test_notices import DAY
from tests.test_notices_usage_look import _next_look, world  # noqa: F401  (fixture: usage alerts at 50 and 100%)


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


def _bisected(percent_at, target: float, horizon: float) -> float:
    """The bisection next_usage_check ran on every look before (planner._next_check's loop, as it was)."""
    low, high = 0.0, horizon
    while high - low > 60:
        middle = (low + high) / 2
        low, high = (low, middle) if percent_at(middle) >= target else (middle, high)
    return high


def test_the_next_usage_look_of_a_straight_line_is_the_point_the_bisection_found():
    rng = random.Random(25)
    for _ in range(400):
        expected, fee = rng.randint(1000, 50000), rng.randint(0, 5000)
        metered, elapsed, length = rng.randint(0, 60000), rng.randint(0, 40) * 21600 + rng.randint(0, 59), 2592000
        surge = rng.choice([1.5, 2, 3])
        percent_at, speed = planner._usage_curve(metered, fee, expected, T0, T0 + timedelta(seconds=length),
                                                 T0 + timedelta(seconds=min(elapsed, length - 1)), surge, False, 25)
        horizon = float(rng.randint(3600, length))
        target = rng.choice([50, 75, 100, 150, 300])
        if not percent_at(0.0) < target <= percent_at(horizon):
            continue
        near = (target * expected / 100 - fee - metered) / speed
        assert planner._first_point(percent_at, target, horizon, near) == _bisected(percent_at, target, horizon)
        # however far off the line's own answer, the grid's point is the same
        assert planner._first_point(percent_at, target, horizon, near * rng.choice([0.5, 2])) == \
            _bisected(percent_at, target, horizon)


def test_reading_the_subscriptions_due_for_planning_sorts_nothing(tmp_path):
    ledger = Ledger.open(tmp_path / "dunctl.db")
    now = from_iso("2026-11-02T11:00:00Z")
    statements = [s for s in traced(ledger, lambda: ledger.notices.due_subjects(now, 101)) if s.startswith("SELECT")]
    plans = [row[3] for s in statements for row in ledger.conn.execute("EXPLAIN QUERY PLAN " + s)]
    assert plans and not [step for step in plans if "TEMP B-TREE" in step]   # was two sorts: by id, then each row
    ledger.close()


def test_the_next_usage_look_kept_for_a_preview_is_not_given_for_another_moment_or_history(tmp_path):
    config = load_config(starter(tmp_path, ledger=False)).file.notices
    preview = {"currency": "usd", "amount_due": 3000, "period_start": "2026-11-01T00:00:00Z",
               "period_end": "2026-12-01T00:00:00Z", "lines": [{"amount": 1000, "metered": True}]}

    def subject(checked: str, paid: list[int]) -> dict:
        return {"subscription": {"usage_checked_at": checked}, "paid_amounts": paid}

    first = planner.next_usage_check(subject("2026-11-05T00:00:00Z", [10000] * 3), config, preview)
    assert planner.next_usage_check(subject("2026-11-05T00:00:00Z", [10000] * 3), config, preview) == first
    later = planner.next_usage_check(subject("2026-11-10T00:00:00Z", [10000] * 3), config, preview)
    smaller = planner.next_usage_check(subject("2026-11-05T00:00:00Z", [4000] * 3), config, preview)
    assert later > first and smaller < first
    assert later == planner._next_usage_check(subject("2026-11-10T00:00:00Z", [10000] * 3), config, preview)
    assert smaller == planner._next_usage_check(subject("2026-11-05T00:00:00Z", [4000] * 3), config, preview)
