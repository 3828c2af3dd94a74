"""A case's effects: its sequence steps and dunctl's own effects around it (turning Stripe's retries off, a thank-
you, a lift, a note to a person). `CaseEffect` implements the executor's one `Effect` protocol (dunctl/effect.py);
its journal is the ledger's `actions` table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from dunctl.config import Step
from dunctl.effect import Outcome, Prepared
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.ledger.journal import ACTIONS_JOURNAL

if TYPE_CHECKING:
    from dunctl.ledger.records import CaseBundle

STEP, SYSTEM = "step", "system"


@dataclass(frozen=True)
class CaseEffect:
    bundle: CaseBundle
    kind: str                    # step | system
    name: str                    # the step id, or the system effect's name
    action: str                  # a key of the action registry
    due_at: datetime
    audience: str | None = None  # customer | internal | None (not a message)
    channel: str | None = None
    step: Step | None = None
    note: str = ""               # what a system notification tells a person
    generation: int = 0          # times a person chose to run it again: each run has its own key
    in_plan: bool = True         # False for a note on Stripe's invoice (adoption.py): it changes no plan

    journal: ClassVar[str] = ACTIONS_JOURNAL

    @property
    def invoice_id(self) -> str:
        return self.bundle.case.invoice_id

    @property
    def case_id(self) -> int:
        return self.bundle.case.id

    @property
    def planned_for(self) -> int | None:
        return self.bundle.case.id if self.in_plan else None

    @property
    def needs_open_case(self) -> bool:
        return self.kind == STEP   # dunctl's own effects also follow a case's end (a thank-you, a lift)

    @property
    def label(self) -> str:
        return self.name

    @property
    def key(self) -> str:
        """The claim's key, and the idempotency key of its Stripe call. A Stripe write tried again after a failed
        try gets a new one (':2', ':3', by the ledger's count of tries): a 5xx is saved under its key and replayed
        for 24 hours, so the same key could never succeed (https://docs.stripe.com/error-low-level#idempotency).
        The gateway first reads back whether a failed write took effect, and a try cut off by a crash keeps its
        key (the ledger does not count it)."""
        key = idempotency_key(self.invoice_id, self.name, self.kind, self.generation)
        if self.channel != "stripe":
            return key
        record = next((a for a in self.bundle.actions if a.kind == self.kind and a.step_id == self.name), None)
        this_try = record.tries + 1 if record is not None and record.status == "failed" else 1
        return f"{key}:{this_try}" if this_try > 1 else key

    def together_key(self, grouping: bool) -> tuple | None:
        """One customer's emails due in this tick, per currency, go out as one message (one conversation per
        customer) when `dunning.group_messages` is on; a thank-you for cases paid together always does (one per
        recovered conversation); escalations go as one per customer and destination, whatever the currency (the
        message gives a total per currency): a person takes over a customer. Everything else goes alone."""
        customer = self.bundle.case.customer_id
        if self.kind == STEP and self.action == "escalate":
            return customer, "escalate", self.step.channel, self.step.to
        thanks = self.kind == SYSTEM and self.action == "email" and self.audience == "customer"
        dunning = self.kind == STEP and self.action == "email" and self.audience == "customer"
        if thanks or (grouping and dunning):
            return customer, self.bundle.invoice.currency, self.kind
        return None

    # `ctx` is the tick's context (tick/context.py), not named here: the context loads the schedule, which builds
    # these effects.

    def suppressed(self, ctx) -> Outcome | None:
        """The tick synced right before its batches, so the ledger knows of payments up to then; with
        `stripe.recheck_before_action` the invoice is also re-read from Stripe right before a step."""
        invoice = self.bundle.invoice
        if ctx.config.file.stripe.recheck_before_action and ctx.gateway is not None and ctx.acts \
                and self.kind == STEP:
            try:
                fresh = ctx.gateway.get_invoice(invoice.id)
            except GatewayAuthError:
                raise
            except GatewayError:
                fresh = None  # the provider is unreachable: act on what the ledger knows
            if fresh is not None and fresh.status != "open":
                from dunctl.tick.changes import StoreInvoice   # lazy: see dunctl/lazy.py

                # Stored as changed: the reconcile that follows the batches ends the case.
                return Outcome("suppressed", f"the invoice is {fresh.status}: nothing more is sent",
                               changes=[StoreInvoice(fresh, reconcile=True)])
        if self.kind == STEP and (invoice.status != "open" or not self.bundle.case.is_open):
            return Outcome("suppressed", f"the invoice is {invoice.status}, the case {self.bundle.case.state}")
        return None

    def prepare(self, ctx, together: list[CaseEffect]) -> Prepared:
        """By the action registry the tick hands in (`TickContext.prepare_case`)."""
        return ctx.prepare_case(ctx, together)

    def record(self, ctx, outcome: Outcome) -> None:
        """The case's timeline entry (the result itself is written for the whole batch at once)."""
        ctx.ledger.cases.add_timeline(self.bundle.case.id, ctx.now, "action",
                                f"{self.name} ({self.action}) {outcome.status}: {outcome.error or outcome.detail}",
                                {"request_id": outcome.request_id} if outcome.request_id else None)


def idempotency_key(invoice_id: str, name: str, kind: str = STEP, generation: int = 0) -> str:
    """The action's key: unique per (case, step), stable across ticks and machines, and Stripe's idempotency key.
    A run a person asked for again (`case resolve --resend`) gets a key of its own."""
    key = f"dunctl-{invoice_id}-{name}" if kind == STEP else f"dunctl-{invoice_id}-sys-{name}"
    return key + (f"-r{generation}" if generation else "")
