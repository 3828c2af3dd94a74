"""The one shape of everything the tick's executor does (dunctl/tick/executor.py): an `Effect` (a case's sequence
step, one of dunctl's own around a case, a pre-dunning notice) and the `Journal` in the ledger that claims it
before it acts and records what happened after (dunctl/ledger/journal.py).

The executor knows only these two protocols: it never asks which family an effect is. A new family (receivables
reminders, say) is one class implementing `Effect`, and a `Journal` when it keeps its own table.

This module imports nothing of dunctl's, so the tick and the families built on it (dunctl/notices) share it without
importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


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


class Effect(Protocol):
    """Something the executor does exactly once: claimed in its journal, re-checked, prepared, delivered (or only
    described, when the tick does not act), recorded."""

    journal: str               # the name of the journal that claims and records it (`Ledger.journal(name)`)
    kind: str                  # its family's word for it (step | system | notice): data, never a branch
    name: str                  # what the tick's report calls it
    action: str                # what it does (a key of the action registry for a case's effects)
    channel: str | None        # how it leaves dunctl: a channel skipped after repeated failures holds it back
    audience: str | None       # customer | internal | None (not a message)
    step: Any                  # the sequence step it runs, if any (a template error names its template)

    @property
    def key(self) -> str:
        """Unique per effect: the claim's key, and the idempotency key of what it sends."""

    @property
    def invoice_id(self) -> str:
        """What it is about (an invoice, a card, a subscription): the report and the error messages name it."""

    @property
    def case_id(self) -> int | None:
        """The case it belongs to, if any: once an effect ends that case, the case's later ones in the same tick
        are suppressed."""

    @property
    def planned_for(self) -> int | None:
        """The case whose plan asked for it, told afterwards whether it went as planned (None: no case plans it)."""

    @property
    def needs_open_case(self) -> bool:
        """Runs only while its case is open (a sequence step): re-checked against the ledger when it is claimed."""

    @property
    def label(self) -> str:
        """Its line in the tick's report."""

    def together_key(self, grouping: bool) -> tuple | None:
        """What it is delivered with as one message (effects with the same key), or None: alone. `grouping`:
        the config's `dunning.group_messages`."""

    def suppressed(self, ctx) -> Outcome | None:
        """Right before it runs: an Outcome when it must not (the invoice was paid, the card replaced)."""

    def prepare(self, ctx, together: list) -> Prepared:
        """It (with `together`, itself first, when several go as one message) ready to deliver, with no side
        effect: a dry run and monitor mode show what it would do."""

    def record(self, ctx, outcome: Outcome) -> None:
        """What its family keeps beyond the journal's row (a case's timeline entry), in the batch's transaction."""


class Journal(Protocol):
    """The ledger's record of one family of effects: each claimed in a transaction before anything happens, marked
    started right before it leaves dunctl, and given an outcome after. A tick that dies leaves at most one claim
    started without an outcome: the next tick's `settle_orphans` records it `unknown`."""

    def claim(self, effect: Effect, now: datetime, tick_id: int | None) -> int | None:
        """The claim's id, or None when the effect is already claimed or finished (another tick got there)."""

    def claim_many(self, effects: list[Effect], now: datetime, tick_id: int | None) -> list[int | None]:
        """`claim` for each effect, in order (a batch's claims at once)."""

    def release(self, claim_id: int) -> None:
        """Give back a claim whose effect was never attempted: due again as if never claimed."""

    def mark_started(self, now: datetime, started: list[int], noted: list[tuple[int, str]]) -> None:
        """Claims about to leave dunctl, and the statuses of those acted since the last such write."""

    def record_many(self, results: list[tuple[int, Effect, Outcome]], now: datetime) -> None:
        """(claim id, effect, outcome) of a batch, all finished at `now`."""

    def settle_orphans(self, now: datetime) -> None:
        """Claims a tick that died left behind: given back, recorded from a noted outcome, or `unknown`."""
