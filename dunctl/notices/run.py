"""A tick's notice work, after the cases' own: settle orphaned claims, plan the subscriptions sync changed
(fetching metered usage previews within budget), then hand every notice due now to the tick's executor.

An idle tick costs two indexed queries here: subscriptions due for planning, notices due for sending; the planner
and the message code load only when one of them returns something."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dunctl.ledger.journal import NOTICES_JOURNAL

if TYPE_CHECKING:   # the tick runs the notices, never the other way round: only its types are named here
    from dunctl.effect import Effect
    from dunctl.tick.context import TickContext
    from dunctl.tick.result import TickResult


def run_notices(ctx: TickContext, result: TickResult) -> list[Effect]:
    """Pre-dunning's part of a tick, after the cases' due work: the notices due now, for the tick's executor to
    send."""
    if ctx.waits("claimed_notices"):
        ctx.ledger.journal(NOTICES_JOURNAL).settle(ctx.now)
    if not ctx.config.file.notices.enabled:
        return []
    if ctx.waits("plan"):
        from dunctl.notices.planning import plan_changed   # lazy: see dunctl/lazy.py

        plan_changed(ctx, result)
    return due_effects(ctx) if ctx.waits("notices") else []


def reopen_would_notices(ctx: TickContext) -> int:
    """Monitor -> live: the notices monitor mode recorded as `would` that are still useful are pending again, due
    now, and go through the executor like any other (quiet hours, contact policy, re-check before sending). Call
    inside a transaction."""
    from dunctl.notices.planner import reopen_after_monitor   # lazy: see dunctl/lazy.py

    reopened = reopen_after_monitor(ctx.ledger.notices.would_groups(), ctx.now)
    if reopened:
        ctx.ledger.notices.forget_bases()    # a planning may cancel them: the next ones write what they call for
    for notice_id in reopened:
        ctx.ledger.notices.reopen(notice_id, ctx.now, "planned in monitor mode (would) and still useful when the "
                                                     "config switched to live: sent once")
    return len(reopened)


def due_effects(ctx: TickContext) -> list:
    """Notices due now. Like dunning's customer messages, at send time (whenever the tick runs): inside the
    customer's quiet hours they wait for the window to end, and the contact policy (`contact:`) counts them with
    the customer's dunning messages and holds them until the earliest allowed time."""
    effects = []
    sending: dict[str, list] = {}     # customer -> notices admitted in this tick
    due = ctx.ledger.due_notices(ctx.now)
    if not due:
        return effects
    from dunctl.notices.effects import notice_effect   # lazy: see dunctl/lazy.py
    from dunctl.planner import after_quiet_hours, in_quiet_hours   # lazy: see dunctl/lazy.py

    with ctx.ledger.transaction():
        # nothing in this loop changes their zones or their contacts (deferring a notice leaves it unsent)
        zones = ctx.ledger.sync.time_zones(notice["customer_id"] for notice in due)
        contacts = _contacts(ctx, [notice["customer_id"] for notice in due])
        for notice in due:
            customer_id = notice["customer_id"]
            zone = zones.get(customer_id)
            if in_quiet_hours(ctx.now, ctx.settings, zone):
                ctx.ledger.notices.defer(notice["id"], after_quiet_hours(ctx.now, ctx.settings, zone),
                                        "waiting for quiet hours to end in the customer's time zone")
                continue
            held = _contact_hold(ctx, contacts.get(customer_id, []), len(sending.get(customer_id, [])))
            if held is not None:
                ctx.ledger.notices.defer(notice["id"], *held)
                continue
            sending.setdefault(customer_id, []).append(notice)
            effects.append(notice_effect(ctx, notice))
    return effects


def _contacts(ctx: TickContext, customer_ids: list[str]) -> dict[str, list[datetime]]:
    """When each of these customers was sent a message in the last 7 days (dunning messages and notices alike), in
    one query for all; none read when no contact policy is set."""
    if ctx.settings.contact is None:
        return {}
    statuses = ("done", "would") if ctx.settings.monitor else ("done",)     # monitor plans as live would send
    return ctx.ledger.cases.contacts_of(customer_ids, ctx.now - timedelta(days=7), statuses)


def _contact_hold(ctx: TickContext, sent: list[datetime], admitted: int):
    """(until, why) when the contact policy holds a notice to this customer now (`sent`: its `_contacts`), else
    None."""
    policy = ctx.settings.contact
    if policy is None:
        return None
    recent = sent + [ctx.now] * admitted
    if recent and ctx.now - recent[-1] < policy.min_gap:
        return recent[-1] + policy.min_gap, "contact policy: at least the minimum gap between messages"
    week = [t for t in recent if ctx.now - t < timedelta(days=7)]
    if len(week) >= policy.max_per_week:
        return week[-policy.max_per_week] + timedelta(days=7), \
            f"contact policy: {len(week)} messages to this customer in the last 7 days"
    return None
