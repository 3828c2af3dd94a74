"""What the executor runs: effects (a sequence step or one of dunctl's own), and what comes back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from dunctl.config import Step
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dunctl.ledger.records import CaseBundle

STEP, SYSTEM = "step", "system"
NOTICE = "notice"   # a pre-dunning notice (dunctl/notices/effects.py): its own claim, suppression and record


@dataclass(frozen=True)
class Effect:
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

    @property
    def invoice_id(self) -> str:
        return self.bundle.case.invoice_id

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


def idempotency_key(invoice_id: str, name: str, kind: str = STEP, generation: int = 0) -> str:
    """The action's key: unique per (case, step), stable across ticks and machines, and Stripe's idempotency key.
    A run a person asked for again (`case resolve --resend`) gets a key of its own."""
    key = f"dunctl-{invoice_id}-{name}" if kind == STEP else f"dunctl-{invoice_id}-sys-{name}"
    return key + (f"-r{generation}" if generation else "")


@dataclass
class Outcome:
    status: str                       # done | skipped | failed | unknown | would | suppressed
    detail: str = ""
    recipient: str | None = None
    subject: str | None = None
    error: str | None = None
    request_id: str | None = None
    quiet: bool = False               # bookkeeping only: not worth a line in cron's mail
    changes: list = field(default_factory=list)   # case changes the effect caused (tick.changes)
    message_ref: str | None = None    # one delivery covering several cases' steps


@dataclass
class Prepared:
    """An effect ready to go: what it is (for dry runs and monitor mode) and how to do it."""

    what: str
    deliver: Callable[[], Outcome]
    recipient: str | None = None
    subject: str | None = None
    quiet: bool = False
    leaves: bool = True    # delivering it reaches outside dunctl (a send, a Stripe call): recorded as started first


def done(detail: str, **kw) -> Prepared:
    """An effect with nothing to deliver (bookkeeping, or nothing to do): the same outcome live or not."""
    return Prepared(detail, lambda: Outcome("done", detail, **kw), quiet=kw.get("quiet", False), leaves=False)


def skipped(reason: str) -> Prepared:
    return Prepared(f"skip: {reason}", lambda: Outcome("skipped", reason), leaves=False)
