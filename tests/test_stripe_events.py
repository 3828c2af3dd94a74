"""The parts of dunctl/stripe/ that need no server: the event handler table against the types the sync lists, the
sync cursor as stored, and the package's name next to the SDK's."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dunctl.stripe.cursor import CURSOR_VERSION, EVENT_WINDOW, Cursor
from dunctl.stripe.events import EVENT_HANDLERS, EVENT_TYPES, FAILURE_EVENTS, MAX_EVENT_TYPES, gather

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)


def test_the_handled_event_types_are_the_types_the_sync_lists_within_stripes_limit_of_20():
    # A handled type missing from the list is filtered out by Stripe; a listed type without a handler wastes one
    # of the 20 slots of the one request an idle sync makes.
    assert set(EVENT_HANDLERS) == set(EVENT_TYPES)
    assert len(EVENT_TYPES) == len(set(EVENT_TYPES)) <= MAX_EVENT_TYPES == 20
    assert FAILURE_EVENTS == {"invoice.payment_failed", "invoice.payment_action_required"}
    assert "payment_method.attached" in EVENT_TYPES and "invoice.payment_succeeded" not in EVENT_TYPES


def test_an_event_of_a_type_not_followed_changes_nothing():
    event = {"id": "evt_1", "type": "invoice.payment_succeeded", "created": 1_790_000_000,
             "data": {"object": {"id": "in_1", "object": "invoice", "status": "paid"}}}
    found = gather([event], reader=None)
    assert not found.latest and not found.batch.invoices and not found.batch.signals


def test_inside_dunctl_import_stripe_is_still_the_sdk():
    """dunctl/stripe/ is `dunctl.stripe`: absolute imports in its modules reach stripe-python, not the package."""
    import stripe

    import dunctl.stripe
    import dunctl.stripe.client

    assert dunctl.stripe.client.stripe is stripe and hasattr(stripe, "StripeClient")
    assert dunctl.stripe is not stripe and stripe.__name__ == "stripe"


# -- the cursor ----------------------------------------------------------------------------------------------------


def test_a_cursor_is_stored_with_the_keys_of_its_phase_and_reads_back_the_same():
    backfill = Cursor.backfill(since=1_780_000_000, now=NOW)
    backfill.after, backfill.pages = "in_9", 2
    stored = backfill.to_dict()
    assert stored == {"v": CURSOR_VERSION, "phase": "backfill", "event": None, "event_created": None, "edge": [],
                      "settled": False, "since": 1_780_000_000, "started_at": "2026-11-02T09:00:00Z",
                      "after": "in_9", "pages": 2}
    assert Cursor.load(stored) == backfill
    events = backfill.backfilled()
    assert events.to_dict() == {"v": CURSOR_VERSION, "phase": "events", "event": None, "event_created": None,
                                "edge": [], "settled": False, "since": 1_780_000_000,
                                "checked_at": "2026-11-02T09:00:00Z"}
    assert Cursor.load(events.to_dict()) == events


@pytest.mark.parametrize("stored", [None, {}, {"phase": "events", "since": 1}, {"v": CURSOR_VERSION + 1}])
def test_no_cursor_or_another_versions_means_a_backfill(stored):
    assert Cursor.load(stored) is None


def test_a_cursor_checked_longer_ago_than_stripe_keeps_events_is_stale():
    cursor = Cursor.backfill(since=0, now=NOW).backfilled()
    assert not cursor.stale(NOW + EVENT_WINDOW)
    assert cursor.stale(NOW + EVENT_WINDOW + timedelta(seconds=1))


def test_the_cursors_second_is_listed_again_until_it_settles():
    second = int(NOW.timestamp())
    cursor = Cursor(since=0)
    listed = [{"id": "evt_a", "created": second}, {"id": "evt_b", "created": second}]
    young = cursor.advanced(listed, NOW, listed_at=NOW + timedelta(seconds=5))
    assert young.listing() == ({"gte": second}, {"evt_a", "evt_b"})
    settled = young.advanced([], NOW, listed_at=NOW + timedelta(minutes=2))
    assert settled.listing() == ({"gt": second}, set()) and settled.edge == []
