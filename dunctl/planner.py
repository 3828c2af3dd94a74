"""Deciding what is due: a pure function of (case, sequence, records, settings, now). No I/O, no clock.

Execution is elsewhere (dunctl/tick/). Keeping the decision pure is what makes `--dry-run`, `--now`, monitor mode,
simulation and exactly-once execution simple, and lets the rules below be tested as plain tables of cases.

The catch-up policy, for steps that fell due while nobody ran a tick (a case first synced late, cron down for days,
a case resumed), by audience:

- customer messages: of those due, only the latest runs, once (a customer never gets a burst); and never inside
  the customer's quiet hours, whenever the tick runs: it waits for the window to end;
- internal notifications (account manager, escalation, Slack, webhooks): run late rather than never (of those
  overdue beyond the grace period, the latest);
- retries: the latest due runs if the attempt budget allows (never two at once);
- irreversible steps (pause, cancel, write-off): only when earned (dunctl/irreversible.py): a delivered message
  announcing the step at least `dunning.notice_before_suspension` earlier, re-timed after it; a customer message
  goes out only while what it says is true (a message placed after an irreversible step, once that happened; an
  announcement, only of a step still to come that will happen), so the latest customer message caught up on is
  the latest that is still true;
- anything else overdue is recorded as missed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dunctl import irreversible
from dunctl.config import CUSTOMER, INTERNAL, SUSPENDING, Sequence, Step
# The planner's data types and skip rule live in dunctl/planning.py (irreversible.py builds on them too); callers
# keep importing them from here.
from dunctl.planning import (  # noqa: F401
    FINISHED,
    MISSED,
    RUN,
    SKIP,
    CaseSnapshot,
    ContactPolicy,
    Decision,
    Plan,
    Settings,
    StepRecord,
    Wait,
    channel_of,
    finished_statuses,
    skip_reason,
)

def plan(case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord], settings: Settings,
         now: datetime) -> Plan:
    """Decide, for every step not yet finished, whether it runs now, is skipped, was missed, waits, or is
    still to come; and when the case is next due."""
    result = Plan()
    finished = finished_statuses(settings)
    upcoming: list[tuple[datetime, str]] = []
    eligible: list[tuple[Decision, bool]] = []          # (decision, retrying a failed delivery)
    for index, step in enumerate(sequence.steps):
        record = records.get(step.id)
        if record is not None and record.status in finished:
            continue
        retrying = record is not None and record.status in ("failed", "resend")
        if record is not None and record.status == "resend":
            due = now  # a person chose to run it again (`dunctl case resolve --resend`)
        elif retrying:
            if record.tries >= settings.max_action_tries:
                continue  # gave up; the failure stays visible on the case
            due = (record.finished_at or now) + settings.action_retry_after
        else:
            due = step.at.after(case.first_failed_at)
        if step.audience == CUSTOMER:
            due = after_quiet_hours(due, settings, case.timezone)
        if due > now:
            upcoming.append((due, step.id))
            continue
        skip = skip_reason(step, case, sequence, settings)
        if skip:
            result.decisions.append(Decision(step, due, SKIP, skip))
            continue
        held = _hold(step, index, case, sequence, records, settings, now)
        if isinstance(held, Decision):
            result.decisions.append(held)
        elif held is not None:
            result.waiting.append(held)
            if held.until is not None or not held.on_own_steps:
                upcoming.append((held.until or now + settings.action_retry_after, step.id))
        else:
            eligible.append((Decision(step, due, RUN), retrying))
    result.decisions.extend(_catch_up(eligible, settings, now))
    if len(result.decisions) > 1:
        # in the sequence's order: by each step's place, found by identity (list.index compares pydantic models
        # field by field, 1,700 comparisons in a demo)
        order = {id(step): index for index, step in enumerate(sequence.steps)}
        result.decisions.sort(key=lambda d: order[id(d.step)])
    if upcoming:
        result.next_due_at, result.next_step = min(upcoming)
    return result


def _hold(step: Step, index: int, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord],
          settings: Settings, now: datetime) -> Wait | Decision | None:
    """A due step that must wait (Wait), can never run as planned (a SKIP Decision), or may run (None)."""
    if case.disputed and step.audience != INTERNAL:
        # Charges and customer messages wait for the dispute; telling a person does not.
        return Wait(step, None, f"the customer disputes a payment ({case.disputed}): charges and messages wait")
    if step.audience == CUSTOMER and in_quiet_hours(now, settings, case.timezone):
        return Wait(step, after_quiet_hours(now, settings, case.timezone),
                    "quiet hours in the customer's time zone")
    if step.audience == CUSTOMER and settings.contact is not None:
        held = _contact_policy(step, case, sequence, records, settings, now)
        if held is not None:
            return held
    if step.action == "retry":
        if case.retries_blocked:
            return Wait(step, None, case.retries_blocked)
        if case.retry_not_before and case.retry_not_before > now:
            return Wait(step, case.retry_not_before,
                        case.retry_wait_reason or "the card network allows no retry before then")
    # Irreversible steps, and what customer messages say of them: one rule, in dunctl/irreversible.py.
    if step.action in irreversible.IRREVERSIBLE:
        return irreversible.earned(step, case, sequence, records, settings, now)
    if step.audience == CUSTOMER:
        truth = irreversible.message_truth(step, case, sequence, records, settings)
        if truth is not None:
            return truth
    if step.action == "close":
        pending = [s.id for s in sequence.steps[:index] if _unfinished(records.get(s.id), settings)]
        if pending:
            return Wait(step, None, f"waits for {', '.join(pending)}", on_own_steps=True)
    return None


def _contact_policy(step: Step, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord],
                    settings: Settings, now: datetime) -> Wait | Decision | None:
    """The contact policy: a per-case cap per channel, a minimum gap, and a rolling weekly cap per customer. A
    held message waits for the earliest allowed time; a later step due by then supersedes it."""
    policy = settings.contact
    cap = dict(policy.max_per_case).get(step.action)
    if cap is not None:
        sent_statuses = ("done", "would") if settings.monitor else ("done",)   # once live, a `would` sent nothing
        sent = sum(1 for s in sequence.steps if s.action == step.action and s.id in records
                   and records[s.id].status in sent_statuses)
        if sent >= cap:
            return Decision(step, step.at.after(case.first_failed_at), SKIP,
                            f"contact policy: at most {cap} {step.action} per case")
    recent = sorted(t for t in case.contacts if t <= now)
    if recent and now - recent[-1] < policy.min_gap:
        return Wait(step, recent[-1] + policy.min_gap,
                    f"contact policy: at least {_span(policy.min_gap)} between messages to this customer")
    week = [t for t in recent if now - t < timedelta(days=7)]
    if len(week) >= policy.max_per_week:
        return Wait(step, week[-policy.max_per_week] + timedelta(days=7),
                    f"contact policy: {len(week)} messages to this customer in the last 7 days "
                    f"(at most {policy.max_per_week})")
    return None


def _catch_up(eligible: list[tuple[Decision, bool]], settings: Settings, now: datetime) -> list[Decision]:
    """Of the steps that may run now, decide which do: the latest of each kind, per the catch-up policy."""
    out: list[Decision] = []
    groups: dict[tuple, list[tuple[Decision, bool]]] = {}
    for item in eligible:
        groups.setdefault(_kind(item[0].step, settings), []).append(item)
    for (kind, *_), items in groups.items():
        if kind in ("customer", "retry", "suspension", "hand_off"):
            # Never a burst, never two charges at once: only the latest runs.
            *earlier, latest = items
            out.extend(Decision(d.step, d.due_at, MISSED, f"superseded by the later step '{latest[0].step.id}'")
                       for d, _ in earlier)
            out.append(latest[0])
        elif kind == "internal":
            # A person is told late rather than never: everything within grace runs, and of what is overdue
            # beyond it, the latest.
            overdue = [d for d, retrying in items if not retrying and now - d.due_at > settings.grace]
            keep = overdue[-1] if overdue else None
            for d, _ in items:
                if d in overdue and d is not keep:
                    out.append(Decision(d.step, d.due_at, MISSED, f"superseded by the later step '{keep.step.id}'"))
                else:
                    out.append(d)
        else:
            for d, retrying in items:
                if not retrying and now - d.due_at > settings.grace and d.step.action != "close":
                    out.append(Decision(d.step, d.due_at, MISSED,
                                        f"overdue by {_span(now - d.due_at)}, more than the grace period "
                                        f"of {_span(settings.grace)}"))
                else:
                    out.append(d)
    return out


def _kind(step: Step, settings: Settings) -> tuple:
    """The group a step competes in for the catch-up policy. Internal notifications compete only with those
    to the same destination: an escalation never supersedes the account manager's email, nor the reverse."""
    if step.audience == CUSTOMER:
        return ("customer",)
    if step.audience == INTERNAL:
        return ("internal", channel_of(step, settings.escalation_channel), str(step.to))
    if step.action == "retry":
        return ("retry",)
    if step.action in SUSPENDING:
        return ("suspension",)
    if step.action == "hand_off":
        # irreversible like a pause: it waits for the day its announcement named, so it is never "missed" for
        # being later than its own time (dunctl/irreversible.py)
        return ("hand_off",)
    return ("other",)


def _unfinished(record: StepRecord | None, settings: Settings) -> bool:
    return record is None or record.status not in finished_statuses(settings)


def _zone(settings: Settings, customer_zone: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(customer_zone or settings.timezone)
    except Exception:
        return ZoneInfo(settings.timezone)


def in_quiet_hours(moment: datetime, settings: Settings, customer_zone: str | None) -> bool:
    """Is `moment` inside the quiet window, in the customer's time zone (else the sender's)?"""
    if not settings.quiet_hours:
        return False
    start, end = settings.quiet_hours
    local = moment.astimezone(_zone(settings, customer_zone))
    minute = local.hour * 60 + local.minute
    return (start <= minute or minute < end) if start > end else (start <= minute < end)


def after_quiet_hours(due: datetime, settings: Settings, customer_zone: str | None) -> datetime:
    """The first moment at or after `due` outside the quiet window (in the customer's zone)."""
    if not in_quiet_hours(due, settings, customer_zone):
        return due
    end = settings.quiet_hours[1]
    local = due.astimezone(_zone(settings, customer_zone))
    wake = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if wake <= local:
        wake += timedelta(days=1)
    return wake.astimezone(due.tzinfo)


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"
