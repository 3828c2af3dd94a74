"""A tick's notice work, after the cases' own: settle orphaned claims, plan the subscriptions sync changed
(fetching metered usage previews within budget), then hand every notice due now to the tick's executor.

An idle tick costs two indexed queries here: subscriptions due for planning, notices due for sending; the planner
and the message code load only when one of them returns something."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from dunctl.clock import from_iso, iso
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.ledger.journal import NOTICES_JOURNAL
from dunctl.notices import USAGE_ALERT

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


# What waits (dunctl.ledger.quiet.Waiting) that _record's writes can change: subscriptions due to be planned, and
# notices due when it writes notices (added pending, cancelled, superseded: never claimed, never an action).
_NEXT_PLANNING = frozenset({"plan"})
_PLANNING_CHANGES = frozenset({"plan", "notices"})

# Subscriptions whose plans one transaction writes: a commit per planned subscription was a third of planning.
PLANNED_PER_COMMIT = 100


@dataclass
class _Decided:
    """One subscription planned, not yet written: its notices (None: the same as its last planning's), the preview
    fetched for them, when to plan again, the digest of its notices (_basis)."""
    sub_id: str
    customer_id: str
    decision: object
    fetched: dict | None
    next_at: datetime | None
    previewed: int
    basis: str | None


def plan_changed(ctx: TickContext, result: TickResult) -> None:
    """Plan the subscriptions due for it, within the tick's budget: those left stay due, first in the next tick.
    A tick plans a few (usage looks, what its sync changed): they are read with their subjects in one query; a
    backlog (a first sync) is listed first, then read a hundred at a time."""
    subjects = ctx.ledger.notices.due_subjects(ctx.now, PLANNED_PER_COMMIT + 1)
    if not subjects:
        return
    due = list(subjects)
    if len(due) > PLANNED_PER_COMMIT:
        due, subjects = ctx.ledger.subscriptions_to_plan(ctx.now), {}
    previews, decided = 0, []
    try:
        for n, sub_id in enumerate(due):
            if ctx.over_budget():
                result.deferred += len(due) - n
                return
            if n % PLANNED_PER_COMMIT == 0 and sub_id not in subjects:
                # read together: one subscription's plans never change what another's subject reads
                subjects = ctx.ledger.notices.subjects(due[n:n + PLANNED_PER_COMMIT])
            one = _decide(ctx, subjects.get(sub_id), result, previews)
            if one is not None:
                previews += one.previewed
                decided.append(one)
            if len(decided) >= PLANNED_PER_COMMIT:
                _record(ctx, decided)
                decided = []
    finally:
        _record(ctx, decided)      # what was planned is kept, whatever stopped the loop


def _decide(ctx: TickContext, subject: dict | None, result: TickResult, previews: int) -> _Decided | None:
    """Plan one subscription's notices, fetching a usage preview first when one is due (None: left for the next
    tick, or gone). Reads and the preview only: _record writes."""
    from dunctl.notices.planner import plan_notices, usage_preview_due   # lazy: see dunctl/lazy.py

    if subject is None:
        return None
    config = ctx.config.file.notices
    sub_id = subject["subscription"]["id"]
    preview = ctx.ledger.notices.preview(subject)
    fetched, tried = None, 0
    due = usage_preview_due(subject, config, ctx.now, preview)
    if due and ctx.gateway is not None:
        if previews >= config.usage.max_previews_per_tick:
            return None   # stays due: the next tick takes it first
        fetched, tried = _preview(ctx, sub_id, result), 1
        if fetched is not None:
            # as record_usage_preview, in _record's transaction, leaves it
            subject["subscription"] = {**subject["subscription"], "usage_checked_at": iso(ctx.now)}
            preview = fetched
    decision = plan_notices(subject, config, ctx.now, preview)
    basis = _basis(decision)
    return _Decided(sub_id, subject["subscription"]["customer_id"],
                    None if basis == subject["subscription"].get("notices_basis") else decision, fetched,
                    _next_planning(ctx, subject, preview, late=due and fetched is None), tried, basis)


def _basis(decision) -> str:
    """A digest of the notices a planning calls for, by their (kind, object, period, offset) keys.

    Equal to the last planning's, the planning's writes would change nothing, so _record skips them: the last one
    added each of these notices (they exist, whatever has become of them since), superseded the usage alerts below
    the same highest one, and cancelled the pending ones it did not call for; and only a planning adds pending
    notices (or the switch to live, which forgets every basis first)."""
    keys = sorted(f"{p.kind}\x1f{p.object_id}\x1f{p.period}\x1f{p.offset}" for p in decision.plans)
    return hashlib.sha1("\x1e".join(keys).encode(), usedforsecurity=False).hexdigest()[:16]


def _record(ctx: TickContext, decided: list[_Decided]) -> None:
    """Write what planning decided, in one transaction and a few statements for all: each notice once under its
    key, the highest usage alert superseding the lower ones still waiting, the ones no longer called for
    cancelled, and the previews with when each subscription is planned again."""
    from dunctl.notices.planner import PENDING   # lazy: see dunctl/lazy.py

    if not decided:
        return
    store = ctx.ledger.notices
    whole = [one for one in decided if one.decision is not None]   # the others: as their last planning (_basis)
    before = ctx.ledger.conn.total_changes
    with ctx.ledger.transaction():
        if whole:
            store.plan_many([(one.sub_id, one.customer_id, plan) for one in whole for plan in one.decision.plans],
                            ctx.now)
            store.supersede_usage_alerts_many([(one.sub_id, plan.period, plan.offset) for one in whole
                                               for plan in one.decision.plans
                                               if plan.kind == USAGE_ALERT and plan.status == PENDING], ctx.now)
            store.cancel_unplanned({one.sub_id: ({(p.kind, p.object_id, p.period, p.offset)
                                                  for p in one.decision.plans},
                                                 one.decision.why_none or "no longer called for") for one in whole},
                                   ctx.now)
        store.planned([(one.sub_id, one.next_at, one.fetched, one.basis) for one in decided], ctx.now)
    ctx.wrote(before, _PLANNING_CHANGES if whole else _NEXT_PLANNING)


def _next_planning(ctx: TickContext, subject: dict, preview: dict | None, late: bool):
    """Metered subscriptions are planned again at their next usage check (sooner the closer their usage is to an
    alert: next_usage_check), or a check_every after a preview that was due and not fetched (it failed, or the
    tick has no gateway); the others when sync changes them."""
    from dunctl.notices.planner import next_usage_check   # lazy: see dunctl/lazy.py

    sub = subject["subscription"]
    usage = ctx.config.file.notices.usage
    if not usage.enabled or not sub.get("usage_based") or sub["status"] not in ("active", "trialing"):
        return None
    period_end = from_iso(sub.get("current_period_end"))
    if period_end is None or period_end <= ctx.now:
        return None                       # the renewal's sync plans it again
    if late or preview is None or not sub.get("usage_checked_at"):
        return ctx.now + usage.check_every
    return min(next_usage_check(subject, ctx.config.file.notices, preview) or period_end, period_end)


def _preview(ctx: TickContext, sub_id: str, result: TickResult) -> dict | None:
    try:
        preview = ctx.gateway.preview_invoice(sub_id)
    except GatewayAuthError:
        raise
    except GatewayError as exc:
        result.errors.append(f"usage preview of {sub_id} failed: {exc.message}")
        return None
    # built by hand, not with dataclasses.asdict: its deep copies were most of a simulated tick's time
    return {"subscription_id": preview.subscription_id, "currency": preview.currency,
            "amount_due": preview.amount_due, "period_start": iso(preview.period_start),
            "period_end": iso(preview.period_end), "request_id": preview.request_id,
            "lines": [{"description": line.description, "amount": line.amount, "quantity": line.quantity,
                       "metered": line.metered, "period_start": iso(line.period_start),
                       "period_end": iso(line.period_end), "subscription_item_id": line.subscription_item_id,
                       "price_id": line.price_id} for line in preview.lines]}


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
