"""What a tick did, as data: the CLI renders it as a line, a table or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dunctl.clock import iso


@dataclass
class ActionReport:
    invoice_id: str
    step: str
    action: str
    status: str                  # done | would | failed | unknown | skipped | missed | suppressed
    detail: str = ""
    recipient: str | None = None
    subject: str | None = None
    quiet: bool = False          # bookkeeping (a retry left to Stripe): not worth cron's mail

    def to_dict(self) -> dict:
        return {"invoice_id": self.invoice_id, "step": self.step, "action": self.action, "status": self.status,
                "detail": self.detail, "recipient": self.recipient, "subject": self.subject}


@dataclass
class SyncResult:
    requests: int = 0
    events: int = 0
    invoices_new: int = 0
    invoices_updated: int = 0
    cases_opened: int = 0
    cases_closed: int = 0
    taken_over: list[str] = field(default_factory=list)   # see TickResult


@dataclass
class TickResult:
    now: datetime
    dry_run: bool = False
    mode: str = "live"
    sync: SyncResult | None = None
    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    endings: dict[str, str] = field(default_factory=dict)    # invoice id -> how its case ended
    actions: list[ActionReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)   # what failed outside any one action (a sync outage)
    missed_cause: str | None = None
    deferred: int = 0                                 # due effects left for the next tick (the tick's budget)
    skipped_channels: list[str] = field(default_factory=list)
    taken_over: list[str] = field(default_factory=list)   # what Stripe's invoices showed was sent (adoption.py)
    interrupted: bool = False                         # stopped early on SIGINT/SIGTERM (what is left stays due)
    unknown_waiting: int = 0                          # actions with an unknown outcome, waiting for `case resolve`

    def close(self, invoice_id: str, state: str) -> None:
        if invoice_id not in self.endings:
            self.closed.append(invoice_id)
        self.endings[invoice_id] = state

    @property
    def failed(self) -> list[ActionReport]:
        return [a for a in self.actions if a.status == "failed"]

    @property
    def missed(self) -> list[ActionReport]:
        return [a for a in self.actions if a.status == "missed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors

    @property
    def did_something(self) -> bool:
        return bool(self.opened or self.closed or any(not a.quiet for a in self.actions))

    def to_dict(self) -> dict:
        return {"now": iso(self.now), "dry_run": self.dry_run, "mode": self.mode, "opened": self.opened,
                "closed": self.closed, "endings": self.endings, "actions": [a.to_dict() for a in self.actions],
                "errors": self.errors, "missed_cause": self.missed_cause, "deferred": self.deferred,
                "skipped_channels": self.skipped_channels, "taken_over": self.taken_over,
                "interrupted": self.interrupted, "unknown_waiting": self.unknown_waiting}
