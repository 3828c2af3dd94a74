"""The one path every effect takes: claim -> re-check -> start -> act -> record.

Claims of a batch are written in one transaction before any effect, results (and the case changes the effects
caused) in one after, which also claims the next batch. Each claim is decided against the ledger as it is when it
is claimed, not as the tick planned it (`_AtClaim`): a case that ended or was paused since (by an earlier batch,
or by a person running `dunctl case pause` meanwhile) gets nothing more, and an irreversible step runs only if
the one rule for them, `earned` in dunctl/irreversible.py, still holds on the case as it is now.


Between the two durable commits, right before an effect leaves dunctl (a send, a Stripe call), one light
commit marks it started and notes the outcome of the effects acted before it (their status only, on the same
rows). A tick that dies therefore leaves at most one started effect without an outcome: the next tick records it
`unknown` (visible, resolvable by a person, never silently repeated), records the noted outcomes, and gives back
the claims that never started, due as before.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from dunctl.adoption import MARK_ACTION, NotesDue
from dunctl.errors import ChannelError, DeliveryUncertain, DunctlError, GatewayAuthError, GatewayError
from dunctl.tick import changes as case_changes
from dunctl.tick.actions import ACTIONS, TOGETHER
from dunctl.tick.context import TickContext
from dunctl.tick.effects import NOTICE, STEP, SYSTEM, Effect, Outcome
from dunctl.tick.result import ActionReport, TickResult

EFFECTS_PER_BATCH = 25


@dataclass
class _Claimed:
    effect: Effect
    action_id: int
    suppressed: Outcome | None = None   # decided at claim: the case or invoice changed since it was planned


def execute(ctx: TickContext, effects: list[Effect], result: TickResult) -> case_changes.Applied:
    """Run effects exactly once, in batches. Returns what their outcomes changed (cases ended, people to tell).
    A batch's results are written in the same transaction as the next batch's claims: one commit per batch."""
    applied = case_changes.Applied()
    units = _units(ctx, effects, result)
    notes = NotesDue(ctx, units)
    acted: _Acted | None = None
    while units:
        batch: list[list[Effect]] = []
        while units and (not batch or sum(map(len, batch)) + len(units[0]) <= EFFECTS_PER_BATCH):
            batch.append(units.pop(0))
        notes.taken(batch)
        if ctx.should_stop():
            result.deferred += sum(map(len, batch)) + sum(map(len, units))   # still due next tick, never missed
            break
        with ctx.ledger.transaction():
            if acted is not None:
                _record_batch(ctx, acted, result, applied)
            claimed = _claim_batch(ctx, batch)
        acted = _act_batch(ctx, claimed, result)
        if acted.stop is not None:
            break
        units[:0] = [[mark] for mark in notes.after([(i.effect, o.status) for i, o in acted.outcomes])]
    if acted is not None:
        with ctx.ledger.transaction():
            _record_batch(ctx, acted, result, applied)
        if acted.stop is not None:
            raise acted.stop
    return applied


def _units(ctx: TickContext, effects: list[Effect], result: TickResult) -> list[list[Effect]]:
    """What is delivered together: one customer's emails due in this tick, per currency, go out as one message
    (one conversation per customer); everything else alone. Customer messages come last, so a retry that
    recovers an invoice in this tick still stops its message."""
    skipped = [e for e in effects if e.channel in ctx.skipped_channels]
    effects = [e for e in effects if e.channel not in ctx.skipped_channels]
    grouping = ctx.config.file.dunning.group_messages
    alone = [[e] for e in effects if not _together(e, grouping)]
    groups: dict[tuple, list[Effect]] = {}
    for e in effects:
        if _together(e, grouping):
            groups.setdefault(_group_key(e), []).append(e)
    result.deferred += len(skipped)   # a channel skipped after repeated failures: due again next tick
    return alone + list(groups.values())


def _group_key(effect: Effect) -> tuple:
    """Emails group per customer and currency; escalations per customer and destination, whatever the currency
    (the message gives a total per currency)."""
    if effect.action == "escalate":
        return effect.bundle.case.customer_id, "escalate", effect.step.channel, effect.step.to
    return effect.bundle.case.customer_id, effect.bundle.invoice.currency, effect.kind


def _groupable(effect: Effect) -> bool:
    return effect.kind == "step" and effect.action == "email" and effect.audience == "customer"


def _together(effect: Effect, grouping: bool) -> bool:
    """Sent as one message with the customer's others of its kind: a thank-you for cases paid together always
    is (one per recovered conversation), dunning emails when `dunning.group_messages` is on."""
    thanks = effect.kind == SYSTEM and effect.action == "email" and effect.audience == "customer"
    escalation = effect.kind == STEP and effect.action == "escalate"   # a person takes over a customer
    return thanks or escalation or (grouping and _groupable(effect))


@dataclass
class _Acted:
    """A batch after its effects ran: the outcomes to record, the claims to give back, and the error that
    stopped the tick (a rejected Stripe key), if any."""

    outcomes: list[tuple[_Claimed, Outcome]]
    untried: list[_Claimed]
    stop: GatewayAuthError | None = None
    noted: int = 0     # how many of the outcomes a later effect's "started" commit noted


def _claim_batch(ctx: TickContext, units: list[list[Effect]]) -> list[list[_Claimed]]:
    at_claim = _AtClaim.read(ctx, units)
    claimed_units = []
    for unit in units:
        claimed = [_Claimed(e, action_id, at_claim.suppressed(e)) for e in unit
                   if at_claim.earned(ctx, e) and (action_id := _claim(ctx, e)) is not None]
        if claimed:
            claimed_units.append(claimed)
    return claimed_units


@dataclass
class _AtClaim:
    """The ledger as it is when a batch is claimed: each step's case state and invoice status (one query per
    batch), and the whole case for the (rare) irreversible steps, which are judged again by the one rule."""

    states: dict[int, tuple[str, str]]
    bundles: dict = field(default_factory=dict)

    @classmethod
    def read(cls, ctx: TickContext, units: list[list[Effect]]) -> _AtClaim:
        from dunctl.irreversible import IRREVERSIBLE

        steps = [e for unit in units for e in unit if e.kind == STEP]
        if not steps:
            return cls({})
        states = ctx.ledger.cases.states(e.bundle.case.id for e in steps)
        irreversible = [e.bundle.case.id for e in steps if e.action in IRREVERSIBLE]
        return cls(states, ctx.ledger.cases.bundles(irreversible) if irreversible else {})

    def suppressed(self, effect: Effect) -> Outcome | None:
        """A step whose case ended or was paused, or whose invoice is no longer open, since it was planned."""
        if effect.kind != STEP or effect.bundle.case.id not in self.states:
            return None
        state, status = self.states[effect.bundle.case.id]
        if status != "open":
            return Outcome("suppressed", f"the invoice is {status} (found when the step was claimed)")
        if state == "paused":
            return Outcome("suppressed", "the case was paused (by a person, or the subscription outside dunctl) "
                                         "after this tick planned the step")
        if state != "open":
            return Outcome("suppressed", f"the case is {state} (found when the step was claimed)")
        return None

    def earned(self, ctx: TickContext, effect: Effect) -> bool:
        """False for an irreversible step the rule no longer allows on the case as it is now: it is not claimed,
        and stays due (planning the case again says why it waits)."""
        from dunctl.irreversible import IRREVERSIBLE, earned

        bundle = self.bundles.get(effect.bundle.case.id) if effect.kind == STEP else None
        if bundle is None or effect.action not in IRREVERSIBLE or not bundle.case.is_open \
                or bundle.invoice.status != "open":
            return True    # not irreversible, or suppressed at claim: recorded as such
        from dunctl.tick.facts import snapshot, step_records

        case = snapshot(bundle, ctx.now, ctx.dunctl_retries, ctx.settings.monitor)
        return earned(effect.step, case, ctx.sequences(bundle), step_records(bundle), ctx.settings, ctx.now) is None


def _act_batch(ctx: TickContext, claimed_units: list[list[_Claimed]], result: TickResult) -> _Acted:
    acted = _Acted([], [])
    ended: set[int] = set()
    for unit in claimed_units:
        channel = unit[0].effect.channel
        if acted.stop is not None or channel in ctx.skipped_channels or ctx.should_stop():
            acted.untried.extend(unit)   # never attempted: the claims are given back, the effects stay due
            continue
        acted.outcomes.extend((item, item.suppressed) for item in unit if item.suppressed is not None)
        unit = [item for item in unit if item.suppressed is None]
        live = [item for item in unit if _case_id(item.effect) not in ended]
        acted.outcomes.extend((item, Outcome("suppressed", "the case ended earlier in this tick"))
                              for item in unit if item not in live)
        if not live:
            continue
        try:
            unit_outcomes = _act(ctx, [item.effect for item in live], _starter(ctx, acted, live))
        except GatewayAuthError as exc:
            acted.stop = exc
            unit_outcomes = [Outcome("failed", error=_error_text(exc), request_id=exc.request_id) for _ in live]
        first = unit_outcomes[0]
        if first.status in ("done", "failed", "unknown"):
            ctx.channel_result(channel, failed=first.status != "done")
        for item, outcome in zip(live, unit_outcomes):
            if any(isinstance(c, case_changes.EndCase) for c in outcome.changes):
                ended.add(_case_id(item.effect))
            acted.outcomes.append((item, outcome))
    result.deferred += len(acted.untried)
    return acted


def _starter(ctx: TickContext, acted: _Acted, unit: list[_Claimed]) -> Callable[[], None]:
    """What runs right before the unit leaves dunctl: one light commit (Ledger.light_transaction) marking it
    started and noting the outcomes acted since the last one. Only the rows of this batch's actions are written
    (a page or two), so it costs a fraction of recording everything, which waits for the batch's end."""
    def start() -> None:
        noted = acted.outcomes[acted.noted:]
        with ctx.ledger.light_transaction():
            ctx.ledger.mark_started(
                ctx.now, actions=[i.action_id for i in unit if i.effect.kind != NOTICE],
                notices=[i.action_id for i in unit if i.effect.kind == NOTICE],
                action_outcomes=[(i.action_id, o.status) for i, o in noted if i.effect.kind != NOTICE],
                notice_outcomes=[(i.action_id, o.status) for i, o in noted if i.effect.kind == NOTICE])
        acted.noted += len(noted)
    return start


def _record_batch(ctx: TickContext, acted: _Acted, result: TickResult, applied: case_changes.Applied) -> None:
    for item in acted.untried:
        if item.effect.kind == NOTICE:
            ctx.ledger.release_notice_claim(item.action_id)
        else:
            ctx.ledger.release_claim(item.action_id)
    # Every result (and the case's last action) in one statement each; then, in order, each one's timeline entry
    # and the case changes it caused (so a case's timeline reads in the order things happened).
    own = [(item, outcome) for item, outcome in acted.outcomes if item.effect.kind != NOTICE]
    ctx.ledger.record_results([(item.action_id, outcome.status, outcome.detail or None, outcome.error,
                                outcome.recipient, outcome.subject, outcome.request_id, outcome.message_ref)
                               for item, outcome in own], ctx.now)
    ctx.ledger.cases.set_last_actions([(item.effect.bundle.case.id, f"{item.effect.name}: {outcome.status}")
                                 for item, outcome in own
                                 if item.effect.kind == "step" or outcome.status == "failed"], ctx.now)
    for item, outcome in acted.outcomes:
        _record(ctx, item, outcome, result)
        case_changes.apply(ctx.ledger, outcome.changes, ctx.now, applied)
        if item.effect.kind != NOTICE and item.effect.action != MARK_ACTION:   # a note changes no plan
            finished = outcome.status == "done" or (outcome.status == "would" and ctx.settings.monitor)
            applied.as_planned.setdefault(item.effect.bundle.case.id, []).append(finished and not outcome.changes)
    for item in acted.untried:
        if item.effect.kind != NOTICE and item.effect.action != MARK_ACTION:
            applied.as_planned.setdefault(item.effect.bundle.case.id, []).append(False)
    for invoice_id, state in applied.closed:
        result.close(invoice_id, state)


def _claim(ctx: TickContext, e: Effect) -> int | None:
    if e.kind == NOTICE:     # pre-dunning notices have their own table (dunctl/notices)
        return ctx.ledger.claim_notice(e.notice_id, ctx.now, ctx.tick_id)
    return ctx.ledger.claim_action(e.bundle.case.id, e.kind, e.name, e.action, e.channel, e.audience, e.due_at,
                                   ctx.now, e.key, ctx.tick_id)


def _case_id(effect: Effect) -> int | None:
    return None if effect.kind == NOTICE else effect.bundle.case.id


def _act(ctx: TickContext, effects: list[Effect], start: Callable[[], None] = lambda: None) -> list[Outcome]:
    """Re-check, then do the effect (one, or several delivered as one message), or describe it when the tick does
    not act. Every exception becomes an outcome here, by what it means for the effect: not sent (failed, retried
    later) or maybe sent (unknown)."""
    outcomes: list[Outcome | None] = [_suppressed(ctx, e) for e in effects]
    todo = [e for e, o in zip(effects, outcomes) if o is None]
    if todo:
        shared = _deliver(ctx, todo, start)
        ref = f"{todo[0].key}+{len(todo) - 1}" if len(todo) > 1 else None
        others = {e.invoice_id for e in todo}
        it = iter(shared)
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                mine = next(it)
                if ref is not None:
                    mine.message_ref = ref
                    mine.detail += f" (one message for {', '.join(sorted(others))})"
                outcomes[i] = mine
    return outcomes


def _deliver(ctx: TickContext, effects: list[Effect], start: Callable[[], None]) -> list[Outcome]:
    effect = effects[0]
    try:
        if effect.kind == NOTICE:
            prepared = effect.prepare(ctx)
        elif len(effects) == 1:
            prepared = ACTIONS[effect.action](ctx, effect)
        else:
            prepared = TOGETHER[effect.action](ctx, effects)
        if not ctx.acts:
            return [Outcome("would", prepared.what, recipient=prepared.recipient, subject=prepared.subject,
                            quiet=prepared.quiet) for _ in effects]
        if prepared.leaves:
            start()
        outcome = prepared.deliver()
        outcome.quiet = outcome.quiet or prepared.quiet
        return [outcome] + [Outcome(outcome.status, outcome.detail, outcome.recipient, outcome.subject, outcome.error,
                                    outcome.request_id, outcome.quiet) for _ in effects[1:]]
    except (GatewayAuthError, sqlite3.Error):   # the ledger failing (a full disk) stops the tick: see _starter
        raise
    except DeliveryUncertain as exc:
        return [Outcome("unknown", error=f"{exc.message}: it may have been delivered, so it will not be re-sent; "
                                         f"check, then `dunctl case resolve {e.invoice_id} {e.name}`")
                for e in effects]
    except (ChannelError, GatewayError) as exc:
        return [Outcome("failed", error=_error_text(exc), request_id=getattr(exc, "request_id", None))
                for _ in effects]
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others (cron runs unattended)
        if type(exc).__module__.startswith("jinja2"):   # a template error (jinja2 is imported only to render)
            template = effect.step.template if effect.step else "?"
            return [Outcome("failed", error=f"template {template} does not render: {exc}; fix it and run "
                                            "`dunctl check`") for _ in effects]
        return [Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}") for _ in effects]


def _suppressed(ctx: TickContext, effect: Effect) -> Outcome | None:
    """Suppression: the tick synced right before its batches, so the ledger knows of payments up to then; with
    `stripe.recheck_before_action` the invoice is also re-read from Stripe right before the effect."""
    if effect.kind == NOTICE:
        return effect.suppressed(ctx)
    invoice = effect.bundle.invoice
    if ctx.config.file.stripe.recheck_before_action and ctx.gateway is not None and ctx.acts \
            and effect.kind == "step":
        try:
            fresh = ctx.gateway.get_invoice(invoice.id)
        except GatewayAuthError:
            raise
        except GatewayError:
            fresh = None  # the provider is unreachable: act on what the ledger knows
        if fresh is not None and fresh.status != "open":
            # Stored as changed: the reconcile that follows the batches ends the case.
            return Outcome("suppressed", f"the invoice is {fresh.status}: nothing more is sent",
                           changes=[case_changes.StoreInvoice(fresh, reconcile=True)])
    if effect.kind == "step" and (invoice.status != "open" or not effect.bundle.case.is_open):
        return Outcome("suppressed", f"the invoice is {invoice.status}, the case {effect.bundle.case.state}")
    return None


def _record(ctx: TickContext, item: _Claimed, outcome: Outcome, result: TickResult) -> None:
    effect = item.effect
    if effect.kind == NOTICE:
        effect.record(ctx, item.action_id, outcome, result)
        return
    text = outcome.error or outcome.detail   # the result itself is written for the whole batch at once
    ctx.ledger.cases.add_timeline(effect.bundle.case.id, ctx.now, "action",
                            f"{effect.name} ({effect.action}) {outcome.status}: {text}",
                            {"request_id": outcome.request_id} if outcome.request_id else None)
    result.actions.append(ActionReport(effect.invoice_id, effect.name, effect.action, outcome.status, text,
                                       outcome.recipient, outcome.subject, outcome.quiet))


def _error_text(exc: DunctlError) -> str:
    text = exc.message
    if getattr(exc, "request_id", None):
        text += f" (Stripe request {exc.request_id})"
    return text
