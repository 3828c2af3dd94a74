"""What follows the end of a case: undo what dunctl did, and tell each audience the truth.

A case that ends (or whose subscription dunctl paused) comes back from reconciling or from the effect that ended
it as an `Ending` change. The tick turns each into effects that the executor runs like any other (claimed under
their own key, recorded on the case's timeline, shown by `case show`):

- recovered, and dunctl paused the subscription (its pause_subscription step is `done`, and no cancellation
  since): the pause is lifted (`resume_subscription`, keyed by the case and the pause step). A pause dunctl did
  not make is never lifted.
- recovered, and the customer was sent (delivered, not `would`) a message for this case: a "payment received"
  email, the sequence's `on_recovery` template, one per customer for its cases paid together; it says whether
  dunctl lifted a pause. Never when dunctl (or anyone) cancelled the subscription: "it continues" would be false.
- the escalation channel hears what happened: "Recovered" only of a paid invoice; otherwise what ended the case
  and what is left ("Cancelled after 4 attempts and 6 messages, $129.00 unpaid").

A thank-you inside the customer's quiet hours waits (status `waiting`) for their end; a lift or a thank-you that
failed is tried again on later ticks (`run_waiting`), as a step would be, though the case has ended.
"""

from __future__ import annotations

from dataclasses import dataclass

from dunctl.config import CUSTOMER, Step
from dunctl.ledger.records import ActionRecord, CaseBundle
from dunctl.money import format_money
from dunctl.planner import after_quiet_hours, in_quiet_hours
from dunctl.tick.changes import Ending
from dunctl.tick.context import TickContext
from dunctl.tick.effects import SYSTEM, CaseEffect, idempotency_key
from dunctl.tick.executor import execute
from dunctl.tick.result import ActionReport, TickResult

THANKS = "recovered"              # the thank-you's name on the case (system kind)
LIFT_PREFIX = "lift-"             # + the pause step's id: the lift of the pause that step made
SENT = ("done",)                  # a message counts as told only once delivered
FINISHED = ("done", "unknown", "skipped", "claimed", "would")


@dataclass(frozen=True)
class _Told:
    """What the escalation channel hears about one case."""

    name: str
    summary: str


def follow(ctx: TickContext, endings: list[Ending], result: TickResult) -> None:
    """Run what follows these endings. Lifts first: the thank-you and the escalation then say what really
    happened to the pause."""
    if not endings:
        return
    ids = list(dict.fromkeys(e.case_id for e in endings))
    bundles = ctx.ledger.cases.bundles(ids)     # one read for all (a query per table), not two per ending
    lifts = [eff for case_id in ids for eff in _lifts(ctx, bundles.get(case_id))]
    if lifts:
        execute(ctx, lifts, result)
        bundles = ctx.ledger.cases.bundles(ids)     # as the lifts left them: what the messages say of the pause
    after = [(bundles.get(e.case_id), e.what) for e in endings]
    effects = [eff for bundle, what in after if what == "recovered" for eff in _thanks(ctx, bundle, result)]
    effects += [eff for bundle, what in after if (eff := _escalation(ctx, bundle, what)) is not None]
    if effects:
        execute(ctx, effects, result)


def run_waiting(ctx: TickContext, case_ids: list[int], result: TickResult) -> None:
    """Follow-ups of ended cases that are due again (`Ledger.due_follow_ups`): a thank-you held by quiet hours,
    a lift or a thank-you whose first try failed."""
    follow(ctx, [Ending(case_id, "recovered") for case_id in case_ids], result)


# -- lifting the pause dunctl made --------------------------------------------------------------------------------


def _lifts(ctx: TickContext, bundle: CaseBundle | None) -> list[CaseEffect]:
    if bundle is None or bundle.case.state != "recovered" or not bundle.case.subscription_id:
        return []
    steps = bundle.steps()
    if any(a.action == "cancel_subscription" and a.status == "done" for a in steps.values()):
        return []    # a cancelled subscription has nothing left to resume
    if _paused_for_another(ctx, bundle):
        return []    # another unpaid invoice of the subscription still justifies the pause: its payment lifts it
    system = bundle.system()
    return [CaseEffect(bundle, SYSTEM, LIFT_PREFIX + pause.step_id, "resume_subscription", ctx.now,
                       channel="stripe")
            for pause in steps.values() if pause.action == "pause_subscription" and pause.status == "done"
            and _again(ctx, system.get(LIFT_PREFIX + pause.step_id))]


def _paused_for_another(ctx: TickContext, bundle: CaseBundle) -> bool:
    others = [c for c in ctx.ledger.cases.ids_for_subscription(bundle.case.subscription_id) if c != bundle.case.id]
    return any(a["action"] == "pause_subscription" and a["status"] == "done"
               for case_id in others for a in ctx.ledger.actions(case_id))


def _again(ctx: TickContext, record: ActionRecord | None) -> bool:
    """May this follow-up run now: never tried, waiting and due, or failed with tries left."""
    if record is None:
        return True
    if record.status == "waiting":
        return record.due_at is None or record.due_at <= ctx.now
    return record.status == "failed" and record.tries < ctx.settings.max_action_tries


def lifted(bundle: CaseBundle) -> bool:
    """Did dunctl lift a pause it made on this case's subscription (or, in monitor mode, would it have)?"""
    return any(a.step_id.startswith(LIFT_PREFIX) and a.status in ("done", "would") for a in bundle.system().values())


# -- the customer's thank-you --------------------------------------------------------------------------------------


def _thanks(ctx: TickContext, bundle: CaseBundle | None, result: TickResult) -> list[CaseEffect]:
    if bundle is None or bundle.case.state != "recovered":
        return []
    on_recovery = ctx.sequences(bundle).on_recovery
    if on_recovery is None or not _again(ctx, bundle.system().get(THANKS)) or not _was_told(ctx, bundle):
        return []
    if _cancelled(bundle) or _pause_left(bundle) or _paused_elsewhere(bundle):
        return []     # "your subscription continues" would not be true; the escalation channel is told instead
    step = Step(id=THANKS, at="0m", action="email", template=on_recovery.email)
    key = idempotency_key(bundle.case.invoice_id, THANKS, SYSTEM)
    if bundle.customer is not None and bundle.customer.dunning_off:
        _record(ctx, bundle, "skipped", key, "the customer has metadata dunning=off", result)
        return []
    zone = bundle.customer.timezone if bundle.customer else None
    # Quiet hours hold a thank-you like any customer message. The contact policy's weekly cap and minimum gap do
    # not: they protect a customer from being chased, and a receipt for their own payment is not chasing; holding
    # it for days would make it arrive after the fact it confirms has gone stale.
    if in_quiet_hours(ctx.now, ctx.settings, zone):
        until = after_quiet_hours(ctx.now, ctx.settings, zone)
        if ctx.ledger.defer_action(bundle.case.id, SYSTEM, THANKS, "email", "email", CUSTOMER, until, key):
            ctx.ledger.cases.add_timeline(bundle.case.id, ctx.now, "waiting", f"{THANKS} (email) waits for the end of "
                                                                        "quiet hours in the customer's time zone")
        return []
    return [CaseEffect(bundle, SYSTEM, THANKS, "email", ctx.now, audience=CUSTOMER, channel="email", step=step)]


def _was_told(ctx: TickContext, bundle: CaseBundle) -> bool:
    """Was the customer sent a message for this case? An invoice paid before any is thanked by nobody: the
    customer never knew it had failed. In monitor mode, what was recorded as `would` counts, to show it."""
    sent = SENT + (("would",) if ctx.settings.monitor else ())
    return any(a.kind == "step" and a.audience == CUSTOMER and a.status in sent for a in bundle.actions)


def _cancelled(bundle: CaseBundle) -> bool:
    done = any(a.action == "cancel_subscription" and a.status == "done" for a in bundle.actions)
    return done or (bundle.subscription is not None and bundle.subscription.status == "canceled")


def _paused_by_dunctl(bundle: CaseBundle) -> bool:
    return any(a.action == "pause_subscription" and a.status == "done" for a in bundle.steps().values())


def _pause_left(bundle: CaseBundle) -> bool:
    """dunctl paused the subscription and the pause is not lifted yet (the lift failed): wait for it."""
    return _paused_by_dunctl(bundle) and not lifted(bundle)


def _paused_elsewhere(bundle: CaseBundle) -> bool:
    """Someone else paused the subscription (as last synced): dunctl leaves that pause alone."""
    sub = bundle.subscription
    paused = sub is not None and (sub.status == "paused" or bool(sub.row.get("pause_behavior")))
    return paused and not _paused_by_dunctl(bundle)


def _record(ctx: TickContext, bundle: CaseBundle, status: str, key: str, why: str, result: TickResult) -> None:
    if ctx.ledger.record_decision(bundle.case.id, SYSTEM, THANKS, "email", status, ctx.now, ctx.now, key, why,
                                  ctx.tick_id, CUSTOMER):
        ctx.ledger.cases.add_timeline(bundle.case.id, ctx.now, status, f"{THANKS} (email) {status}: {why}")
        result.actions.append(ActionReport(bundle.case.invoice_id, THANKS, "email", status, why))


# -- the escalation channel ----------------------------------------------------------------------------------------


def _escalation(ctx: TickContext, bundle: CaseBundle | None, what: str) -> CaseEffect | None:
    if bundle is None or not _escalation_configured(ctx):
        return None
    told = _what_to_tell(ctx, bundle, what)
    if told is None or bundle.system().get(told.name) is not None:
        return None
    return CaseEffect(bundle, SYSTEM, told.name, "notify_person", ctx.now, audience="internal",
                      channel=ctx.config.file.escalation.channel, note=told.summary)


def _escalation_configured(ctx: TickContext) -> bool:
    escalation = ctx.config.file.escalation
    if escalation.channel == "email":
        return bool(escalation.to) and getattr(ctx.config.file.channels, "email", None) is not None
    return getattr(ctx.config.file.channels, escalation.channel, None) is not None


def _what_to_tell(ctx: TickContext, bundle: CaseBundle, what: str) -> _Told | None:
    """What happened, in the words of the subject line. A case nobody escalated is worth a message only when
    dunctl itself took the service away or the sequence ran out: then collections owns what is left."""
    case = bundle.case
    if what == "recovered":
        if not case.with_person:
            return None
        if _cancelled(bundle):
            return _Told("recovered-notice", f"Recovered after the subscription was cancelled: {case.subscription_id} "
                                             "stays cancelled unless someone restarts it")
        if _pause_left(bundle):
            return _Told("recovered-notice", f"Recovered, but lifting dunctl's pause on {case.subscription_id} "
                                             "failed: resume it in Stripe")
        if _paused_elsewhere(bundle):
            return _Told("recovered-notice", f"Recovered; {case.subscription_id} stays paused (not by dunctl)")
        lift = f"; dunctl lifted its pause on {case.subscription_id}" if lifted(bundle) else ""
        return _Told("recovered-notice", f"Recovered, no action needed{lift}")
    words = _ENDED.get(what)
    if words is None or (what in ("voided", "closed") and not case.with_person):
        return None
    if what == "exhausted" and _cancelled(bundle):
        words = "Cancelled"
    return _Told("paused-notice" if what == "paused" else "ended-notice", f"{words} after {_counts(ctx, bundle)}")


_ENDED = {"paused": "Collection paused", "exhausted": "Dunning sequence ended", "written_off": "Written off",
          "voided": "Invoice voided", "closed": "Case closed"}


def _counts(ctx: TickContext, bundle: CaseBundle) -> str:
    """"4 attempts and 6 messages, $129.00 unpaid": payment attempts (Stripe's and dunctl's), customer messages
    delivered for this case, and the amount still owed, formatted for the sender's locale."""
    attempts = bundle.case.attempts
    messages = sum(1 for a in bundle.actions if a.audience == CUSTOMER and a.status == "done")
    invoice = bundle.invoice
    left = invoice.amount_remaining
    owed = (f"{format_money(left, invoice.currency, ctx.config.file.sender.locale)} unpaid" if left > 0
            else "nothing left unpaid")
    return f"{_plural(attempts, 'attempt')} and {_plural(messages, 'message')}, {owed}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
