"""The one rule for steps that cannot be undone: when dunctl may pause, cancel or write off, and what it may say.

In a finance team's words:

    dunctl pauses a subscription, cancels it, or writes an invoice off only when, at that very moment,
    - the customer was sent a real message announcing it (delivered: not merely planned while monitoring, not
      an email whose delivery is in doubt, not one that failed), at least `dunning.notice_before_suspension`
      (3 days unless configured) before;
    - the invoice is still open and unpaid, and the case is still open;
    - nothing holds the customer: no dispute, no person who paused the case. A customer marked `dunning: off`
      cannot be told anything, so nothing irreversible ever happens to them.

    After a gap (cron down for a month, the first live tick after monitoring), dunctl first sends the latest
    message that is still true, and the irreversible step waits at least the notice period after it: it never
    happens in the tick that sends the warning. A message never tells of something that is not true when it is
    sent: "we paused your subscription" goes out only once the pause happened, and a warning of a pause (or
    cancellation, or write-off) only while that step is still to come and will really happen.

    A message names the day of the consequence as a deadline ("please pay by 23 November"), and a reader takes it
    as the end of that day in their own time zone (the customer's, else the sender's). So the irreversible step
    waits until that day has ended there: it never runs on the day the message named.

Which message announces a step: a customer message with `announces: <step id>` in the sequence; where no step
of the sequence announces it, the nearest customer message placed before it (sequences written before the key
existed keep working).

The planner (dunctl/planner.py) asks `earned` and `message_truth` when it plans a case; the executor
(dunctl/tick/executor.py, `_claim_batch`) asks `earned` again when it claims an irreversible step, with the case
as the ledger holds it at that moment, so a payment, a dispute or a person's pause recorded meanwhile (by an
earlier batch of the same tick, or by another process) stops it. Everything here is pure: no I/O, no clock.

In monitor mode nothing is sent and nothing is done, so the rule is rehearsed there: a message dunctl would have
sent counts as sent, to show when it would have acted. Once live, only what was delivered counts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dunctl.config import CUSTOMER, IRREVERSIBLE, Sequence, Step
from dunctl.failures import DISPUTE
from dunctl.offsets import Offset
from dunctl.planning import SKIP, CaseSnapshot, Decision, Settings, StepRecord, Wait, skip_reason

__all__ = ["IRREVERSIBLE", "announcers", "as_it_will_run", "deadline_day", "deadline_end", "earned", "message_truth",
           "consequences", "consequences_as_read", "told_statuses"]

# Statuses after which a message will never be delivered, nor a step run (by this record).
_GAVE_UP = frozenset({"skipped", "missed", "suppressed"})


_TOLD = {False: frozenset({"done"}), True: frozenset({"done", "would"})}
# Statuses after which an irreversible step is not to come (it happened, or never will by this record).
_GONE = {monitor: _GAVE_UP | told | {"unknown"} for monitor, told in _TOLD.items()}
# id(sequence) -> (the sequence, step id -> its announcers): asked for every message and every plan of a case.
# The sequence is held, so its id cannot stand for another while it is here.
_ANNOUNCERS: dict[int, tuple[Sequence, dict[str, tuple[Step, ...]]]] = {}


def told_statuses(settings: Settings) -> frozenset[str]:
    """What counts as "the customer was sent it": delivered only; in monitor mode, also what would have been."""
    return _TOLD[bool(settings.monitor)]


def announcers(step: Step, sequence: Sequence) -> list[Step]:
    """The customer messages that announce the irreversible `step`: those naming it with `announces:`, else the
    nearest customer message placed before it. Worked out once per sequence and step (a sequence never changes
    once loaded)."""
    held = _ANNOUNCERS.get(id(sequence))
    if held is None or held[0] is not sequence:
        if len(_ANNOUNCERS) >= 256:
            _ANNOUNCERS.clear()
        held = _ANNOUNCERS[id(sequence)] = (sequence, {})
    found = held[1].get(step.id)
    if found is None:
        found = held[1][step.id] = tuple(_announcers(step, sequence))
    return list(found)   # the caller's own list: the one held cannot be changed through it


def _announcers(step: Step, sequence: Sequence) -> list[Step]:
    explicit = [s for s in sequence.steps if s.announces == step.id]
    if explicit:
        return explicit
    index = _index(step, sequence)
    nearest = next((s for s in reversed(sequence.steps[:index]) if s.audience == CUSTOMER), None)
    return [nearest] if nearest is not None else []


def earned(step: Step, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord], settings: Settings,
           now: datetime) -> Wait | Decision | None:
    """May the irreversible `step` run now? None: yes. A Wait: not yet (until when, if known, and why). A SKIP
    Decision: never (the customer can never be told, or the case no longer needs it)."""
    held = _held(step, case)
    if held is not None:
        return held
    notice = settings.notice_before_suspension
    zone = case.timezone or settings.timezone
    due = step.at.after(case.first_failed_at)
    told = _told_at(step, sequence, records, settings)
    if told is not None:
        ready = deadline_end(max(due, told + notice), zone)
        if ready <= now:
            return None
        if told + notice > now:
            return Wait(step, ready, f"the customer was told {_span(now - told)} ago; {step.action} needs "
                                     f"{_span(notice)} notice after a delivered announcement")
        return Wait(step, ready, f"the customer was told to pay by {deadline_day(ready, zone)}: {step.action} "
                                 f"waits until that day ends in {zone}")
    pending = [a for a in announcers(step, sequence) if _can_still_tell(a, case, sequence, records, settings)]
    if pending:
        first = min(max(a.at.after(case.first_failed_at), now) for a in pending)
        waits_on = "a person to settle its unknown delivery (`dunctl case resolve`)" \
            if any(_status(records, a) == "unknown" for a in pending) else "its delivery"
        return Wait(step, deadline_end(max(due, first + notice), zone),
                    f"the customer has not been sent '{pending[0].id}' yet, which announces it; {step.action} runs "
                    f"{_span(notice)} after {waits_on}, at the end of the day the message names")
    named = ", ".join(f"'{a.id}'" for a in announcers(step, sequence)) or "no customer message"
    return Decision(step, step.at.after(case.first_failed_at), SKIP,
                    f"the customer was never sent the message announcing it ({named}): dunctl does not pause, "
                    "cancel or write off someone who was not told")


def message_truth(step: Step, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord],
                  settings: Settings) -> Wait | Decision | None:
    """May the customer message `step` be sent, as far as what it says is true? None: yes. A Wait: not yet (it
    tells of an irreversible step that has not happened yet). A SKIP Decision: never (it tells of a step that
    did not happen, or announces one that will not happen or already did)."""
    done = told_statuses(settings)
    due = step.at.after(case.first_failed_at)
    # Placed after an irreversible step, a message tells the customer that step happened. One that `announces` a
    # later step (the cancellation notice after the pause) confirms none: it waits only while the earlier step
    # is still to come (the customer hears of the pause first, then of the cancellation), and goes out when
    # that step happened or never will.
    before = _irreversible_before(step, sequence)
    if before is not None:
        status = _status(records, before)
        gave_up = status in _GAVE_UP or (status == "failed" and records[before.id].tries >= settings.max_action_tries)
        if step.announces is None:
            if gave_up:
                return Decision(step, due, SKIP, f"tells of '{before.id}', which did not happen ({status})")
            if status not in done:
                return Wait(step, None, f"tells of '{before.id}', which has not happened yet", on_own_steps=True)
        elif not gave_up and status not in done and status != "unknown" \
                and not _will_not_happen(before, case, sequence, records, settings):
            return Wait(step, None, f"announces '{step.announces}', which comes after '{before.id}': that first")
    if step.announces is None:
        return None
    target = next((s for s in sequence.steps if s.id == step.announces), None)
    if target is None:
        return None   # checked when the config loads; a stored sequence is one that passed that check
    status = _status(records, target)
    if status in done or status == "unknown":
        return Decision(step, due, SKIP, f"announces '{target.id}', which already happened ({status})")
    why = _will_not_happen(target, case, sequence, records, settings)
    if why:
        return Decision(step, due, SKIP, f"announces '{target.id}', which will not happen: {why}")
    return None


def as_it_will_run(sequence: Sequence, first_failed_at: datetime, records: dict[str, StepRecord],
                   settings: Settings, now: datetime, zone: str | None = None) -> Sequence:
    """The sequence with its irreversible steps as they will now run, for what a message says of them ("paused
    on ..."): a step that already happened or will not happen is left out, and the others are timed no earlier
    than the notice period after their announcement (delivered, or sent now), at the end of that local day in
    `zone` (the customer's; default the sender's), so `deadline_day` of the step's time is the day the message
    names. After a gap the final notice so names the pause 3 days from now, not a day already past."""
    timed = {step.id: at for step, at in _to_come(sequence, first_failed_at, records, settings, now, zone)}
    return sequence.model_copy(update={"steps": [
        step if step.action not in IRREVERSIBLE else step.model_copy(update={"at": timed[step.id]})
        for step in sequence.steps if step.action not in IRREVERSIBLE or step.id in timed]})


@dataclass(frozen=True, slots=True)
class TimedStep:
    """An irreversible step as a message tells of it: what it does and when, from the first failure."""

    id: str
    action: str
    at: Offset


@dataclass(frozen=True, slots=True)
class Consequences:
    """The irreversible steps of `as_it_will_run`, all a message reads of its sequence (the consequence it names:
    dunctl/messages/case.py), without copying the sequence: its pydantic copies were three per email."""

    steps: tuple[TimedStep, ...]


def consequences(sequence: Sequence, first_failed_at: datetime, records: dict[str, StepRecord],
                 settings: Settings, now: datetime, zone: str | None = None) -> Consequences:
    """The irreversible steps of `as_it_will_run(...)`, each with its id, action and time."""
    return Consequences(tuple(TimedStep(step.id, step.action, at)
                              for step, at in _to_come(sequence, first_failed_at, records, settings, now, zone)))


def consequences_as_read(sequence: Sequence, first_failed_at: datetime, records: dict[str, StepRecord],
                         settings: Settings, now: datetime, zone: str | None = None) -> Iterator[TimedStep]:
    """`consequences(...).steps`, each worked out only when it is read: a message names the first still ahead."""
    return (TimedStep(step.id, step.action, at)
            for step, at in _to_come(sequence, first_failed_at, records, settings, now, zone))


def _to_come(sequence: Sequence, first_failed_at: datetime, records: dict[str, StepRecord], settings: Settings,
             now: datetime, zone: str | None) -> Iterator[tuple[Step, Offset]]:
    """Each irreversible step still to come, with its time as it will now run (`as_it_will_run`)."""
    notice = settings.notice_before_suspension
    zone = zone or settings.timezone
    gone = _GONE[bool(settings.monitor)]
    for step in sequence.steps:
        if step.action not in IRREVERSIBLE or _status(records, step) in gone:
            continue
        told = _told_at(step, sequence, records, settings) or now
        runs = deadline_end(max(step.at.after(first_failed_at), told + notice), zone)
        yield step, Offset(step.at.text, _minutes(runs - first_failed_at))


def deadline_day(moment: datetime, zone: str | None) -> date:
    """The day a message names as the deadline for a consequence timed at `moment`, in `zone`: that local day,
    or the day before when `moment` falls in the first minute of a day (step times are kept to the minute,
    rounded up, so a step timed to the end of the 23rd lands at 00:00 on the 24th, plus seconds)."""
    return (moment.astimezone(_zone(zone)) - timedelta(minutes=1)).date()


def deadline_end(moment: datetime, zone: str | None) -> datetime:
    """The earliest a consequence timed at `moment` may run: once the day `deadline_day` names has ended in
    `zone` (local midnight, which a DST change or a zone's offset puts at different UTC times)."""
    tz = _zone(zone)
    next_day = deadline_day(moment, zone) + timedelta(days=1)
    return max(moment, datetime.combine(next_day, time(0), tzinfo=tz).astimezone(moment.tzinfo))


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError):   # ZoneInfoNotFoundError is a KeyError; the config checks names when loaded
        return ZoneInfo("UTC")


def _minutes(delta) -> int:
    return int(-(-delta.total_seconds() // 60))   # rounded up: never a moment before the step can run


def _held(step: Step, case: CaseSnapshot) -> Wait | Decision | None:
    """What stops an irreversible step whatever the customer was told."""
    due = step.at.after(case.first_failed_at)
    if case.invoice_status != "open":
        return Decision(step, due, SKIP, f"the invoice is {case.invoice_status}")
    if case.case_state == "paused":
        return Wait(step, None, "the case is paused (a person holds it, or the subscription is paused outside "
                                "dunctl)")
    if case.case_state != "open":
        return Decision(step, due, SKIP, f"the case is {case.case_state}")
    if case.failure_type == DISPUTE or case.disputed:
        return Wait(step, None, "the customer disputes a payment: a person handles it, nothing irreversible runs")
    if case.dunning_off:
        return Decision(step, due, SKIP, "the customer has metadata dunning=off and cannot be told, so dunctl "
                                         "never pauses, cancels or writes off")
    return None


def _told_at(step: Step, sequence: Sequence, records: dict[str, StepRecord], settings: Settings
             ) -> datetime | None:
    """When the customer was first sent (delivered) a message announcing `step`, or None."""
    done = told_statuses(settings)
    times = [records[a.id].finished_at for a in announcers(step, sequence)
             if a.id in records and records[a.id].status in done and records[a.id].finished_at is not None]
    return min(times) if times else None


def _can_still_tell(message: Step, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord],
                    settings: Settings) -> bool:
    """Can the announcing `message` still be delivered (it is to come, being tried, or awaits a person)?"""
    record = records.get(message.id)
    if record is not None:
        if record.status in _GAVE_UP:
            return False
        if record.status == "failed" and record.tries >= settings.max_action_tries:
            return False
    return not skip_reason(message, case, sequence, settings)


def _will_not_happen(step: Step, case: CaseSnapshot, sequence: Sequence, records: dict[str, StepRecord],
                     settings: Settings) -> str:
    """Why the irreversible `step` will not happen, or '' when it is still to come."""
    status = _status(records, step)
    if status in _GAVE_UP:
        return f"it was {status}"
    reason = skip_reason(step, case, sequence, settings)
    if reason:
        return reason
    held = _held(step, case)
    return held.reason if isinstance(held, Decision) else ""


def _irreversible_before(step: Step, sequence: Sequence) -> Step | None:
    """The irreversible step a message placed after it tells of (the nearest one before it)."""
    for earlier in reversed(sequence.steps[:_index(step, sequence)]):
        if earlier.action in IRREVERSIBLE:
            return earlier
    return None


def _status(records: dict[str, StepRecord], step: Step) -> str | None:
    record = records.get(step.id)
    return record.status if record is not None else None


def _index(step: Step, sequence: Sequence) -> int:
    return next(i for i, s in enumerate(sequence.steps) if s.id == step.id)


def _span(delta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"
