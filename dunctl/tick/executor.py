"""The one path every effect takes: claim -> re-check -> act -> record.

Claims of a batch are written in one transaction before any effect, results (and the case changes the effects
caused) in one after. A tick that dies in between leaves its batch's claims, which the next tick records as
`unknown`: visible, resolvable by a person, never silently repeated. Batches are small (EFFECTS_PER_BATCH), so a
crash never hides more than a few dozen actions, while durability costs two commits per batch, not per action.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError

from dunctl.errors import ChannelError, DeliveryUncertain, DunctlError, GatewayAuthError, GatewayError
from dunctl.tick import changes as case_changes
from dunctl.tick.actions import ACTIONS
from dunctl.tick.context import TickContext
from dunctl.tick.effects import NOTICE, Effect, Outcome
from dunctl.tick.result import ActionReport, TickResult

EFFECTS_PER_BATCH = 25


@dataclass
class _Claimed:
    effect: Effect
    action_id: int


def execute(ctx: TickContext, effects: list[Effect], result: TickResult) -> case_changes.Applied:
    """Run effects exactly once, in batches. Returns what their outcomes changed (cases ended, people to tell)."""
    applied = case_changes.Applied()
    for start in range(0, len(effects), EFFECTS_PER_BATCH):
        _run_batch(ctx, effects[start:start + EFFECTS_PER_BATCH], result, applied)
    return applied


def _run_batch(ctx: TickContext, effects: list[Effect], result: TickResult, applied: case_changes.Applied) -> None:
    with ctx.ledger.transaction():
        claimed = [_Claimed(e, action_id) for e in effects if (action_id := _claim(ctx, e)) is not None]
    outcomes: list[tuple[_Claimed, Outcome]] = []
    ended: set[int] = set()
    stop: GatewayAuthError | None = None
    for item in claimed:
        case_id = item.effect.bundle.case.id if item.effect.kind != NOTICE else None
        if stop is not None:
            outcome = Outcome("failed", error=f"not attempted: the tick stopped ({stop.message})")
        elif case_id in ended:
            outcome = Outcome("suppressed", "the case ended earlier in this tick")
        else:
            try:
                outcome = _act(ctx, item.effect)
            except GatewayAuthError as exc:
                stop = exc
                outcome = Outcome("failed", error=_error_text(exc), request_id=exc.request_id)
        if any(isinstance(c, case_changes.EndCase) for c in outcome.changes):
            ended.add(case_id)
        outcomes.append((item, outcome))
    with ctx.ledger.transaction():
        for item, outcome in outcomes:
            _record(ctx, item, outcome, result)
            case_changes.apply(ctx.ledger, outcome.changes, ctx.now, applied)
    for invoice_id, state in applied.closed:
        result.close(invoice_id, state)
    if stop is not None:
        raise stop


def _claim(ctx: TickContext, e: Effect) -> int | None:
    if e.kind == NOTICE:     # pre-dunning notices have their own table (dunctl/notices)
        return ctx.ledger.claim_notice(e.notice_id, ctx.now, ctx.tick_id)
    return ctx.ledger.claim_action(e.bundle.case.id, e.kind, e.name, e.action, e.channel, e.audience, e.due_at,
                                   ctx.now, e.key, ctx.tick_id)


def _act(ctx: TickContext, effect: Effect) -> Outcome:
    """Re-check, then do the effect (or describe it, when the tick does not act). Every exception becomes an
    outcome here, by what it means for the effect: not sent (failed, retried later) or maybe sent (unknown)."""
    suppressed = _suppressed(ctx, effect)
    if suppressed is not None:
        return suppressed
    try:
        prepared = effect.prepare(ctx) if effect.kind == NOTICE else ACTIONS[effect.action](ctx, effect)
        if not ctx.acts:
            return Outcome("would", prepared.what, recipient=prepared.recipient, subject=prepared.subject,
                           quiet=prepared.quiet)
        outcome = prepared.deliver()
        outcome.quiet = outcome.quiet or prepared.quiet
        return outcome
    except GatewayAuthError:
        raise
    except DeliveryUncertain as exc:
        return Outcome("unknown", error=f"{exc.message}: it may have been delivered, so it will not be re-sent; "
                                        f"check, then `dunctl case resolve {effect.invoice_id} {effect.name}`")
    except (ChannelError, GatewayError) as exc:
        return Outcome("failed", error=_error_text(exc), request_id=getattr(exc, "request_id", None))
    except TemplateError as exc:
        template = effect.step.template if effect.step else "?"
        return Outcome("failed", error=f"template {template} does not render: {exc}; fix it and run `dunctl check`")
    except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others (cron runs unattended)
        return Outcome("failed", error=f"internal error: {type(exc).__name__}: {exc}")


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
    ctx.ledger.record_result(item.action_id, outcome.status, ctx.now, detail=outcome.detail or None,
                             error=outcome.error, recipient=outcome.recipient, subject=outcome.subject,
                             request_id=outcome.request_id)
    text = outcome.error or outcome.detail
    case_id = effect.bundle.case.id
    ctx.ledger.add_timeline(case_id, ctx.now, "action", f"{effect.name} ({effect.action}) {outcome.status}: {text}",
                            {"request_id": outcome.request_id} if outcome.request_id else None)
    if effect.kind == "step" or outcome.status == "failed":
        ctx.ledger.set_last_action(case_id, f"{effect.name}: {outcome.status}", ctx.now)
    result.actions.append(ActionReport(effect.invoice_id, effect.name, effect.action, outcome.status, text,
                                       outcome.recipient, outcome.subject, outcome.quiet))


def _error_text(exc: DunctlError) -> str:
    text = exc.message
    if getattr(exc, "request_id", None):
        text += f" (Stripe request {exc.request_id})"
    return text
