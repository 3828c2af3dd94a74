"""A tick's notice work, after the cases' own: record orphaned claims as unknown, plan the subscriptions sync
changed (fetching metered usage previews within budget), then send every notice due now through the executor.

An idle tick costs two indexed queries here: subscriptions due for planning, notices due for sending; the planner
and the message code load only when one of them returns something."""

from __future__ import annotations

from datetime import timedelta

from dunctl.clock import from_iso, iso
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.notices import USAGE_ALERT
from dunctl.tick.context import TickContext
from dunctl.tick.result import TickResult


def run_notices(ctx: TickContext, result: TickResult) -> None:
    """Plan and send pre-dunning notices. Called once per tick, after the cases' due work."""
    mark_unknown(ctx)
    if not ctx.config.file.notices.enabled:
        return
    plan_changed(ctx, result)
    effects = due_effects(ctx)
    if effects:
        from dunctl.tick.executor import execute

        execute(ctx, effects, result)


def mark_unknown(ctx: TickContext) -> None:
    """Notices claimed by a tick that died before recording them: one never started was never sent (due again);
    one whose outcome the next send noted gets it (a failed one is due again); one started without an outcome was
    maybe sent, so never sent again."""
    with ctx.ledger.transaction():
        for notice in ctx.ledger.orphaned_notice_claims():
            started = notice["started_at"] is not None or not ctx.ledger.settles_by_started(notice["tick_id"])
            if not started or notice["outcome"] == "failed":
                ctx.ledger.release_notice_claim(notice["id"])
            elif notice["outcome"] is not None:
                ctx.ledger.record_notice_result(notice["id"], notice["outcome"], ctx.now,
                                                detail="recorded after the tick stopped, from the outcome noted "
                                                       "when the next notice started")
            else:
                ctx.ledger.record_notice_result(
                    notice["id"], "unknown", ctx.now,
                    error="the tick stopped while this notice was in flight; it may or may not have been sent and "
                          "will not be re-sent")


def reopen_would_notices(ctx: TickContext) -> int:
    """Monitor -> live: the notices monitor mode recorded as `would` that are still useful are pending again, due
    now, and go through the executor like any other (quiet hours, contact policy, re-check before sending). Call
    inside a transaction."""
    from dunctl.notices.planner import reopen_after_monitor   # loaded only on a switch to live

    reopened = reopen_after_monitor(ctx.ledger.would_notice_groups(), ctx.now)
    for notice_id in reopened:
        ctx.ledger.reopen_notice(notice_id, ctx.now, "planned in monitor mode (would) and still useful when the "
                                                     "config switched to live: sent once")
    return len(reopened)


def plan_changed(ctx: TickContext, result: TickResult) -> None:
    config = ctx.config.file.notices
    previews = 0
    due = ctx.ledger.subscriptions_to_plan(ctx.now)
    if not due:
        return
    from dunctl.notices.effects import _stored_preview
    from dunctl.notices.planner import PENDING, plan_notices, usage_preview_due

    for sub_id in due:
        subject = ctx.ledger.notice_subject(sub_id)
        if subject is None:
            continue
        preview = _stored_preview(subject)
        if ctx.gateway is not None and usage_preview_due(subject, config, ctx.now, preview):
            if previews >= config.usage.max_previews_per_tick:
                continue   # stays due: the next tick takes it first
            previews += 1
            fetched = _preview(ctx, sub_id, result)
            if fetched is not None:
                with ctx.ledger.transaction():
                    ctx.ledger.record_usage_preview(sub_id, fetched, ctx.now)
                subject["subscription"] = ctx.ledger.subscription(sub_id)   # the rest of the subject is as read
                preview = fetched
        decision = plan_notices(subject, config, ctx.now, preview)
        with ctx.ledger.transaction():
            keep = set()
            for plan in decision.plans:
                ctx.ledger.plan_notice(kind=plan.kind, object_id=plan.object_id, period=plan.period,
                                       offset=plan.offset, customer_id=subject["subscription"]["customer_id"],
                                       subscription_id=sub_id, due_at=plan.due_at, now=ctx.now, key=plan.key,
                                       data=plan.data, status=plan.status, detail=plan.detail)
                keep.add(ctx.ledger.notice_id(plan.kind, plan.object_id, plan.period, plan.offset))
                if plan.kind == USAGE_ALERT and plan.status == PENDING:
                    ctx.ledger.supersede_usage_alerts(sub_id, plan.period, plan.offset, ctx.now)
            ctx.ledger.cancel_notices(sub_id, keep, ctx.now, decision.why_none or "no longer called for")
            ctx.ledger.set_notices_due(sub_id, _next_planning(ctx, subject))


def _next_planning(ctx: TickContext, subject: dict):
    """Metered subscriptions are planned again at their next usage check; the others when sync changes them."""
    sub = ctx.ledger.subscription(subject["subscription"]["id"])
    usage = ctx.config.file.notices.usage
    if not usage.enabled or not sub.get("usage_based") or sub["status"] not in ("active", "trialing"):
        return None
    checked = from_iso(sub.get("usage_checked_at"))
    return (checked or ctx.now) + usage.check_every if checked else ctx.now + usage.check_every


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
    from dunctl.notices.effects import NoticeEffect
    from dunctl.planner import after_quiet_hours, in_quiet_hours

    with ctx.ledger.transaction():
        for notice in due:
            customer_id = notice["customer_id"]
            customer = ctx.ledger.customer(customer_id) or {}
            zone = customer.get("timezone")
            if in_quiet_hours(ctx.now, ctx.settings, zone):
                ctx.ledger.defer_notice(notice["id"], after_quiet_hours(ctx.now, ctx.settings, zone),
                                        "waiting for quiet hours to end in the customer's time zone")
                continue
            held = _contact_hold(ctx, customer_id, len(sending.get(customer_id, [])))
            if held is not None:
                ctx.ledger.defer_notice(notice["id"], *held)
                continue
            sending.setdefault(customer_id, []).append(notice)
            effects.append(NoticeEffect(notice))
    return effects


def _contact_hold(ctx: TickContext, customer_id: str, admitted: int):
    """(until, why) when the contact policy holds a notice to this customer now, else None."""
    policy = ctx.settings.contact
    if policy is None:
        return None
    since = ctx.now - timedelta(days=7)
    statuses = ("done", "would") if ctx.settings.monitor else ("done",)     # monitor plans as live would send
    recent = ctx.ledger.customer_contacts(customer_id, since, statuses)   # dunning messages and notices alike
    recent += [ctx.now] * admitted
    if recent and ctx.now - recent[-1] < policy.min_gap:
        return recent[-1] + policy.min_gap, "contact policy: at least the minimum gap between messages"
    week = [t for t in recent if ctx.now - t < timedelta(days=7)]
    if len(week) >= policy.max_per_week:
        return week[-policy.max_per_week] + timedelta(days=7), \
            f"contact policy: {len(week)} messages to this customer in the last 7 days"
    return None
