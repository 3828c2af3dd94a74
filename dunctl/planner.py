"""Deciding what is due: a pure function of (case, sequence, settings, now). No I/O, no clock.

Execution is elsewhere (engine.py). Keeping the decision pure is what makes `--dry-run`, `--now`, simulation and
exactly-once execution simple, and lets the rules below be tested as plain tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from dunctl.conditions import matches
from dunctl.config import Sequence, Step
from dunctl.failures import DISPUTE, NEVER_RETRY, RETRY_AFTER_UPDATE

# A step with one of these action statuses is finished: it never runs again.
FINISHED = frozenset({"done", "skipped", "missed", "suppressed", "unknown", "claimed"})

RUN, SKIP, MISSED = "run", "skip", "missed"


@dataclass(frozen=True)
class StepRecord:
    """What the ledger knows about one step of one case."""

    status: str
    tries: int = 0
    finished_at: datetime | None = None


@dataclass(frozen=True)
class CaseSnapshot:
    """The facts about one case that decide its steps."""

    first_failed_at: datetime
    failure_type: str
    attempts: int
    facts: dict                                # for `when:` conditions (see engine.case_facts)
    last_failed_at: datetime | None = None
    payment_method_changed_at: datetime | None = None
    dunning_off: bool = False                  # customer metadata dunning=off: no customer-facing messages
    timezone: str | None = None                # the customer's, for quiet hours


@dataclass(frozen=True)
class Settings:
    grace: timedelta = timedelta(days=1)
    max_action_tries: int = 5
    action_retry_after: timedelta = timedelta(minutes=30)
    quiet_hours: tuple[int, int] | None = None   # minutes after midnight, local time
    timezone: str = "UTC"
    channels: frozenset[str] | None = None       # configured channels; None: all of them
    escalation_channel: str = "slack"


@dataclass(frozen=True)
class Decision:
    step: Step
    due_at: datetime
    verdict: str        # run | skip | missed
    reason: str = ""


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    next_step: str | None = None
    next_due_at: datetime | None = None


def plan(case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord], settings: Settings,
         now: datetime) -> Plan:
    """Decide, for every step not yet finished, whether it runs now, is skipped, was missed, or waits."""
    result = Plan()
    upcoming: list[tuple[datetime, str]] = []
    for step in sequence.steps:
        record = records.get(step.id)
        if record is not None and record.status in FINISHED:
            continue
        if record is not None and record.status == "failed":
            if record.tries >= settings.max_action_tries:
                continue  # gave up; the failure stays visible on the case
            due = (record.finished_at or now) + settings.action_retry_after
            retrying = True
        else:
            due = step.at.after(case.first_failed_at)
            retrying = False
        if step.customer_facing:
            due = after_quiet_hours(due, settings, case.timezone)
        if due > now:
            upcoming.append((due, step.id))
            continue
        skip = skip_reason(step, case, sequence, settings)
        if skip:
            result.decisions.append(Decision(step, due, SKIP, skip))
        elif not retrying and now - due > settings.grace:
            result.decisions.append(Decision(step, due, MISSED,
                                             f"overdue by {_span(now - due)}, more than the grace period "
                                             f"of {_span(settings.grace)}"))
        else:
            result.decisions.append(Decision(step, due, RUN))
    _one_of_each_per_tick(result)
    if upcoming:
        result.next_due_at, result.next_step = min(upcoming)
    return result


def skip_reason(step: Step, case: CaseSnapshot, sequence: Sequence, settings: Settings = Settings()) -> str:
    """Why a due step must not run for this case, or '' when it may."""
    if step.when and not matches(step.when, case.facts):
        return "its when: condition does not hold"
    channel = channel_of(step, settings.escalation_channel)
    if settings.channels is not None and channel in ("email", "sms", "slack", "webhook") \
            and channel not in settings.channels:
        return f"the {channel} channel is not configured"
    if case.failure_type == DISPUTE and step.action != "escalate":
        return "the payment is disputed: dunning stops and a person handles it"
    if step.customer_facing and case.dunning_off:
        return "the customer has metadata dunning=off"
    if step.action == "retry":
        if case.failure_type in NEVER_RETRY:
            return f"{case.failure_type} is never retried"
        if case.failure_type in RETRY_AFTER_UPDATE and not _method_changed(case):
            return f"{case.failure_type}: retried only after the customer changes the payment method"
        if case.attempts >= sequence.max_attempts:
            return f"attempt cap reached ({case.attempts} of {sequence.max_attempts}, counting Stripe's own)"
    return ""


def channel_of(step: Step, escalation_channel: str) -> str | None:
    """Where a step's effect goes: a message channel, 'stripe', or None (bookkeeping only)."""
    if step.action in ("email", "sms", "slack", "webhook"):
        return step.action
    if step.action == "escalate":
        return step.channel or escalation_channel
    if step.action in ("retry", "pause_subscription", "cancel_subscription", "mark_uncollectible"):
        return "stripe"
    return None


def _method_changed(case: CaseSnapshot) -> bool:
    changed = case.payment_method_changed_at
    return changed is not None and (case.last_failed_at is None or changed > case.last_failed_at)


def _one_of_each_per_tick(result: Plan) -> None:
    """A customer never gets two dunning messages at once, and a payment is never retried twice in a row: of
    several messages (or retries) due now, only the latest runs; the earlier ones are recorded as missed."""
    for kind in ("message", "retry"):
        due = [i for i, d in enumerate(result.decisions) if d.verdict == RUN and _kind(d.step) == kind]
        for i in due[:-1]:
            d = result.decisions[i]
            later = result.decisions[due[-1]].step.id
            result.decisions[i] = Decision(d.step, d.due_at, MISSED, f"superseded by the later step '{later}'")


def _kind(step: Step) -> str:
    if step.customer_facing:
        return "message"
    return "retry" if step.action == "retry" else ""


def after_quiet_hours(due: datetime, settings: Settings, customer_zone: str | None) -> datetime:
    """Move a customer-facing step out of the quiet window, in the customer's time zone (else the sender's)."""
    if not settings.quiet_hours:
        return due
    start, end = settings.quiet_hours
    try:
        zone = ZoneInfo(customer_zone or settings.timezone)
    except Exception:
        zone = ZoneInfo(settings.timezone)
    local = due.astimezone(zone)
    minute = local.hour * 60 + local.minute
    in_window = (start <= minute or minute < end) if start > end else (start <= minute < end)
    if not in_window:
        return due
    wake = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
    if wake <= local:
        wake += timedelta(days=1)
    return wake.astimezone(due.tzinfo)


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"
