"""What `dunctl tick` does: sync, open and close cases, then run every due step exactly once.

    sync        gateway batches -> ledger (each batch and its cursor in one transaction)
    reconcile   changed invoices and signals -> cases opened, re-classified, closed
    run         for each case due now: plan (pure) -> claim -> re-check -> effect -> record

Exactly once: a step's action is claimed under the unique (case, step) key before any effect and its result is
recorded after. A crash in between leaves the claim, which the next tick turns into `unknown`: visible in status,
never silently re-sent. A Stripe call carries an idempotency key derived from the same key.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from jinja2 import TemplateError

from dunctl.channels import Delivery, EmailMessage, SmsMessage
from dunctl.clock import from_iso, iso
from dunctl.conditions import matches
from dunctl.config import Config, Sequence, Step, quiet_window, sequence_definition, sequence_hash
from dunctl.errors import ChannelError, DunctlError, GatewayAuthError, GatewayError
from dunctl.failures import UNKNOWN, classify, shown_code
from dunctl.gateway import Gateway
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.messages import Templates, build_context, escalation_text, recipient
from dunctl.model import Invoice as InvoiceRecord
from dunctl.model import SyncBatch
from dunctl.planner import MISSED, SKIP, CaseSnapshot, Settings, StepRecord, channel_of, plan

ENDED_BY_INVOICE = {"paid": "recovered", "void": "voided", "uncollectible": "written_off"}


@dataclass
class ActionReport:
    invoice_id: str
    step: str
    action: str
    status: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"invoice_id": self.invoice_id, "step": self.step, "action": self.action, "status": self.status,
                "detail": self.detail}


@dataclass
class SyncResult:
    requests: int = 0
    events: int = 0
    invoices_new: int = 0
    invoices_updated: int = 0
    cases_opened: int = 0
    cases_closed: int = 0


@dataclass
class TickResult:
    now: datetime
    dry_run: bool = False
    sync: SyncResult | None = None
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    actions: list[ActionReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # what failed outside any one action (a sync outage)

    @property
    def failed(self) -> list[ActionReport]:
        return [a for a in self.actions if a.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    @property
    def did_something(self) -> bool:
        return bool(self.opened or self.closed or self.actions)

    def to_dict(self) -> dict:
        return {"now": iso(self.now), "dry_run": self.dry_run, "opened": self.opened, "closed": self.closed,
                "actions": [a.to_dict() for a in self.actions], "errors": self.errors}


# -- channels -----------------------------------------------------------------------------------------------


class ChannelSet:
    """The configured transports, built on first use (a tick that sends nothing needs no SMTP server)."""

    def __init__(self, config: Config, environ: Mapping[str, str]):
        self.config = config
        self.environ = environ
        self._built: dict[str, object] = {}

    def _get(self, name: str):
        if name not in self._built:
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str):
        channels = self.config.file.channels
        settings = getattr(channels, name)
        if settings is None:
            raise ChannelError(f"the {name} channel is not configured (channels.{name} in {self.config.path.name})")
        if name == "email":
            from dunctl.channels.email import FileTransport, SmtpTransport

            if settings.transport == "file":
                return FileTransport((self.config.base_dir / settings.dir).resolve())
            return SmtpTransport(settings, self.environ)
        if name == "slack":
            from dunctl.channels.slack import SlackTransport

            return SlackTransport(settings, self.environ)
        if name == "webhook":
            from dunctl.channels.webhook import WebhookTransport

            return WebhookTransport(settings, self.environ)
        from dunctl.channels.sms import TwilioTransport

        return TwilioTransport(settings, self.environ)

    def email(self, message: EmailMessage, key: str, now: datetime) -> Delivery:
        sender = self.config.file.sender
        return self._get("email").send(message, sender=sender.from_, reply_to=sender.reply_to, key=key, now=now)

    def sms(self, message: SmsMessage, key: str) -> Delivery:
        return self._get("sms").send(message, key)

    def slack(self, text: str, key: str) -> Delivery:
        return self._get("slack").post(text, None, key)

    def webhook(self, event: str, payload: dict, key: str, now: datetime) -> Delivery:
        return self._get("webhook").post(event, payload, key, now)


def build_channels(config: Config, environ: Mapping[str, str]) -> ChannelSet:
    return ChannelSet(config, environ)


# -- sync ---------------------------------------------------------------------------------------------------


def run_sync(ledger: Ledger, gateway: Gateway, now: datetime, full: bool = False,
             progress: Callable[[SyncResult], None] | None = None) -> SyncResult:
    """Pull changes from the provider into the ledger. Each batch lands with its cursor, atomically.
    `progress` is called after each batch (the CLI draws a progress bar with it)."""
    result = SyncResult()
    cursor = None if full else ledger.get_state("cursor")
    for batch in gateway.sync(cursor, now, full=full):
        new = ledger.apply_batch(batch, now)
        result.invoices_new += new
        result.invoices_updated += len(batch.invoices) - new
        result.requests += batch.requests
        result.events += batch.events
        if progress is not None:
            progress(result)
    ledger.set_state("account_mode", gateway.mode)
    return result


# -- the engine ---------------------------------------------------------------------------------------------


class Engine:
    def __init__(self, ledger: Ledger, config: Config, gateway: Gateway | None, channels: ChannelSet | None,
                 now: datetime, dry_run: bool = False, tick_id: int | None = None):
        self.ledger = ledger
        self.config = config
        self.gateway = gateway
        self.channels = channels
        self.now = now
        self.dry_run = dry_run
        self.tick_id = tick_id
        self.result = TickResult(now=now, dry_run=dry_run)
        self.templates = Templates.for_dir(config.templates_dir)
        dunning = config.file.dunning
        sender = config.file.sender
        self.settings = Settings(grace=dunning.grace, max_action_tries=dunning.max_action_tries,
                                 action_retry_after=dunning.action_retry_after,
                                 quiet_hours=quiet_window(sender.quiet_hours) if sender.quiet_hours else None,
                                 timezone=sender.timezone,
                                 channels=frozenset(name for name in ("email", "sms", "slack", "webhook")
                                                    if getattr(config.file.channels, name) is not None),
                                 escalation_channel=config.file.escalation.channel)
        self.dunctl_retries = config.file.stripe.retries == "dunctl"
        self._sequences: dict[str, Sequence] = {}

    def _sequence(self, case: dict) -> Sequence:
        """The sequence as it was when the case opened (stored on the case), parsed once per tick."""
        digest = case["sequence_hash"]
        if digest not in self._sequences:
            self._sequences[digest] = Sequence.model_validate(json.loads(case["sequence_def"]))
        return self._sequences[digest]

    # -- reconcile ------------------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """Open cases for newly failed invoices, follow changes on open ones, close the ones that ended."""
        for signal in self.ledger.pending_signals():
            self._apply_signal(signal)
            self.ledger.mark_signals_applied([signal["id"]])
        rows = self.ledger.pending_invoices()
        for row in rows:
            with self.ledger.db.atomic():
                if row["case_id"] is None:
                    self._maybe_open(row)
                else:
                    self._follow(row)
                self.ledger.clear_pending([row["id"]])

    def _maybe_open(self, invoice: dict) -> None:
        if invoice["status"] != "open" or not invoice["first_failed_at"] or invoice["attempt_count"] < 1:
            return
        failure_type = invoice["failure_type"] or UNKNOWN
        facts = self._facts(invoice, failure_type, invoice["attempt_count"])
        segment = next(s for s in self.config.file.segments if matches(s.when, facts))
        sequence = self.config.sequences[segment.sequence]
        decline = json.loads(invoice["decline"]) if invoice["decline"] else {}
        code = shown_code(decline)
        case_id = self.ledger.open_case(invoice=invoice, segment=segment.name, sequence=sequence.name,
                                        sequence_hash=sequence_hash(sequence),
                                        sequence_def=sequence_definition(sequence), failure_type=failure_type,
                                        decline_code=code, now=self.now)
        self.result.opened.append(invoice["id"])
        self.ledger.add_timeline(case_id, from_iso(invoice["first_failed_at"]), "failed",
                                 f"payment failed: {code or 'no code'} ({failure_type})", decline)
        self.ledger.add_timeline(case_id, self.now, "opened",
                                 f"case opened: segment {segment.name}, sequence {sequence.name} "
                                 f"({sequence_hash(sequence)})")
        if self.dunctl_retries:
            self._stop_provider_retries(case_id, invoice)
        self._schedule(case_id)

    def _stop_provider_retries(self, case_id: int, invoice: dict) -> None:
        """In `retries: dunctl` mode Stripe's own retries are turned off once, when the case opens."""
        step = Step(id="@stop-provider-retries", at="0", action="retry")
        key = idempotency_key(invoice["id"], step.id)
        action_id = self._claim(case_id, step, self.now, key, channel="stripe")
        if action_id is None:
            return
        if self.dry_run:
            self._record(action_id, case_id, invoice["id"], step, "done", detail="would turn off Stripe's retries")
            return
        try:
            self.gateway.disable_automatic_retries(invoice["id"], key)
        except GatewayAuthError:
            self._record(action_id, case_id, invoice["id"], step, "failed", error="authentication failed")
            raise
        except GatewayError as exc:
            self._record(action_id, case_id, invoice["id"], step, "failed", error=_error_text(exc),
                         request_id=exc.request_id)
            return
        self._record(action_id, case_id, invoice["id"], step, "done",
                     detail="Stripe's automatic retries turned off (auto_advance: false)")

    def _follow(self, invoice: dict) -> None:
        case = self.ledger.case(invoice["case_id"])
        ended_state = ENDED_BY_INVOICE.get(invoice["status"])
        if case["state"] in ENDED_STATES:
            if invoice["status"] == "paid" and case["state"] not in ("recovered", "voided"):
                self._close(case, invoice, "recovered", f"paid after the case ended ({case['state']})")
            return
        changes: dict = {"amount_remaining": invoice["amount_remaining"]}
        if invoice["attempt_count"] > case["attempts"] and invoice["status"] == "open":
            changes["attempts"] = invoice["attempt_count"]
            latest = json.loads(invoice["decline"]) if invoice["decline"] else {}
            code = shown_code(latest)
            self.ledger.add_timeline(case["id"], from_iso(invoice["failed_at"]) or self.now, "attempt",
                                     f"payment attempt {invoice['attempt_count']} failed"
                                     + (f": {code}" if code else "")
                                     + (f"; next Stripe attempt {invoice['next_payment_attempt']}"
                                        if invoice["next_payment_attempt"] else ""), latest or None)
        if invoice["failure_type"] and invoice["failure_type"] != case["failure_type"] \
                and case["failure_type"] != "dispute":
            code = shown_code(json.loads(invoice["decline"]) if invoice["decline"] else None)
            changes.update(failure_type=invoice["failure_type"], decline_code=code)
            self.ledger.add_timeline(case["id"], self.now, "reclassified",
                                     f"re-classified {case['failure_type']} -> {invoice['failure_type']} "
                                     f"({code or 'no code'})")
        self.ledger.update_case(case["id"], **changes)
        if ended_state:
            reason = {"recovered": "invoice paid", "voided": "invoice voided",
                      "written_off": "invoice marked uncollectible"}[ended_state]
            self._close({**case, **changes}, invoice, ended_state, reason)

    def _close(self, case: dict, invoice: dict, state: str, reason: str, recovered_by: str | None = None) -> None:
        fields: dict = {"amount_recovered": max(0, invoice["amount_paid"] - case["amount_paid_at_open"]),
                        "amount_remaining": invoice["amount_remaining"]}
        at = self.now
        if state == "recovered":
            at = from_iso(invoice["paid_at"]) or self.now
            if recovered_by is None:
                recovered_by = "provider_retry" if invoice["attempt_count"] > case["attempts"] else "customer"
            fields.update(recovered_at=at, recovered_by=recovered_by,
                          recovered_attempt=invoice["attempt_count"] if recovered_by != "customer" else None)
        self.ledger.end_case(case["id"], state, reason, at, **fields)
        self.ledger.add_timeline(case["id"], self.now, "closed", f"case {state}: {reason}")
        self.result.closed.append(invoice["id"])
        if state == "recovered" and case["with_person"]:
            self._tell_person(case, invoice, "@recovered-notice", "Recovered, no action needed")

    def _apply_signal(self, signal: dict) -> None:
        at = from_iso(signal["at"]) or self.now
        if signal["kind"] == "dispute" and signal["invoice_id"]:
            case = self.ledger.case_for_invoice(signal["invoice_id"])
            if case and case["state"] in ("open", "paused"):
                self.ledger.update_case(case["id"], failure_type="dispute", with_person=1, disputed_at=at,
                                        state="paused", next_due_at=None)
                self.ledger.add_timeline(case["id"], at, "dispute",
                                         f"payment disputed{': ' + signal['detail'] if signal['detail'] else ''}; "
                                         "dunning stopped, handed to a person")
                invoice = self.ledger.invoice(case["invoice_id"])
                self._tell_person(self.ledger.case(case["id"]), invoice, "@dispute", "Payment disputed")
        elif signal["kind"] == "payment_method_updated" and signal["customer_id"]:
            for case in self.ledger.open_cases_for_customer(signal["customer_id"]):
                self.ledger.update_case(case["id"], payment_method_changed_at=at)
                self.ledger.add_timeline(case["id"], at, "payment_method", "the customer's payment method changed")
                self._schedule(case["id"])

    # -- running due steps ----------------------------------------------------------------------------------

    def run_due(self) -> None:
        for case_id in self.ledger.due_case_ids(self.now):
            self._run_case(case_id)

    def _run_case(self, case_id: int) -> None:
        case = self.ledger.case(case_id)
        sequence = self._sequence(case)
        snapshot, invoice = self._snapshot(case)
        decided = plan(snapshot, sequence, self._records(case_id), self.settings, self.now)
        for decision in decided.decisions:
            step, key = decision.step, idempotency_key(case["invoice_id"], decision.step.id)
            if decision.verdict in (SKIP, MISSED):
                status = "skipped" if decision.verdict == SKIP else "missed"
                if self.ledger.record_decision(case_id, step.id, step.action, status, decision.due_at, self.now,
                                               key, decision.reason, self.tick_id):
                    self.ledger.add_timeline(case_id, self.now, status, f"{step.id} ({step.action}) {status}: "
                                                                        f"{decision.reason}")
                    self._report(case["invoice_id"], step, status, decision.reason)
                continue
            if not self._still_owed(case):
                break
            self._execute(self.ledger.case(case_id), step, decision.due_at, key)
            if self.ledger.case(case_id)["state"] != "open":
                break
        self._schedule(case_id)

    def _still_owed(self, case: dict) -> bool:
        """Suppression: right before an action, re-read the invoice (from the provider when configured). A paid
        invoice closes the case as recovered and nothing more is sent."""
        if self.gateway is not None and self.config.file.stripe.recheck_before_action:
            try:
                fresh = self.gateway.get_invoice(case["invoice_id"])
            except GatewayAuthError:
                raise
            except GatewayError:
                fresh = None  # the provider is unreachable: act on what the ledger knows
            if fresh is not None:
                self.ledger.apply_batch(SyncBatch(invoices=[fresh]), self.now)
        invoice = self.ledger.invoice(case["invoice_id"])
        current = self.ledger.case(case["id"])
        if invoice["status"] != "open" or current["state"] != "open":
            if current["state"] == "open":
                with self.ledger.db.atomic():
                    self._follow({**invoice, "case_id": case["id"]})
                    self.ledger.clear_pending([invoice["id"]])
            return False
        return True

    def _execute(self, case: dict, step: Step, due_at: datetime, key: str) -> None:
        channel = channel_of(step, self.config.file.escalation.channel)
        action_id = self._claim(case["id"], step, due_at, key, channel)
        if action_id is None:
            return
        invoice = self.ledger.invoice(case["invoice_id"])
        try:
            status, detail, recipient_ = self._effect(case, invoice, step, key)
        except GatewayAuthError as exc:
            self._record(action_id, case["id"], case["invoice_id"], step, "failed", error=_error_text(exc),
                         request_id=exc.request_id)
            raise
        except (ChannelError, GatewayError) as exc:
            self._record(action_id, case["id"], case["invoice_id"], step, "failed", error=_error_text(exc),
                         request_id=getattr(exc, "request_id", None))
            return
        except TemplateError as exc:
            self._record(action_id, case["id"], case["invoice_id"], step, "failed",
                         error=f"template {step.template} does not render: {exc}; fix it and run `dunctl check`")
            return
        except Exception as exc:  # noqa: BLE001 - one broken case must not stop the others (cron runs unattended)
            self._record(action_id, case["id"], case["invoice_id"], step, "failed",
                         error=f"internal error: {type(exc).__name__}: {exc}")
            return
        self._record(action_id, case["id"], case["invoice_id"], step, status, detail=detail, recipient=recipient_)

    def _effect(self, case: dict, invoice: dict, step: Step, key: str) -> tuple[str, str, str | None]:
        """Do one step. Returns (status, detail, recipient). Raises ChannelError/GatewayError on failure."""
        action = step.action
        if self.dry_run:
            return "done", f"would {action}" + (f" ({step.template})" if step.template else ""), None
        customer = self.ledger.customer(case["customer_id"])
        if action in ("email", "sms"):
            return self._message(case, invoice, customer, step, key)
        if action == "slack":
            text = self._text_for(case, invoice, customer, step, "Dunning update")
            delivery = self.channels.slack(text, key)
            return "done", delivery.detail, None
        if action == "webhook":
            delivery = self.channels.webhook("dunning.step", self._payload(case, invoice, step), key, self.now)
            return "done", delivery.detail, None
        if action == "escalate":
            return self._escalate(case, invoice, customer, step, key)
        if action == "retry":
            return self._retry(case, invoice, step, key)
        subscription = case["subscription_id"]
        if action == "pause_subscription":
            if not subscription:
                return "skipped", "the invoice has no subscription to pause", None
            behavior = step.behavior or self.config.file.stripe.pause_behavior
            self.gateway.pause_subscription(subscription, behavior, key)
            return "done", f"subscription {subscription} collection paused ({behavior})", None
        if action == "cancel_subscription":
            if not subscription:
                return "skipped", "the invoice has no subscription to cancel", None
            comment = step.comment or f"Cancelled by dunctl: invoice {invoice['number'] or invoice['id']} unpaid"
            self.gateway.cancel_subscription(subscription, comment, key)
            self.ledger.update_case(case["id"], churned=1)
            self._close(case, invoice, "exhausted", f"subscription {subscription} cancelled by step {step.id}")
            return "done", f"subscription {subscription} cancelled", None
        if action == "mark_uncollectible":
            fresh = self.gateway.mark_uncollectible(invoice["id"], key)
            if fresh is not None:
                invoice = {**invoice, "amount_paid": fresh.amount_paid, "amount_remaining": fresh.amount_remaining}
            self._close(case, invoice, "written_off", f"marked uncollectible by step {step.id}")
            return "done", "invoice marked uncollectible", None
        if action == "close":
            self._close(case, invoice, "exhausted", step.note or f"sequence finished at step {step.id}")
            return "done", "case closed: sequence exhausted", None
        raise DunctlError(f"unknown action {action}")

    def _message(self, case, invoice, customer, step: Step, key: str) -> tuple[str, str, str | None]:
        link = self._update_link(case, invoice, step, key)
        context = build_context(case=case, invoice=invoice, customer=customer,
                                payment_method=self.ledger.payment_method(invoice["payment_method_id"]),
                                update_link=link, company=self.config.file.sender.company, now=self.now)
        if step.action == "sms":
            phone = (customer or {}).get("phone")
            if not phone:
                return "skipped", "no phone number on the customer", None
            delivery = self.channels.sms(SmsMessage(phone, self.templates.render_sms(step.template, context)), key)
            return "done", f"sms {step.template} to {phone}: {delivery.detail}", phone
        to = recipient(step.recipient, customer, invoice)
        if not to:
            return "skipped", f"no address for {step.recipient}", None
        subject, text, html = self.templates.render_email(step.template, context)
        headers = {"X-Dunctl-Case": case["invoice_id"], "X-Dunctl-Step": step.id}
        delivery = self.channels.email(EmailMessage(to, subject, text, html, headers), key, self.now)
        return "done", f"email {step.template} to {to}: {delivery.detail}", to

    def _update_link(self, case: dict, invoice: dict, step: Step, key: str) -> str | None:
        kind = step.link or self.config.file.stripe.update_link
        if kind == "hosted_invoice" or self.gateway is None:
            return invoice["hosted_invoice_url"]
        record = InvoiceRecord(id=invoice["id"], customer_id=invoice["customer_id"], currency=invoice["currency"],
                               amount_due=invoice["amount_due"], amount_paid=invoice["amount_paid"],
                               amount_remaining=invoice["amount_remaining"], status=invoice["status"],
                               created=from_iso(invoice["created_at"]),
                               hosted_invoice_url=invoice["hosted_invoice_url"])
        return self.gateway.update_link(record, kind, self.config.file.stripe.portal_return_url, key + "-link")

    def _text_for(self, case, invoice, customer, step: Step, heading: str) -> str:
        if step.template and self.templates.exists(step.template, "txt"):
            context = build_context(case=case, invoice=invoice, customer=customer, payment_method=None,
                                    update_link=invoice["hosted_invoice_url"],
                                    company=self.config.file.sender.company, now=self.now)
            return self.templates.render(step.template, "txt", context)
        return escalation_text(case, invoice, customer, self.ledger.actions(case["id"]), heading)

    def _payload(self, case: dict, invoice: dict, step: Step) -> dict:
        return {"invoice_id": invoice["id"], "customer_id": case["customer_id"], "step": step.id,
                "action": step.action, "amount_remaining": invoice["amount_remaining"],
                "currency": invoice["currency"], "failure_type": case["failure_type"],
                "decline_code": case["decline_code"], "attempts": case["attempts"],
                "segment": case["segment"], "sequence": case["sequence"],
                "first_failed_at": case["first_failed_at"], "hosted_invoice_url": invoice["hosted_invoice_url"]}

    def _escalate(self, case, invoice, customer, step: Step, key: str) -> tuple[str, str, str | None]:
        reason = step.note or f"Escalated by step {step.id}"
        # `to: account_manager` escalates by email to the customer's account manager unless a channel is named.
        channel = step.channel or ("email" if step.to else None)
        detail = self._send_to_person(case, invoice, customer, channel, step.recipient if step.to else None,
                                      reason, key)
        self.ledger.update_case(case["id"], with_person=1, escalated_at=self.now)
        return "done", detail, None

    def _send_to_person(self, case, invoice, customer, channel: str | None, to_rule: str | None, reason: str,
                        key: str) -> str:
        escalation = self.config.file.escalation
        channel = channel or escalation.channel
        text = escalation_text(case, invoice, customer, self.ledger.actions(case["id"]), reason)
        if channel == "slack":
            return "slack: " + self.channels.slack(text, key).detail
        if channel == "webhook":
            payload = {**self._payload(case, invoice, Step(id=key, at="0", action="escalate")), "reason": reason,
                       "text": text}
            return "webhook: " + self.channels.webhook("dunning.escalated", payload, key, self.now).detail
        to = recipient(to_rule, customer, invoice) if to_rule else escalation.to
        if not to:
            raise ChannelError("escalation by email needs escalation.to (or to: account_manager with "
                               "metadata.account_manager_email on the customer)")
        subject = f"[dunctl] {reason}: {invoice['number'] or invoice['id']}"
        self.channels.email(EmailMessage(to, subject, text), key, self.now)
        return f"email to {to}"

    def _tell_person(self, case: dict, invoice: dict, step_id: str, reason: str) -> None:
        """Tell the escalation channel (once, under its own key) that a case a person holds changed."""
        step = Step(id=step_id, at="0", action="escalate")
        key = idempotency_key(invoice["id"], step_id)
        action_id = self._claim(case["id"], step, self.now, key, self.config.file.escalation.channel)
        if action_id is None:
            return
        if self.dry_run:
            self._record(action_id, case["id"], invoice["id"], step, "done", detail=f"would notify: {reason}")
            return
        try:
            detail = self._send_to_person(case, invoice, self.ledger.customer(case["customer_id"]), None, None,
                                          reason, key)
        except (ChannelError, GatewayError) as exc:
            self._record(action_id, case["id"], invoice["id"], step, "failed", error=_error_text(exc))
            return
        self._record(action_id, case["id"], invoice["id"], step, "done", detail=detail)

    def _retry(self, case: dict, invoice: dict, step: Step, key: str) -> tuple[str, str, str | None]:
        if not self.dunctl_retries:
            nxt = invoice["next_payment_attempt"]
            return "done", "left to Stripe's Smart Retries" + (f" (next attempt {nxt})" if nxt else ""), None
        outcome = self.gateway.pay_invoice(invoice["id"], key)
        attempt = case["attempts"] + 1
        if outcome.succeeded:
            if outcome.invoice is not None:
                self.ledger.apply_batch(SyncBatch(invoices=[outcome.invoice]), self.now)
            fresh = self.ledger.invoice(invoice["id"])
            fresh = {**fresh, "paid_at": fresh["paid_at"] or iso(self.now), "attempt_count": attempt}
            self.ledger.update_case(case["id"], attempts=attempt)
            self.ledger.clear_pending([invoice["id"]])
            self._close({**case, "attempts": attempt}, fresh, "recovered", f"retry {step.id} succeeded",
                        recovered_by="retry")
            return "done", f"payment attempt {attempt} succeeded", None
        if outcome.decline is None:
            # Accepted but not settled (a bank debit): the outcome arrives with a later sync.
            self.ledger.update_case(case["id"], attempts=attempt)
            return "done", f"payment attempt {attempt} submitted: {outcome.detail or 'processing'}", None
        decline = outcome.decline
        failure_type = classify(decline)
        changes = {"attempts": attempt, "decline_code": decline.shown_code}
        if failure_type != case["failure_type"]:
            changes["failure_type"] = failure_type
            self.ledger.add_timeline(case["id"], self.now, "reclassified",
                                     f"re-classified {case['failure_type']} -> {failure_type} "
                                     f"({decline.shown_code or 'no code'})")
        self.ledger.update_case(case["id"], **changes)
        return "done", f"payment attempt {attempt} declined: {decline.shown_code or 'no code'} ({failure_type})", None

    # -- bookkeeping ----------------------------------------------------------------------------------------

    def _claim(self, case_id: int, step: Step, due_at: datetime, key: str, channel: str | None) -> int | None:
        return self.ledger.claim_action(case_id, step.id, step.action, channel, due_at, self.now, key, self.tick_id)

    def _record(self, action_id: int, case_id: int, invoice_id: str, step: Step, status: str, detail: str = "",
                error: str | None = None, recipient: str | None = None, request_id: str | None = None) -> None:
        self.ledger.record_result(action_id, status, self.now, detail=detail or None, error=error,
                                  recipient=recipient, request_id=request_id)
        summary = f"{step.id} ({step.action}) {status}: {error or detail}"
        self.ledger.add_timeline(case_id, self.now, "action", summary,
                                 {"request_id": request_id} if request_id else None)
        if not step.id.startswith("@") or status == "failed":
            self.ledger.update_case(case_id, last_action=f"{step.id}: {status}", last_action_at=self.now)
        self._report(invoice_id, step, status, error or detail)

    def _report(self, invoice_id: str, step: Step, status: str, detail: str) -> None:
        self.result.actions.append(ActionReport(invoice_id, step.id, step.action, status, detail))

    def _records(self, case_id: int) -> dict[str, StepRecord]:
        return {a["step_id"]: StepRecord(a["status"], a["tries"], from_iso(a["finished_at"]))
                for a in self.ledger.actions(case_id)}

    def _facts(self, invoice: dict, failure_type: str, attempts: int, case: dict | None = None) -> dict:
        customer = self.ledger.customer(invoice["customer_id"])
        subscription = self.ledger.subscription(invoice["subscription_id"])
        decline = json.loads(invoice["decline"]) if invoice["decline"] else {}
        first = from_iso(invoice["first_failed_at"])
        lines = json.loads(invoice["lines"] or "[]")
        return {
            "amount_due": invoice["amount_due"],
            "amount_remaining": invoice["amount_remaining"],
            "currency": invoice["currency"],
            "failure_type": failure_type,
            "decline_code": shown_code(decline),
            "payment_method_type": invoice["payment_method_type"] or decline.get("payment_method_type"),
            "billing_reason": invoice["billing_reason"],
            "attempt_count": attempts,
            "days_since_failure": (self.now - first).days if first else 0,
            "usage_based": bool((subscription and subscription["usage_based"])
                                or any(line.get("metered") for line in lines)),
            "livemode": bool(invoice["livemode"]),
            "segment": case["segment"] if case else None,
            "customer.metadata": json.loads(customer["metadata"]) if customer else {},
            "invoice.metadata": json.loads(invoice["metadata"] or "{}"),
            "subscription.metadata": json.loads(subscription["metadata"]) if subscription else {},
        }

    def _snapshot(self, case: dict) -> tuple[CaseSnapshot, dict]:
        invoice = self.ledger.invoice(case["invoice_id"])
        facts = self._facts(invoice, case["failure_type"], case["attempts"], case)
        customer_meta = facts["customer.metadata"]
        customer = self.ledger.customer(case["customer_id"])
        snapshot = CaseSnapshot(
            first_failed_at=from_iso(case["first_failed_at"]),
            failure_type=case["failure_type"],
            attempts=case["attempts"],
            facts=facts,
            last_failed_at=from_iso(invoice["failed_at"]),
            payment_method_changed_at=from_iso(case["payment_method_changed_at"]),
            dunning_off=str(customer_meta.get("dunning", "")).lower() == "off",
            timezone=(customer or {}).get("timezone"),
        )
        return snapshot, invoice

    def reschedule(self, case_id: int) -> None:
        self._schedule(case_id)

    def _schedule(self, case_id: int) -> None:
        """Store when the case is next due, so a tick finds due work with one indexed query."""
        case = self.ledger.case(case_id)
        if case["state"] != "open":
            self.ledger.update_case(case_id, next_due_at=None, next_step=None)
            return
        sequence = self._sequence(case)
        snapshot, _ = self._snapshot(case)
        upcoming = plan(snapshot, sequence, self._records(case_id), self.settings, self.now)
        if upcoming.decisions:
            # Something is due already (a step that became runnable this tick): run it on the next tick.
            first = upcoming.decisions[0]
            self.ledger.update_case(case_id, next_due_at=iso(first.due_at), next_step=first.step.id)
        else:
            self.ledger.update_case(case_id, next_due_at=iso(upcoming.next_due_at), next_step=upcoming.next_step)


def idempotency_key(invoice_id: str, step_id: str) -> str:
    """The action's key: unique per (case, step), stable across ticks and machines, and Stripe's idempotency key."""
    return f"dunctl-{invoice_id}-{step_id}"


def _error_text(exc: DunctlError) -> str:
    text = exc.message
    if getattr(exc, "request_id", None):
        text += f" (Stripe request {exc.request_id})"
    return text


def run_tick(ledger: Ledger, config: Config, gateway: Gateway | None, channels: ChannelSet | None, now: datetime,
             dry_run: bool = False, sync: bool = True,
             progress: Callable[[SyncResult], None] | None = None) -> TickResult:
    """One tick. Takes the ledger's lock (LockHeld when another tick runs). A dry run does everything inside a
    transaction that is rolled back, and makes no calls that change anything outside."""
    if dry_run:
        return _dry_tick(ledger, config, gateway, now, sync, progress)
    with ledger.tick_lock():
        tick_id = ledger.start_tick(now, dry_run=False)
        engine = Engine(ledger, config, gateway, channels, now, tick_id=tick_id)
        _mark_unknown(ledger, now)
        if sync and gateway is not None:
            try:
                engine.result.sync = run_sync(ledger, gateway, now, progress=progress)
            except GatewayAuthError:
                raise
            except GatewayError as exc:
                # An outage: what was synced before it is kept (batches land with their cursor), and the cases
                # already in the ledger still get their due steps.
                engine.result.errors.append(f"sync failed: {_error_text(exc)}")
        engine.reconcile()
        engine.run_due()
        result = engine.result
        ledger.finish_tick(tick_id, len(result.opened), len(result.closed), len(result.actions), len(result.failed))
        return result


def _dry_tick(ledger: Ledger, config: Config, gateway: Gateway | None, now: datetime, sync: bool,
              progress: Callable[[SyncResult], None] | None) -> TickResult:
    db = ledger.db
    db.execute("BEGIN")
    try:
        engine = Engine(ledger, config, _ReadOnly(gateway) if gateway else None, None, now, dry_run=True)
        if sync and gateway is not None:
            engine.result.sync = run_sync(ledger, gateway, now, progress=progress)
        engine.reconcile()
        engine.run_due()
        return engine.result
    finally:
        db.rollback()


class _ReadOnly:
    """A gateway for dry runs: reads go through, anything that changes the account is refused loudly."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    @property
    def mode(self) -> str:
        return self._gateway.mode

    def sync(self, cursor, now, full=False):
        return self._gateway.sync(cursor, now, full)

    def get_invoice(self, invoice_id):
        return self._gateway.get_invoice(invoice_id)

    def __getattr__(self, name):
        raise DunctlError(f"dry run: refusing to call {name} on the payment provider")


def _mark_unknown(ledger: Ledger, now: datetime) -> None:
    """Claims left by a tick that died between claim and result: their effect may or may not have happened."""
    for action in ledger.orphaned_claims():
        ledger.record_result(action["id"], "unknown", now,
                             error="the tick stopped between claiming and recording this action; it may or may "
                                   "not have happened and will not be re-sent: check, then `dunctl case resume`")
        ledger.add_timeline(action["case_id"], now, "unknown",
                            f"{action['step_id']} ({action['action']}) outcome unknown: not re-sent")


def sync_and_reconcile(ledger: Ledger, config: Config, gateway: Gateway, now: datetime, full: bool = False,
                       progress: Callable[[SyncResult], None] | None = None) -> SyncResult:
    """`dunctl sync`: pull changes and open or close cases, without running any step."""
    with ledger.tick_lock():
        engine = Engine(ledger, config, gateway, None, now)
        result = run_sync(ledger, gateway, now, full=full, progress=progress)
        engine.reconcile()
        result.cases_opened = len(engine.result.opened)
        result.cases_closed = len(engine.result.closed)
        return result
