"""What planning pre-dunning notices costs per subscription (issue #25, the demo's CPU): a tick reads the
subscriptions it plans together, not four queries and more for each, and writes their plans in a few statements."""

from __future__ import annotations

from datetime import datetime

import pytest

from dunctl.clock import iso
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, traced
from tests.test_notices import HOUR, World


@pytest.fixture
def world(tmp_path, fake_stripe, smtp_server):
    w = World(tmp_path, fake_stripe, smtp_server)
    yield w
    w.ledger.close()


def _selects_planning(w: World, subscriptions: list[str], now: datetime) -> int:
    """The SELECT statements of a tick (no sync) that plans `subscriptions` again, as if sync had changed them."""
    with w.ledger.transaction():
        w.ledger.conn.executemany("UPDATE subscriptions SET notices_due_at = ? WHERE id = ?",
                                  [(iso(now), sub) for sub in subscriptions])
    return sum(1 for s in traced(w.ledger, lambda: w.tick(now, sync=False)) if s.lstrip().upper().startswith("SELECT"))


def test_planning_six_subscriptions_reads_the_ledger_in_as_many_queries_as_planning_two(world):
    subs = [world.customer_with_card(email=f"c{n}@example.com")[2] for n in range(6)]
    world.tick(T0)
    assert world.notices("card_expiring")      # each card's expiry is planned: planning has work to read
    two = _selects_planning(world, subs[:2], T0 + HOUR)
    six = _selects_planning(world, subs, T0 + 2 * HOUR)
    assert six == two                          # was 7 more a subscription (52 against 24)
