"""What a ledger leaves on the Stripe invoices it works, so that no other ledger sends its messages again.

A ledger has a random id (made with it, kept by its backups). Each time a customer message for an invoice is
delivered, dunctl notes on the invoice (its metadata) the ledger's id and that message: step id and time. This is
one `invoices.update` per invoice per tick, naming the latest message the tick delivered for it, made by the
executor right after the delivery (a system effect `mark-<step>`, claimed and recorded like any other, with its own
idempotency key); a note that failed is tried again when the case is next due.

When a sync brings an invoice whose note names a message this ledger has no record of:

- the note names this ledger: it was restored from a copy older than that message. The steps up to it are taken
  as done (at the time the note gives), never sent again, and the tick says so in one line;
- the note names another ledger, which works the invoice: refused (LedgerInUse, exit 2) before anything is done
  for it, until `dunctl tick --adopt`, which takes the history over the same way and goes on after it.

The stale-ledger check (`ledger.sync.unknown_keys`) leaves the notes' own Stripe requests to this module.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from dunctl.clock import from_iso, iso
from dunctl.effect import Outcome, Prepared
from dunctl.errors import DunctlError
from dunctl.tick.effects import SYSTEM, CaseEffect, idempotency_key

if TYPE_CHECKING:
    from dunctl.config import Sequence
    from dunctl.ledger import Ledger
    from dunctl.ledger.records import ActionRecord, CaseBundle
    from dunctl.planner import Settings
    from dunctl.tick.context import TickContext
    from dunctl.tick.effects import CaseEffect

STATE = "ledger_id"                    # the ledger's state: its id (migration m105)
LEDGER_KEY = "dunctl_ledger"           # Stripe metadata keys: at most 40 characters, values at most 500
STEP_KEY = "dunctl_last_message"
AT_KEY = "dunctl_last_message_at"
MARK = "mark-"                         # the system effect's name: mark-<step id>
MARK_ACTION = "mark_invoice"


class LedgerInUse(DunctlError):
    """Another ledger works invoices this one synced. Nothing was done for them."""

    exit_code = 2


@dataclass(frozen=True)
class LastMessage:
    """What an invoice's note says: which ledger sent the last customer message, which step, and when."""

    ledger: str
    step: str
    at: datetime


@dataclass(frozen=True)
class Behind:
    """An open invoice whose last message, as Stripe shows it, this ledger has no record of."""

    invoice_id: str
    case_id: int | None
    last: LastMessage


def ledger_id(ledger: Ledger) -> str:
    """This ledger's id (made by its migration; made here for a ledger that somehow lacks one)."""
    found = ledger.get_state(STATE)
    if not found:
        found = f"ldg_{secrets.token_hex(8)}"
        ledger.set_state(STATE, found)
    return found


def last_message(metadata: dict | None) -> LastMessage | None:
    metadata = metadata or {}
    at = from_iso(metadata.get(AT_KEY)) if metadata.get(AT_KEY) else None
    if not metadata.get(LEDGER_KEY) or not metadata.get(STEP_KEY) or at is None:
        return None
    return LastMessage(str(metadata[LEDGER_KEY]), str(metadata[STEP_KEY]), at)


def note(ledger: str, step: str, at: datetime) -> dict[str, str]:
    return {LEDGER_KEY: ledger[:500], STEP_KEY: step[:500], AT_KEY: iso(at)}


# -- writing the note: the executor's follow-up to a delivered customer message ----------------------------------

class NotesDue:
    """The notes a tick owes on Stripe invoices: one request per invoice per tick, naming the latest message the
    tick delivered for it, written as soon as none of that invoice's messages is left to send in the tick. A note
    is what a person in the Dashboard reads (which ledger, the last message, when) and what `behind_stripe`
    compares: only the latest message counts. A failed note due to be tried again waits while its invoice has a
    message left in the tick: a newer note replaces it (the old one stays failed, superseded); without one, it
    is tried as before."""

    def __init__(self, ctx: TickContext, units: list[list[CaseEffect]]):
        self._on = bool(units and ctx.acts and ctx.gateway is not None
                        and ctx.ledger.get_state("account_mode") is not None)
        self._now = ctx.now
        self._left: dict[str, int] = {}
        self._held: dict[str, CaseEffect] = {}
        self._retries: dict[str, CaseEffect] = {}
        for effect in (e for unit in units for e in unit) if self._on else ():
            if _message(effect):
                self._left[effect.invoice_id] = self._left.get(effect.invoice_id, 0) + 1
        for effect in (e for unit in units for e in unit) if self._left else ():
            if effect.action == MARK_ACTION and effect.invoice_id in self._left:
                self._retries[effect.invoice_id] = effect
        if self._retries:
            units[:] = [kept for unit in units if (kept := [e for e in unit if e.action != MARK_ACTION
                                                             or e.invoice_id not in self._retries])]

    def taken(self, batch: list[list[CaseEffect]]) -> None:
        """These units go out now: their invoices have that many fewer messages left in the tick."""
        for effect in (e for unit in batch for e in unit):
            if _message(effect) and effect.invoice_id in self._left:
                self._left[effect.invoice_id] -= 1

    def after(self, outcomes: list[tuple[CaseEffect, str]]) -> list[CaseEffect]:
        """The notes to write after these (effect, status) outcomes."""
        if not self._on:
            return []
        for effect, status in outcomes:
            if status == "done" and _message(effect):
                held = self._held.get(effect.invoice_id)
                if held is None or effect.due_at >= held.due_at:
                    self._held[effect.invoice_id] = effect
        ready = [invoice for invoice in {**self._retries, **self._held} if not self._left.get(invoice)]
        marks = []
        for invoice in ready:
            retry, latest = self._retries.pop(invoice, None), self._held.pop(invoice, None)
            marks.append(_mark(latest.bundle, latest.name, self._now) if latest is not None else retry)
        return marks


def _message(effect: CaseEffect) -> bool:
    """A customer message of a sequence: what an invoice's note names."""
    return effect.kind == "step" and effect.audience == "customer"


def _mark(bundle: CaseBundle, step_id: str, at: datetime) -> CaseEffect:
    return CaseEffect(bundle, SYSTEM, MARK + step_id, MARK_ACTION, at, channel="stripe", in_plan=False)


def marks_to_retry(bundle: CaseBundle, settings: Settings, now: datetime) -> list[CaseEffect]:
    """The newest note, when writing it failed and it is time to try again (none once a newer one is written)."""
    marks = [a for a in bundle.system().values() if a.step_id.startswith(MARK)]
    if not marks:
        return []
    newest = max(marks, key=lambda a: (a.due_at or now, a.id))
    if newest.status != "failed" or newest.tries >= settings.max_action_tries \
            or (newest.finished_at or now) + settings.action_retry_after > now:
        return []
    return [_mark(bundle, newest.step_id[len(MARK):], newest.due_at or now)]


def prepare_mark(ctx: TickContext, effect: CaseEffect):
    """The action behind a `mark-<step>` effect (tick/actions.py's registry)."""
    step = effect.name[len(MARK):]
    metadata = note(ledger_id(ctx.ledger), step, effect.due_at)

    def deliver() -> Outcome:
        ctx.gateway.mark_invoice(effect.invoice_id, metadata, effect.key)
        return Outcome("done", f"noted on the Stripe invoice: last message {step} at {iso(effect.due_at)}",
                       quiet=True)

    return Prepared(f"note on the Stripe invoice: last message {step}", deliver, quiet=True)


# -- reading it: reconciling what a sync brought --------------------------------------------------------------

def behind_stripe(ledger: Ledger) -> list[Behind]:
    """Of the open invoices the last sync changed, those whose note names a message this ledger did not record
    as done."""
    found = []
    for invoice_id, metadata, case_id in ledger.sync.pending_noted_invoices(LEDGER_KEY):
        last = last_message(metadata)
        if last is None:
            continue
        if case_id is not None and ledger.step_done(case_id, last.step):
            continue
        found.append(Behind(invoice_id, case_id, last))
    return found


def refuse_other_ledgers(found: list[Behind], own: str, adopt: bool) -> None:
    """Another ledger works these invoices: refused, before anything is done for them, unless adopting."""
    other = [b for b in found if b.last.ledger != own]
    if not other or adopt:
        return
    first = other[0]
    more = f" and {len(other) - 1} more" if len(other) > 1 else ""
    raise LedgerInUse(
        f"invoice {first.invoice_id}{more} is worked by another dunctl ledger, {first.last.ledger} (it sent "
        f"'{first.last.step}' at {iso(first.last.at)}); this ledger ({own}) would send again what it sent: if that "
        "ledger is retired, run `dunctl tick --adopt` once to take its invoices over, else use that ledger")


def take_over(ledger: Ledger, found: list[Behind], own: str, sequences, now: datetime) -> tuple[list[str], set[int]]:
    """Record, for each invoice, its steps up to the last message as done where Stripe says they were: they are
    never sent again and the sequence goes on after them. Returns the lines the tick prints and the cases to
    schedule again."""
    taken: list[str] = []
    adopted: dict[str, int] = {}
    touched: set[int] = set()
    for item in found:
        case = ledger.cases.for_invoice(item.invoice_id)
        if case is None or case["state"] not in ("open", "paused"):
            continue
        bundle = ledger.cases.bundle(case["id"])
        if _take_over_case(ledger, bundle, sequences(bundle), item.last, own):
            touched.add(bundle.case.id)
            if item.last.ledger == own:
                taken.append(f"{item.invoice_id} {item.last.step}")
            else:
                adopted[item.last.ledger] = adopted.get(item.last.ledger, 0) + 1
            ledger.cases.add_timeline(bundle.case.id, now, "adopted",
                                f"steps up to {item.last.step} taken as done: {_whose(item.last, own)}")
    lines = [f"adopted {count} invoice(s) from ledger {other}: each goes on after the last message that ledger "
             "sent" for other, count in adopted.items()]
    if taken:
        lines.append(f"this ledger was behind Stripe (restored from an older copy?): took over {len(taken)} "
                     f"message(s) already sent, never sent again: {', '.join(taken)}")
    return lines, touched


def _whose(last: LastMessage, own: str) -> str:
    if last.ledger == own:
        return f"sent at {iso(last.at)} before this ledger was restored from an older copy"
    return f"sent by ledger {last.ledger} before adoption ({iso(last.at)})"


def _take_over_case(ledger: Ledger, bundle: CaseBundle, sequence: Sequence, last: LastMessage, own: str) -> bool:
    """The steps up to the last message (by sequence order; by time for a step this sequence lacks) as done."""
    case = bundle.case
    ids = [s.id for s in sequence.steps]
    upto = ids.index(last.step) if last.step in ids else None
    records: dict[str, ActionRecord] = bundle.steps()
    wrote = False
    for index, step in enumerate(sequence.steps):
        due = step.at.after(case.first_failed_at)
        if step.id != last.step and (upto is None and due > last.at or upto is not None and index > upto):
            continue
        record = records.get(step.id)
        if step.id != last.step and record is not None and record.status not in ("would", "failed", "resend"):
            continue   # finished here already (done, skipped, missed, unknown): what this ledger knows stands
        detail = _whose(last, own) if step.id == last.step else \
            f"taken as done: the last message, {last.step}, was {_whose(last, own)}"
        wrote |= ledger.record_done_elsewhere(case.id, step.id, step.action, step.audience, due,
                                              min(due, last.at) if step.id != last.step else last.at,
                                              idempotency_key(case.invoice_id, step.id), detail)
    if last.step not in ids:   # a step of another sequence: still a message the customer was sent
        wrote |= ledger.record_done_elsewhere(case.id, last.step, "email", "customer", last.at, last.at,
                                              idempotency_key(case.invoice_id, last.step), _whose(last, own))
    return wrote
