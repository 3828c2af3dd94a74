"""What the planner reads and returns (records, the case snapshot, settings, decisions, waits), and the rule for a
step that must not run at all (skip_reason). The planner (dunctl/planner.py) and the rule for irreversible steps
(dunctl/irreversible.py) both build on these; neither imports the other's module for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dunctl.conditions import matches
from dunctl.config import CUSTOMER, Sequence, Step
from dunctl.failures import DISPUTE, NEVER_RETRY, RETRY_AFTER_UPDATE

# A step with one of these action statuses is finished: it never runs again. `would` (recorded in monitor mode)
# is finished only while monitoring: once live, those steps follow the catch-up policy.
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
    facts: dict                                # for `when:` conditions (see tick.facts)
    last_failed_at: datetime | None = None
    payment_method_changed_at: datetime | None = None
    dunning_off: bool = False                  # customer metadata dunning=off: no customer messages
    timezone: str | None = None                # the customer's, for quiet hours
    retries_blocked: str | None = None         # why no dunctl retry may run yet (Stripe's retries still on)
    retry_not_before: datetime | None = None   # the card network's earliest allowed retry
    retry_wait_reason: str | None = None       # and why, in words (Mastercard advice 27: ...)
    contacts: tuple[datetime, ...] = ()        # customer messages to this customer lately, across its cases
    invoice_status: str = "open"               # as the ledger holds it (dunctl/irreversible.py re-checks it)
    case_state: str = "open"                   # open, paused (by a person or outside dunctl), or how it ended
    disputed: str | None = None                # an open dispute on any of the customer's charges, in words


@dataclass(frozen=True)
class ContactPolicy:
    """How often one customer hears from dunctl (customer messages only, across all its cases)."""

    max_per_week: int = 3
    min_gap: timedelta = timedelta(hours=36)
    max_per_case: tuple[tuple[str, int], ...] = ()     # (channel, cap) pairs, e.g. (("sms", 2),)


@dataclass(frozen=True)
class Settings:
    grace: timedelta = timedelta(days=1)
    max_action_tries: int = 5
    action_retry_after: timedelta = timedelta(minutes=30)
    quiet_hours: tuple[int, int] | None = None   # minutes after midnight, local time
    timezone: str = "UTC"
    channels: frozenset[str] | None = None       # configured channels; None: all of them
    escalation_channel: str = "slack"
    notice_before_suspension: timedelta = timedelta(days=3)
    monitor: bool = False
    contact: ContactPolicy | None = None
    retry_on_update: bool = False                # a new payment method gets a retry on the next tick


@dataclass(frozen=True)
class Decision:
    step: Step
    due_at: datetime
    verdict: str        # run | skip | missed
    reason: str = ""


@dataclass(frozen=True)
class Wait:
    """A step that is due but held, and until when (None: until something else happens first)."""

    step: Step
    until: datetime | None
    reason: str
    # Held only by this case's own steps (one not finished yet): what ends the wait is one of them being recorded,
    # which happens in a tick that plans the case again after its effects (or in `case resolve`, which schedules
    # it), and each of those steps is timed on its own. So the case is not polled for it every
    # `action_retry_after` (about 500 of the demo's plans only said it still waited).
    on_own_steps: bool = False


@dataclass
class Plan:
    decisions: list[Decision] = field(default_factory=list)
    waiting: list[Wait] = field(default_factory=list)
    next_step: str | None = None
    next_due_at: datetime | None = None

    @property
    def runs(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == RUN]


def finished_statuses(settings: Settings) -> frozenset[str]:
    return FINISHED | {"would"} if settings.monitor else FINISHED


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
    if step.audience == CUSTOMER and case.dunning_off:
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
