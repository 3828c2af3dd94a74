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

from dunctl import irreversible
from dunctl.adoption import NotesDue
from dunctl.effect import Effect, Outcome
from dunctl.errors import ChannelError, DunctlError, GatewayAuthError, GatewayError, OutOfTime, Uncertain
from dunctl.irreversible import IRREVERSIBLE
from dunctl.tick import changes as case_changes
from dunctl.tick.context import TickContext
from dunctl.tick.facts import snapshot, step_records
from dunctl.tick.result import ActionReport, TickResult

EFFECTS_PER_BATCH = 25


@dataclass
class _Claimed:
    effect: Effect
    claim_id: int
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
    """What is delivered together (`Effect.together_key`: one customer's emails due in this tick, per currency,
    go out as one message); everything else alone. Grouped messages come last, so a retry that recovers an
    invoice in this tick still stops its message."""
    skipped = [e for e in effects if e.channel in ctx.skipped_channels]
    grouping = ctx.config.file.dunning.group_messages
    alone: list[list[Effect]] = []
    groups: dict[tuple, list[Effect]] = {}
    for e in effects:
        if e.channel in ctx.skipped_channels:
            continue
        key = e.together_key(grouping)
        if key is None:
            alone.append([e])
        else:
            groups.setdefault(key, []).append(e)
    result.deferred += len(skipped)   # a channel skipped after repeated failures: due again next tick
    return alone + list(groups.values())


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
    earned = [(n, e) for n, unit in enumerate(units) for e in unit if at_claim.earned(ctx, e)]
    # each journal's claims in one go (one statement for the new ones), then each back in its unit, in order
    by_journal: dict[str, list[int]] = {}
    for place, (_, e) in enumerate(earned):
        by_journal.setdefault(e.journal, []).append(place)
    ids: list[int | None] = [None] * len(earned)
    for journal, places in by_journal.items():
        claims = ctx.ledger.journal(journal).claim_many([earned[p][1] for p in places], ctx.now, ctx.tick_id)
        for place, claim_id in zip(places, claims):
            ids[place] = claim_id
    claimed: list[list[_Claimed]] = [[] for _ in units]
    for (n, e), claim_id in zip(earned, ids):
        if claim_id is not None:
            claimed[n].append(_Claimed(e, claim_id, at_claim.suppressed(e)))
    claimed_units = [unit for unit in claimed if unit]
    # what a message (an effect with an audience) says was sent and tried, read here, in the claim's transaction,
    # for the whole batch
    messages = {item.effect.case_id for unit in claimed_units for item in unit if item.effect.audience is not None}
    if messages - {None}:
        ctx.ledger.read_sent_and_tried(messages)
    return claimed_units


@dataclass
class _AtClaim:
    """The ledger as it is when a batch is claimed, for the effects that run only while their case is open (a
    sequence step): each one's case state and invoice status (one query per batch), and the whole case for the
    (rare) irreversible steps, which are judged again by the one rule."""

    states: dict[int, tuple[str, str]]
    bundles: dict = field(default_factory=dict)

    @classmethod
    def read(cls, ctx: TickContext, units: list[list[Effect]]) -> _AtClaim:
        steps = [e for unit in units for e in unit if e.needs_open_case]
        if not steps:
            return cls({})
        states = ctx.ledger.cases.states(e.case_id for e in steps)
        irreversible = [e.case_id for e in steps if e.action in IRREVERSIBLE]
        return cls(states, ctx.ledger.cases.bundles(irreversible) if irreversible else {})

    def suppressed(self, effect: Effect) -> Outcome | None:
        """A step whose case ended or was paused, or whose invoice is no longer open, since it was planned."""
        if not effect.needs_open_case or effect.case_id not in self.states:
            return None
        state, status = self.states[effect.case_id]
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
        bundle = self.bundles.get(effect.case_id) if effect.needs_open_case else None
        if bundle is None or effect.action not in IRREVERSIBLE or not bundle.case.is_open \
                or bundle.invoice.status != "open":
            return True    # not irreversible, or suppressed at claim: recorded as such

        case = snapshot(bundle, ctx.now, ctx.dunctl_retries, ctx.settings.monitor)
        # through the module, as the planner asks it: one rule at claim and in the plan, whoever replaces it
        return irreversible.earned(effect.step, case, ctx.sequences(bundle), step_records(bundle), ctx.settings,
                                   ctx.now) is None


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
        live = [item for item in unit if item.effect.case_id not in ended]
        acted.outcomes.extend((item, Outcome("suppressed", "the case ended earlier in this tick"))
                              for item in unit if item not in live)
        if not live:
            continue
        try:
            unit_outcomes = _act(ctx, [item.effect for item in live], _starter(ctx, acted, live))
        except OutOfTime:
            acted.untried.extend(live)   # the budget ran out before the request left: not a try, still due
            continue
        except GatewayAuthError as exc:
            acted.stop = exc
            unit_outcomes = [Outcome("failed", error=_error_text(exc), request_id=exc.request_id) for _ in live]
        first = unit_outcomes[0]
        if first.status in ("done", "failed", "unknown"):
            ctx.channel_result(channel, failed=first.status != "done")
        for item, outcome in zip(live, unit_outcomes):
            if any(isinstance(c, case_changes.EndCase) for c in outcome.changes):
                ended.add(item.effect.case_id)
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
            for journal, items in _by_journal([(i, None) for i in unit] + noted).items():
                ctx.ledger.journal(journal).mark_started(
                    ctx.now, [i.claim_id for i, o in items if o is None],
                    [(i.claim_id, o.status) for i, o in items if o is not None])
        acted.noted += len(noted)
    return start


def _by_journal(items: list[tuple[_Claimed, Outcome | None]]) -> dict[str, list[tuple[_Claimed, Outcome | None]]]:
    """Claims (with their outcomes) by the journal that holds them, in order."""
    journals: dict[str, list] = {}
    for item, outcome in items:
        journals.setdefault(item.effect.journal, []).append((item, outcome))
    return journals


def _record_batch(ctx: TickContext, acted: _Acted, result: TickResult, applied: case_changes.Applied) -> None:
    for item in acted.untried:
        ctx.ledger.journal(item.effect.journal).release(item.claim_id)
    # Every journal's results in one go each; then, in order, what each effect's family keeps (a case's timeline
    # entry) and the case changes it caused (so a case's timeline reads in the order things happened).
    for journal, items in _by_journal(acted.outcomes).items():
        ctx.ledger.journal(journal).record_many([(i.claim_id, i.effect, o) for i, o in items], ctx.now)
    for item, outcome in acted.outcomes:
        item.effect.record(ctx, outcome)
        text = outcome.error or outcome.detail
        result.actions.append(ActionReport(item.effect.invoice_id, item.effect.label, item.effect.action,
                                           outcome.status, text, outcome.recipient, outcome.subject, outcome.quiet))
        case_changes.apply(ctx.ledger, outcome.changes, ctx.now, applied)
        if item.effect.planned_for is not None:
            finished = outcome.status == "done" or (outcome.status == "would" and ctx.settings.monitor)
            applied.as_planned.setdefault(item.effect.planned_for, []).append(finished and not outcome.changes)
    for item in acted.untried:
        if item.effect.planned_for is not None:
            applied.as_planned.setdefault(item.effect.planned_for, []).append(False)
    for invoice_id, state in applied.closed:
        result.close(invoice_id, state)


def _act(ctx: TickContext, effects: list[Effect], start: Callable[[], None] = lambda: None) -> list[Outcome]:
    """Re-check, then do the effect (one, or several delivered as one message), or describe it when the tick does
    not act. Every exception becomes an outcome here, by what it means for the effect: not sent (failed, retried
    later) or maybe sent (unknown)."""
    outcomes: list[Outcome | None] = [e.suppressed(ctx) for e in effects]
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
        prepared = effect.prepare(ctx, effects)
        if not ctx.acts:
            return [Outcome("would", prepared.what, recipient=prepared.recipient, subject=prepared.subject,
                            quiet=prepared.quiet) for _ in effects]
        if prepared.leaves:
            start()
        outcome = prepared.deliver()
        outcome.quiet = outcome.quiet or prepared.quiet
        return [outcome] + [Outcome(outcome.status, outcome.detail, outcome.recipient, outcome.subject, outcome.error,
                                    outcome.request_id, outcome.quiet) for _ in effects[1:]]
    except (GatewayAuthError, OutOfTime, sqlite3.Error):   # the ledger failing (a full disk) stops the tick: see
        raise                                             # _starter; out of time: _act_batch gives the claim back
    except Uncertain as exc:   # a message that may have gone out, a Stripe write that may have taken effect
        return [Outcome("unknown", error=f"{exc.message}: {exc.consequence}; check, then "
                                         f"`dunctl case resolve {e.invoice_id} {e.name}`",
                        request_id=getattr(exc, "request_id", None)) for e in effects]
    except (ChannelError, GatewayError) as exc:
        return [Outcome("failed", error=_error_text(exc), request_id=getattr(exc, "request_id", None))
                for _ in effects]
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others (cron runs unattended)
        if type(exc).__module__.startswith("jinja2"):   # a template error (jinja2 is imported only to render)
            template = effect.step.template if effect.step else "?"
            return [Outcome("failed", error=f"template {template} does not render: {exc}; fix it and run "
                                            "`dunctl check`") for _ in effects]
        return [Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}") for _ in effects]


def _error_text(exc: DunctlError) -> str:
    text = exc.message
    if getattr(exc, "request_id", None):
        text += f" (Stripe request {exc.request_id})"
    return text
