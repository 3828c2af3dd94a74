"""The action registry: one entry per thing a step (or dunctl itself) can do.

Each action prepares an effect without side effects (so dry runs and monitor mode can show the recipient and the
subject) and returns how to deliver it. Delivering returns an Outcome with the case changes it caused; it never
writes the ledger itself: the executor records everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dunctl.adoption import MARK_ACTION, prepare_mark
from dunctl.channels import EmailMessage, SmsMessage
from dunctl.clock import iso
from dunctl.effect import Outcome, Prepared, done, skipped
from dunctl.errors import ChannelError
from dunctl.failures import classify
from dunctl.irreversible import consequences_as_read
from dunctl.ledger.receivables import statement_rows
from dunctl.messages import (
    CasePart,
    StepsAsRead,
    build_context,
    escalation_for_customer,
    escalation_text,
    recipient_list,
)
from dunctl.model import Invoice as InvoiceModel
from dunctl.receivables.handoff import hand_off
from dunctl.recipients import as_list, resolve_recipients
from dunctl.tick.changes import Attempted, Churned, Ending, HandToPerson, Note, Reclassify, StoreInvoice
from dunctl.tick.context import TickContext
from dunctl.tick.endings import lifted
from dunctl.tick.facts import step_records
from dunctl.tick.reconcile import end_case

if TYPE_CHECKING:   # a case's effects (tick/effects.py) load this registry when they are prepared, not before
    from dunctl.tick.effects import CaseEffect as Effect


def _context(ctx: TickContext, effect: Effect, link: str | None, also: list[Effect] = (),
             reason_shown: bool = True, contacts: list[str] | None = None, extra: dict | None = None,
             consequences: bool = True) -> dict:
    """What the templates see: this case (and, for one message covering several, the customer's other cases in
    the same currency), in the customer's language, with the case's own sequence for the final notice's date
    (`consequences` False: no template rendered says it, and it is not worked out)."""
    b = effect.bundle
    sender = ctx.config.file.sender
    parts = [CasePart(e.bundle.case.row, e.bundle.invoice.row,
                      ctx.ledger.sync.payment_method(e.bundle.invoice.payment_method_id), _update_link(ctx, e),
                      _as_it_will_run(ctx, e.bundle) if consequences else None) for e in also]
    return build_context(case=b.case.row, invoice=b.invoice.row, customer=b.customer.row if b.customer else None,
                         payment_method=ctx.ledger.sync.payment_method(b.invoice.payment_method_id),
                         update_link=link, company=sender.company, now=ctx.now,
                         sequence=_as_it_will_run(ctx, b) if consequences else None,
                         default_locale=sender.locale, timezone=sender.timezone, also=parts,
                         reason_shown=reason_shown, account=ctx.config.file.stripe.account,
                         open_invoices=_open_invoices(ctx, b), contacts=contacts, extra=extra,
                         consequences=consequences)


def _open_invoices(ctx: TickContext, bundle) -> list[dict]:
    return statement_rows(ctx.ledger.conn, bundle.case.failure_type, bundle.case.customer_id)


def _as_it_will_run(ctx: TickContext, bundle):
    """The case's pause, cancellation or write-off timed as they will now run (a message names the day it will
    happen: dunctl/irreversible.py `as_it_will_run`), without copying the sequence."""
    zone = bundle.customer.timezone if bundle.customer else None
    return StepsAsRead(consequences_as_read(ctx.sequences(bundle), bundle.case.first_failed_at, step_records(bundle),
                                            ctx.settings, ctx.now, zone))


def _update_link(ctx: TickContext, effect: Effect) -> str | None:
    invoice = effect.bundle.invoice
    kind = (effect.step.link if effect.step else None) or ctx.config.file.stripe.update_link
    if kind == "hosted_invoice" or ctx.gateway is None or not ctx.acts:
        return invoice.hosted_invoice_url
    record = InvoiceModel(id=invoice.id, customer_id=invoice.customer_id, currency=invoice.currency,
                          amount_due=invoice.amount_due, amount_paid=invoice.amount_paid,
                          amount_remaining=invoice.amount_remaining, status=invoice.status,
                          created=invoice.created_at, hosted_invoice_url=invoice.hosted_invoice_url)
    return ctx.gateway.update_link(record, kind, ctx.config.file.stripe.portal_return_url, effect.key + "-link")


def email(ctx: TickContext, effect: Effect) -> Prepared:
    return email_together(ctx, [effect])


def email_together(ctx: TickContext, effects: list[Effect]) -> Prepared:
    """A customer email; several of one customer's emails due in the same tick, in one currency, go as one
    message listing every invoice with its amount, its failure in plain words and its own pay link, and the
    total. The oldest case's step sets the template (the longest-unpaid invoice sets the tone) and recipients.
    A malformed address is left out (and said so on the case); the others still get the message."""
    effects = sorted(effects, key=lambda e: (e.bundle.case.first_failed_at, e.invoice_id))
    lead, step = effects[0], effects[0].step
    customer = lead.bundle.customer.row if lead.bundle.customer else None
    found = resolve_recipients(step, customer, lead.bundle.invoice.row)
    left_out = "; ".join(f"{a} ({why})" for a, why in found.rejected)
    if not found.to:
        return skipped("no valid address" + (f": {left_out}" if left_out else f" for {step.recipient}"))
    # a message to a person inside the company is written in the sender's language
    locale = ctx.config.file.sender.locale if step.audience == "internal" else None
    # what was sent before (a copy of the batch's rows) and what the sequence does next (its irreversible steps timed as they will
    # run): worked out for each email only when a file of its template, in a language it can be written in, may
    # say it
    languages = (locale, (customer or {}).get("preferred_locale"), ctx.config.file.sender.locale)
    sent = _sent(ctx, effects) if ctx.templates.mentions(step.template, _SENT, languages) else []
    context = _context(ctx, lead, _update_link(ctx, lead), also=effects[1:], reason_shown=_to_payer_only(step),
                       contacts=list(found.to) if _to_billing_contacts(step) else None, extra=_history(effects, sent),
                       consequences=ctx.templates.mentions(step.template, _CONSEQUENCE, languages))
    subject, text, html = ctx.templates.render_email(step.template, context, locale=locale)
    note = f"; left out {left_out}" if left_out else ""
    recipient = ", ".join(found.all)

    def deliver() -> Outcome:
        message = EmailMessage(found.to, subject, text, html, cc=found.cc)   # headers: dunctl/tick/channels.py
        delivery = ctx.channels.email(message, lead.key, ctx.now)
        return Outcome("done", f"email {step.template} to {recipient}: {delivery.detail}{note}",
                       recipient=recipient, subject=subject)

    return Prepared(f"email {step.template} to {recipient}: {subject}{note}", deliver, recipient=recipient,
                    subject=subject)


def _to_billing_contacts(step) -> bool:
    """Whether the step's recipients are exactly the customer's billing contacts (the context's
    `customer.billing_contacts`, resolved once for both)."""
    return not step.cc and as_list(step.to) in ([], ["billing_contact"])


def _to_payer_only(step) -> bool:
    """Whether a message reaches only the payer's own billing contacts (or a person inside the company): only
    they are told why a payment failed ("insufficient funds" is nobody else's business)."""
    if step.audience == "internal":
        return True
    return not step.cc and set(as_list(step.to) or ["billing_contact"]) <= {"billing_contact", "customer"}


def _sent(ctx: TickContext, effects: list[Effect]) -> list[dict]:
    """What was sent and tried on these cases, oldest first: an internal message says it; a customer message
    that follows an earlier one reads as the follow-up it is (day 0 and day 3 of the hard-decline sequence)."""
    return [{"action": a["action"], "step": a["step_id"], "on": str(a["finished_at"] or "")[:10]}
            for e in effects for a in ctx.ledger.sent_and_tried(e.bundle.case.id)]


_SENT = ("sent", "follow_up")   # the variables of a message's context that `_sent` decides
_CONSEQUENCE = ("consequence",)  # the message's and each invoice's: what the sequence does next, and when


def _history(effects: list[Effect], sent: list[dict]) -> dict:
    """What the context says of these cases' past: `pause_lifted` (dunctl lifted the pause it made on one of their
    subscriptions: the thank-you for a payment says so), `sent` and `follow_up`."""
    return {"pause_lifted": any(lifted(e.bundle) for e in effects), "sent": sent,
            "follow_up": any(s["action"] in ("email", "sms") for s in sent)}


def sms(ctx: TickContext, effect: Effect) -> Prepared:
    step, b = effect.step, effect.bundle
    phone = b.customer.phone if b.customer else None
    if not phone:
        return skipped("no phone number on the customer")
    if ctx.ledger.cases.opted_out(b.case.customer_id, "sms"):
        return skipped("the customer opted out of SMS (replied STOP)")
    text = ctx.templates.render_sms(step.template, _context(ctx, effect, _update_link(ctx, effect)),
                                    privacy=ctx.config.file.channels.sms.privacy)

    def deliver() -> Outcome:
        delivery = ctx.channels.sms(SmsMessage(phone, text), effect.key)
        return Outcome("done", f"sms {step.template} to {phone}: {delivery.detail}", recipient=phone, subject=text)

    return Prepared(f"sms {step.template} to {phone}: {text}", deliver, recipient=phone, subject=text)


def _text_for(ctx: TickContext, effect: Effect, heading: str) -> str:
    b, step = effect.bundle, effect.step
    if step is not None and step.template and ctx.templates.exists(step.template, "txt"):
        return ctx.templates.render(step.template, "txt", _context(ctx, effect, b.invoice.hosted_invoice_url))
    return _escalation(ctx, effect, heading)


def _escalation(ctx: TickContext, effect: Effect, reason: str) -> str:
    b = effect.bundle
    return escalation_text(b.case.row, b.invoice.row, b.customer.row if b.customer else None,
                           ctx.ledger.actions(b.case.id), reason, now=ctx.now, sequence=_as_it_will_run(ctx, b),
                           account=ctx.config.file.stripe.account)


def slack(ctx: TickContext, effect: Effect) -> Prepared:
    text = _text_for(ctx, effect, "Dunning update")

    def deliver() -> Outcome:
        return Outcome("done", ctx.channels.slack(text, effect.key).detail, recipient="slack")

    return Prepared("post to Slack", deliver, recipient="slack", subject=text.splitlines()[0] if text else None)


def _payload(effect: Effect) -> dict:
    case, invoice = effect.bundle.case, effect.bundle.invoice
    return {"invoice_id": invoice.id, "customer_id": case.customer_id, "step": effect.name,
            "action": effect.action, "amount_remaining": invoice.amount_remaining, "currency": invoice.currency,
            "failure_type": case.failure_type, "decline_code": case.decline_code, "attempts": case.attempts,
            "segment": case.segment, "sequence": case.sequence, "first_failed_at": case.row["first_failed_at"],
            "hosted_invoice_url": invoice.hosted_invoice_url}


def webhook(ctx: TickContext, effect: Effect) -> Prepared:
    def deliver() -> Outcome:
        delivery = ctx.channels.webhook("dunning.step", _payload(effect), effect.key, ctx.now)
        return Outcome("done", delivery.detail, recipient="webhook")

    return Prepared("post the dunning.step webhook", deliver, recipient="webhook")


def _to_person(ctx: TickContext, effect: Effect, channel: str | None, to_rule: str | None,
               reason: str, text: str | None = None, numbers: str | None = None) -> Prepared:
    """A message to a person inside the company: the escalation channel, or an email to someone named. `text`
    and `numbers` (the invoices it is about) when it covers more than `effect`'s case."""
    b = effect.bundle
    escalation = ctx.config.file.escalation
    channel = channel or escalation.channel
    text = text or _escalation(ctx, effect, reason)
    if channel == "slack":
        return Prepared(f"tell Slack: {reason}",
                        lambda: Outcome("done", "slack: " + ctx.channels.slack(text, effect.key).detail,
                                        recipient="slack", subject=reason), recipient="slack", subject=reason)
    if channel == "webhook":
        payload = {**_payload(effect), "action": "escalate", "reason": reason, "text": text,
                   **({"invoices": numbers} if numbers else {})}
        return Prepared(f"post dunning.escalated: {reason}",
                        lambda: Outcome("done", "webhook: " + ctx.channels.webhook(
                            "dunning.escalated", payload, effect.key, ctx.now).detail, recipient="webhook",
                            subject=reason), recipient="webhook", subject=reason)
    to = (recipient_list(to_rule, b.customer.row if b.customer else None, b.invoice.row) if to_rule
          else [escalation.to] if escalation.to else [])
    if not to:
        raise ChannelError("escalation by email needs escalation.to (or to: account_manager with "
                           "metadata.account_manager_email on the customer)")
    subject = f"[dunctl] {reason}: {numbers or b.invoice.number or b.invoice.id}"

    def deliver() -> Outcome:
        ctx.channels.email(EmailMessage(to, subject, text), effect.key, ctx.now)
        return Outcome("done", f"email to {shown}", recipient=shown, subject=subject)

    shown = ", ".join(to)
    return Prepared(f"email {shown}: {subject}", deliver, recipient=shown, subject=subject)


def escalate(ctx: TickContext, effect: Effect) -> Prepared:
    step = effect.step
    reason = step.note or f"Escalated by step {step.id}"
    # `to: account_manager` escalates by email to the customer's account manager unless a channel is named.
    channel = step.channel or ("email" if step.to else None)
    prepared = _to_person(ctx, effect, channel, step.recipient if step.to else None, reason)
    send = prepared.deliver

    def deliver() -> Outcome:
        outcome = send()
        outcome.changes.append(HandToPerson(effect.bundle.case.id, ctx.now))
        return outcome

    prepared.deliver = deliver
    return prepared


def escalate_together(ctx: TickContext, effects: list[Effect]) -> Prepared:
    """One customer's escalations due in the same tick, as one message to the escalation channel: a person takes
    over a customer, not an invoice. It lists each invoice as a single escalation would, after the total owed
    per currency (never added across currencies). The oldest case's step sets the reason and the channel."""
    effects = sorted(effects, key=lambda e: (e.bundle.case.first_failed_at, e.invoice_id))
    if len(effects) == 1:
        return escalate(ctx, effects[0])

    lead, step = effects[0], effects[0].step
    reason = step.note or f"Escalated by step {step.id}"
    b = lead.bundle
    text = escalation_for_customer(reason, b.case.customer_id, b.customer.row if b.customer else None,
                                   [(e.bundle.invoice.row, _escalation(ctx, e, "")) for e in effects])
    numbers = ", ".join(e.bundle.invoice.number or e.invoice_id for e in effects)
    channel = step.channel or ("email" if step.to else None)
    prepared = _to_person(ctx, lead, channel, step.recipient if step.to else None, reason, text, numbers)
    send = prepared.deliver

    def deliver() -> Outcome:
        outcome = send()
        outcome.changes.extend(HandToPerson(e.bundle.case.id, ctx.now) for e in effects)
        return outcome

    prepared.deliver = deliver
    return prepared


def notify_person(ctx: TickContext, effect: Effect) -> Prepared:
    """dunctl's own notification to the escalation channel about a case a person holds."""
    return _to_person(ctx, effect, None, None, effect.note)


def retry(ctx: TickContext, effect: Effect) -> Prepared:
    b = effect.bundle
    if not ctx.dunctl_retries:
        nxt = b.invoice.row.get("next_payment_attempt")
        return done("left to Stripe's Smart Retries" + (f" (next attempt {nxt})" if nxt else ""), quiet=True)
    return retry_now(ctx, effect)


def _new_card(bundle) -> str | None:
    """The card the customer changed to since the last failure, named in the payment so Stripe charges it and
    not an older default that comes first in its order (invoice, subscription, customer)."""
    case, failed_at = bundle.case, bundle.invoice.failed_at
    changed = case.payment_method_changed_at
    if changed is None or (failed_at is not None and changed <= failed_at):
        return None
    return case.row.get("payment_method_changed_to")


def retry_now(ctx: TickContext, effect: Effect) -> Prepared:
    """Charge the invoice now (invoices.pay under the effect's idempotency key), in either retry mode: what a
    new payment method gets on the next tick (`stripe.retry_on_update`)."""
    b = effect.bundle
    attempt = b.case.attempts + 1

    def deliver() -> Outcome:
        outcome = ctx.gateway.pay_invoice(b.invoice.id, effect.key, _new_card(b))
        if outcome.succeeded:
            changes = [StoreInvoice(outcome.invoice)] if outcome.invoice is not None else []
            paid = b.invoice.__class__.from_row({**b.invoice.row, "status": "paid",
                                                 "paid_at": b.invoice.row.get("paid_at") or iso(ctx.now),
                                                 "attempt_count": attempt,
                                                 **_amounts(outcome.invoice, b.invoice)})
            changes += [Attempted(b.case.id, attempt)]
            changes += end_case(b.case, paid, "recovered", f"retry {effect.name} succeeded", ctx.now,
                                recovered_by="retry", attempts=attempt)
            return Outcome("done", f"payment attempt {attempt} succeeded", changes=changes)
        if outcome.decline is None:
            # Accepted but not settled (a bank debit): the outcome arrives with a later sync.
            return Outcome("done", f"payment attempt {attempt} submitted: {outcome.detail or 'processing'}",
                           changes=[Attempted(b.case.id, attempt)])
        decline = outcome.decline
        failure_type = classify(decline)
        changes = [Attempted(b.case.id, attempt, decline.shown_code)]
        if failure_type != b.case.failure_type:
            changes += [Reclassify(b.case.id, failure_type, decline.shown_code),
                        Note(b.case.id, ctx.now, "reclassified", f"re-classified {b.case.failure_type} -> "
                                                                 f"{failure_type} ({decline.shown_code or 'no code'})")]
        return Outcome("done", f"payment attempt {attempt} declined: {decline.shown_code or 'no code'} "
                               f"({failure_type})", changes=changes)

    return Prepared(f"retry the payment (attempt {attempt})", deliver)


def _amounts(fresh, stored) -> dict:
    if fresh is None:
        return {"amount_paid": stored.amount_due, "amount_remaining": 0}
    return {"amount_paid": fresh.amount_paid, "amount_remaining": fresh.amount_remaining}


def pause_subscription(ctx: TickContext, effect: Effect) -> Prepared:
    subscription = effect.bundle.case.subscription_id
    if not subscription:
        return skipped("the invoice has no subscription to pause")
    behavior = effect.step.behavior or ctx.config.file.stripe.pause_behavior

    def deliver() -> Outcome:
        ctx.gateway.pause_subscription(subscription, behavior, effect.key)
        return Outcome("done", f"subscription {subscription} collection paused ({behavior})",
                       changes=[Ending(effect.bundle.case.id, "paused")])   # the escalation channel hears of it

    return Prepared(f"pause collection on {subscription} ({behavior})", deliver)


def resume_subscription(ctx: TickContext, effect: Effect) -> Prepared:
    """Lift the pause dunctl's own pause_subscription step made, once the invoice is paid (tick/endings.py)."""
    subscription = effect.bundle.case.subscription_id

    def deliver() -> Outcome:
        ctx.gateway.resume_subscription(subscription, effect.key)
        return Outcome("done", f"subscription {subscription} collection resumed: the pause dunctl made is lifted")

    return Prepared(f"lift the pause dunctl made on {subscription}", deliver)


def cancel_subscription(ctx: TickContext, effect: Effect) -> Prepared:
    b = effect.bundle
    subscription = b.case.subscription_id
    if not subscription:
        return skipped("the invoice has no subscription to cancel")
    comment = effect.step.comment or f"Cancelled by dunctl: invoice {b.invoice.number or b.invoice.id} unpaid"

    # A sequence that confirms the cancellation to the customer has steps after it and ends the case with its own
    # `close` step; without one, the cancellation ends the case.
    closes_later = _closes_after(ctx.sequences(b), effect.name)

    def deliver() -> Outcome:
        ctx.gateway.cancel_subscription(subscription, comment, effect.key)
        changes = [Churned(b.case.id)]
        if not closes_later:
            changes += end_case(b.case, b.invoice, "exhausted",
                                f"subscription {subscription} cancelled by step {effect.name}", ctx.now)
        return Outcome("done", f"subscription {subscription} cancelled", changes=changes)

    return Prepared(f"cancel {subscription}", deliver)


def _closes_after(sequence, step_id: str) -> bool:
    ids = [s.id for s in sequence.steps]
    later = sequence.steps[ids.index(step_id) + 1:] if step_id in ids else []
    return any(s.action == "close" for s in later)


def mark_uncollectible(ctx: TickContext, effect: Effect) -> Prepared:
    b = effect.bundle

    def deliver() -> Outcome:
        fresh = ctx.gateway.mark_uncollectible(b.invoice.id, effect.key)
        invoice = b.invoice if fresh is None else b.invoice.__class__.from_row(
            {**b.invoice.row, "amount_paid": fresh.amount_paid, "amount_remaining": fresh.amount_remaining})
        changes = end_case(b.case, invoice, "written_off", f"marked uncollectible by step {effect.name}", ctx.now)
        return Outcome("done", "invoice marked uncollectible", changes=changes)

    return Prepared("mark the invoice uncollectible", deliver)


def close(ctx: TickContext, effect: Effect) -> Prepared:
    b = effect.bundle
    reason = effect.step.note or f"sequence finished at step {effect.name}"
    return Prepared("close the case: sequence exhausted",
                    lambda: Outcome("done", "case closed: sequence exhausted",
                                    changes=end_case(b.case, b.invoice, "exhausted", reason, ctx.now)),
                    leaves=False)


def stop_provider_retries(ctx: TickContext, effect: Effect) -> Prepared:
    """`retries: dunctl`: Stripe's own retries are turned off on the invoice before dunctl retries it."""

    def deliver() -> Outcome:
        ctx.gateway.disable_automatic_retries(effect.invoice_id, effect.key)
        return Outcome("done", "Stripe's automatic retries turned off (auto_advance: false)", quiet=True)

    return Prepared("turn off Stripe's retries on the invoice", deliver, quiet=True)


#: Action name -> how to prepare several effects delivered as one message (dunctl/tick/executor.py `_units`).
def prepare(ctx: TickContext, effects: list[Effect]) -> Prepared:
    """One effect, or several delivered as one message (the first one's action for all)."""
    first = effects[0]
    return ACTIONS[first.action](ctx, first) if len(effects) == 1 else TOGETHER[first.action](ctx, effects)


TOGETHER: dict[str, Callable[[TickContext, list[Effect]], Prepared]] = {
    "email": email_together, "escalate": escalate_together,
}

#: Action name -> how to prepare it. Adding an action is one entry here (and its name in config.ACTIONS).
ACTIONS: dict[str, Callable[[TickContext, Effect], Prepared]] = {
    "email": email, "sms": sms, "slack": slack, "webhook": webhook, "escalate": escalate, "retry": retry,
    "pause_subscription": pause_subscription, "cancel_subscription": cancel_subscription,
    "mark_uncollectible": mark_uncollectible, "close": close,
    "notify_person": notify_person, "stop_provider_retries": stop_provider_retries, "retry_now": retry_now,
    MARK_ACTION: prepare_mark,
    "resume_subscription": resume_subscription,
    "hand_off": hand_off,   # net-terms receivables: dunctl/receivables/handoff.py
}

