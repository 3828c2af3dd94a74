"""The notice store (`ledger.notices`), on a real file: a notice is planned once per (kind, object, period,
offset), cancelled or superseded while it waits, and its planner reads the card the next payment will use."""

from datetime import timedelta

import pytest

from dunctl.model import Customer, PaymentMethod, Subscription, SyncBatch
from tests.helpers import T0
from tests.test_ledger import ledger   # the fixture


def plan(ledger, offset: str, kind: str = "usage_alert", period: str = "2026-11") -> bool:
    return ledger.notices.plan(kind=kind, object_id="sub_1", period=period, offset=offset, customer_id="cus_1",
                               subscription_id="sub_1", due_at=T0, now=T0, key=f"k-{kind}-{offset}", data={})


def land_subscription(ledger, subscription_card: str | None) -> None:
    """A sync batch as the tick lands it: the sync store's part, then the notices' part."""
    batch = SyncBatch(
        customers=[Customer(id="cus_1", name="Ada", email="ada@example.com", default_payment_method_id="pm_c")],
        payment_methods=[PaymentMethod("pm_c", "cus_1", "card", "visa", "4242", 8, 2030),
                         PaymentMethod("pm_s", "cus_1", "card", "amex", "0005", 9, 2031)],
        subscriptions=[Subscription("sub_1", "cus_1", "active", default_payment_method_id=subscription_card)])
    with ledger.transaction():
        ledger.sync.apply_batch(batch, T0)
        ledger.notices.apply_batch(batch, T0)


def test_a_notice_is_planned_once(ledger):
    assert plan(ledger, "50%") is True
    assert plan(ledger, "50%") is False
    assert ledger.notices.id_of("usage_alert", "sub_1", "2026-11", "50%") is not None


def test_only_the_highest_waiting_usage_alert_is_sent_and_cancelled_ones_never(ledger):
    plan(ledger, "50%"), plan(ledger, "80%"), plan(ledger, "30d", kind="upcoming_renewal")
    ledger.notices.supersede_usage_alerts("sub_1", "2026-11", "80%", T0)
    keep = {ledger.notices.id_of("usage_alert", "sub_1", "2026-11", "80%")}
    assert ledger.notices.cancel("sub_1", keep, T0 + timedelta(hours=1), "renewal moved") == 1
    statuses = {n["offset"]: n["status"] for n in ledger.notices.of_customer("cus_1")}
    assert statuses == {"50%": "skipped", "80%": "pending", "30d": "cancelled"}
    assert [n["offset"] for n in ledger.due_notices(T0)] == ["80%"]


@pytest.mark.parametrize("subscription_card, expected", [(None, "visa"), ("pm_s", "amex")])
def test_the_planner_reads_the_card_the_next_payment_uses(ledger, subscription_card, expected):
    land_subscription(ledger, subscription_card)
    assert ledger.notices.subject("sub_1")["payment_method"]["brand"] == expected
    assert ledger.subscriptions_to_plan(T0) == ["sub_1"]


def test_the_preview_a_planning_stores_is_read_back_without_parsing_it_again(ledger):
    """A metered subscription's next planning reads the usage preview its last one stored (2,242 looks in a demo):
    the same value, not parsed again while the stored text is the same; another text is parsed (issue #25)."""
    land_subscription(ledger, None)
    ledger.conn.execute("UPDATE subscriptions SET usage_based = 1")
    preview = {"amount_due": 5000, "currency": "usd", "lines": []}
    ledger.notices.planned([("sub_1", T0 + timedelta(days=1), preview, None)], T0)
    assert ledger.notices.preview(ledger.notices.subject("sub_1")) is preview
    ledger.conn.execute("""UPDATE subscriptions SET usage_preview = '{"amount_due":6000}'""")
    assert ledger.notices.preview(ledger.notices.subject("sub_1")) == {"amount_due": 6000}
    ledger.conn.execute("UPDATE subscriptions SET usage_based = 0")
    assert ledger.notices.preview(ledger.notices.subject("sub_1")) is None
