"""Planning pre-dunning notices in a tick (notices/run.py runs it when a subscription is due for it): read the
subscriptions due, fetch the usage previews due within budget, decide each one's notices (planner.py, pure), and
write what changed in a few statements for all.

Apart from run.py, which every tick imports: the planner loads with this module once, when something is due to be
planned, not with an import statement in each of its functions at every subscription (three a planning, 7,600 in
a demo, 1-2 us each)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dunctl.clock import from_iso, iso
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.notices import USAGE_ALERT
from dunctl.notices.planner import PENDING, next_usage_check, plan_notices, usage_preview_due

if TYPE_CHECKING:   # the tick runs the notices, never the other way round: only its types are named here
    from dunctl.tick.context import TickContext
    from dunctl.tick.result import TickResult


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
    if not decision.plans:
        return _NO_NOTICES     # most plannings (a usage look that crossed nothing, a card not expiring)
    keys = sorted(f"{p.kind}\x1f{p.object_id}\x1f{p.period}\x1f{p.offset}" for p in decision.plans)
    return hashlib.sha1("\x1e".join(keys).encode(), usedforsecurity=False).hexdigest()[:16]


_NO_NOTICES = hashlib.sha1(b"", usedforsecurity=False).hexdigest()[:16]


def _record(ctx: TickContext, decided: list[_Decided]) -> None:
    """Write what planning decided, in one transaction and a few statements for all: each notice once under its
    key, the highest usage alert superseding the lower ones still waiting, the ones no longer called for
    cancelled, and the previews with when each subscription is planned again."""
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
