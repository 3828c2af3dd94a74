"""Looking at cases and letting a person take over: status, case show, pause, resume, close."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from dunctl.clock import from_iso
from dunctl.config import Config
from dunctl.errors import UsageError
from dunctl.failures import FAILURE_TYPES
from dunctl.money import decimals
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.ledger.views.status import (STATES, CaseFilter, attention_counts, case_count, case_page,
                                          revenue_at_risk, unknown_actions)
from dunctl.tick.context import planner_settings


@dataclass
class CaseRow:
    invoice_id: str
    customer_id: str
    customer_name: str | None
    customer_email: str | None
    amount_remaining: int
    currency: str
    failure_type: str
    decline_code: str | None
    segment: str
    sequence: str
    state: str
    with_person: bool
    opened_at: str
    first_failed_at: str
    day: int
    last_action: str | None
    next_step: str | None
    next_due_at: str | None
    held_because: str | None = None      # why a held case waits (Stripe's pause, a dispute)
    closed_as: str | None = None         # a case a person closed: collected, settled or written_off

    @property
    def shown_state(self) -> str:
        """The state as `status` shows it: a case a person closed says how ("closed: settled")."""
        return f"{self.state}: {self.closed_as.replace('_', ' ')}" if self.closed_as else self.state

    def to_dict(self) -> dict:
        return {"invoice_id": self.invoice_id, "customer_id": self.customer_id,
                "customer_email": self.customer_email, "amount_remaining": self.amount_remaining,
                "currency": self.currency, "failure_type": self.failure_type, "decline_code": self.decline_code,
                "segment": self.segment, "sequence": self.sequence, "state": self.state,
                "with_person": self.with_person, "opened_at": self.opened_at,
                "first_failed_at": self.first_failed_at, "day": self.day, "last_action": self.last_action,
                "next_step": self.next_step, "next_due_at": self.next_due_at, "held_because": self.held_because,
                "closed_as": self.closed_as}


@dataclass
class Status:
    """One page of `dunctl status`: `cases` is an iterator (streamed, never all in memory), `total` how many
    cases match the filter, `revenue_at_risk` per currency over the matching open cases."""

    now: datetime
    account_mode: str | None
    cases: Iterator[CaseRow]
    total: int
    limit: int | None
    revenue_at_risk: dict[str, int]
    unknown_actions: list[dict] = field(default_factory=list)   # invoice_id, step_id: each needs a person
    failed_actions: int = 0
    filter: CaseFilter = field(default_factory=CaseFilter)
    ranking: str = ""             # how "most revenue at risk" compares currencies (issue 24)

    @property
    def shown(self) -> int:
        return self.total if self.limit is None else min(self.total, self.limit)


def fx_factors(fx) -> dict[str, float] | None:
    """Minor units of each currency -> minor units of `fx.base` (a `report.fx` config), or None without rates."""
    if fx is None:
        return None
    factors = {code: rate * 10 ** (decimals(fx.base) - decimals(code)) for code, rate in fx.rates.items()}
    return {**factors, fx.base: 1.0}


def ranking_text(fx) -> str:
    if fx is None:
        return ("within each currency (no exchange rates: set report.fx to rank across currencies); the "
                "currencies' largest cases first")
    return f"across currencies in {fx.base.upper()} at the rates in report.fx (currencies without a rate last)"


def status(ledger: Ledger, now: datetime, include_ended: bool = False, *, segment: str | None = None,
           state: str | None = None, failure_type: str | None = None, limit: int | None = None,
           fx=None) -> Status:
    """The cases `status` shows, most revenue at risk first (open before paused-or-ended), `limit` of them or all.
    Currencies are compared only through `fx` (the config's `report.fx`); without it, within each currency."""
    if state is not None and state not in STATES:
        raise UsageError(f"--state: unknown state '{state}'", "use one of: " + ", ".join(STATES))
    if failure_type is not None and failure_type not in FAILURE_TYPES:
        raise UsageError(f"--failure-type: unknown failure type '{failure_type}'",
                         "use one of: " + ", ".join(FAILURE_TYPES))
    which = CaseFilter(include_ended=include_ended, segment=segment, state=state, failure_type=failure_type)
    conn = ledger.conn
    failed = attention_counts(conn)[1]

    def rows() -> Iterator[CaseRow]:
        for c in case_page(conn, which, limit, fx_factors(fx)):
            first = from_iso(c["first_failed_at"])
            yield CaseRow(
                invoice_id=c["invoice_id"], customer_id=c["customer_id"], customer_name=c["customer_name"],
                customer_email=c["customer_email"], amount_remaining=c["amount_remaining"], currency=c["currency"],
                failure_type=c["failure_type"], decline_code=c["decline_code"], segment=c["segment"],
                sequence=c["sequence"], state=c["state"], with_person=bool(c["with_person"]),
                opened_at=c["opened_at"], first_failed_at=c["first_failed_at"], day=max(0, (now - first).days),
                last_action=c["last_action"], next_step=c["next_step"], next_due_at=c["next_due_at"],
                held_because=c["held_because"], closed_as=c["closed_as"])

    return Status(now=now, account_mode=ledger.get_state("account_mode"), cases=rows(),
                  total=case_count(conn, which), limit=limit, revenue_at_risk=revenue_at_risk(conn, which),
                  unknown_actions=unknown_actions(conn), failed_actions=failed, filter=which,
                  ranking=ranking_text(fx))


@dataclass
class CaseDetail:
    case: dict
    invoice: dict
    customer: dict | None
    actions: list[dict]
    timeline: list[dict]
    waiting: list = field(default_factory=list)   # due steps that wait, and why (dunctl.explain.StepState)

    def to_dict(self) -> dict:
        case = {k: v for k, v in self.case.items() if k != "sequence_def"}
        return {"case": case, "invoice": {**self.invoice, "lines": json.loads(self.invoice["lines"]),
                                          "decline": json.loads(self.invoice["decline"] or "null"),
                                          "metadata": json.loads(self.invoice["metadata"])},
                "customer": self.customer and {**self.customer, "metadata": json.loads(self.customer["metadata"])},
                "actions": self.actions,
                "timeline": [{**t, "data": json.loads(t["data"]) if t["data"] else None} for t in self.timeline],
                "waiting": [vars(w) for w in self.waiting]}


def find_case(ledger: Ledger, invoice_id: str) -> dict:
    case = ledger.cases.for_invoice(invoice_id)
    if case is None:
        raise UsageError(f"no case for invoice {invoice_id}", "`dunctl status --all` lists every case")
    return case


def _case_in(ledger: Ledger, invoice_id: str, state: str, why: str = "") -> dict:
    """The case of `invoice_id`, refused (`why` says what only that state allows) unless it is in `state`."""
    case = find_case(ledger, invoice_id)
    if case["state"] != state:
        raise UsageError(f"case {invoice_id} is {case['state']}, not {state}{why}")
    return case


def show(ledger: Ledger, invoice_id: str) -> CaseDetail:
    case = find_case(ledger, invoice_id)
    return CaseDetail(case=case, invoice=ledger.sync.invoice(invoice_id), customer=ledger.sync.customer(case["customer_id"]),
                      actions=ledger.actions(case["id"]), timeline=ledger.cases.timeline(case["id"]))


def pause(ledger: Ledger, invoice_id: str, reason: str, now: datetime) -> dict:
    """A person takes over: no automated step runs until `resume`."""
    case = _case_in(ledger, invoice_id, "open", "; only an open case can be paused")
    with ledger.transaction():
        ledger.cases.pause(case["id"])
        ledger.cases.add_timeline(case["id"], now, "paused", f"paused by a person: {reason}")
    return ledger.cases.get(case["id"])


def resume(ledger: Ledger, config: Config, invoice_id: str, reason: str, now: datetime) -> dict:
    """Hand a paused case back to its sequence. Steps that fell due meanwhile follow the grace rule."""
    from dunctl.tick.schedule import schedule_case   # lazy: see dunctl/lazy.py

    case = _case_in(ledger, invoice_id, "paused")
    with ledger.transaction():
        ledger.cases.resume(case["id"])
        ledger.cases.add_timeline(case["id"], now, "resumed", f"resumed by a person: {reason}")
        schedule_case(ledger, case["id"], planner_settings(config, monitor=config.file.mode == "monitor"),
                      config.file.stripe.retries == "dunctl", now)
    return ledger.cases.get(case["id"])


def resolve(ledger: Ledger, config: Config, invoice_id: str, step_id: str, *, sent: bool, reason: str, by: str,
            now: datetime) -> dict:
    """A person settles an action whose outcome is unknown: it was sent (`--sent`), or it runs once more, under a
    new key, on the next tick (`--resend`). Who decided and why go on the timeline."""
    from dunctl.tick.schedule import schedule_case   # lazy: see dunctl/lazy.py

    case = find_case(ledger, invoice_id)
    action = next((a for a in ledger.actions(case["id"]) if a["step_id"] == step_id and a["status"] == "unknown"),
                  None)
    if action is None:
        unknown = [a["step_id"] for a in ledger.actions(case["id"]) if a["status"] == "unknown"]
        raise UsageError(f"case {invoice_id} has no step '{step_id}' with an unknown outcome",
                         f"unknown here: {', '.join(unknown)}" if unknown else "nothing on this case is unknown")
    if not sent and case["state"] != "open":
        raise UsageError(f"case {invoice_id} is {case['state']}: nothing is resent on a case that is not open",
                         "resume it first (`dunctl case resume`), or settle the step with --sent")
    what = "it was sent" if sent else "run it once more"
    note = f"resolved by {by}: {what} ({reason})"
    with ledger.transaction():
        ledger.resolve_unknown(action["id"], sent=sent, note=note, now=now)
        ledger.cases.add_timeline(case["id"], now, "resolved", f"{step_id} ({action['action']}) {note}")
        if not sent:
            schedule_case(ledger, case["id"], planner_settings(config, monitor=config.file.mode == "monitor"),
                          config.file.stripe.retries == "dunctl", now)
    return ledger.cases.get(case["id"])


@dataclass
class Resolved:
    """What `case resolve --all-sent / --all-not-sent` settled, and what it left (a case no longer open cannot
    run a step again: each is named with the way to settle it)."""

    resolved: list[dict] = field(default_factory=list)   # invoice_id, step_id, action, claimed_at, status
    left: list[tuple[dict, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        keys = ("invoice_id", "step_id", "action", "claimed_at", "status")
        return {"resolved": [{k: a[k] for k in keys} for a in self.resolved],
                "left": [{**{k: a[k] for k in keys}, "why": why} for a, why in self.left]}


def resolve_all(ledger: Ledger, config: Config, *, sent: bool, before: datetime, reason: str, by: str,
                now: datetime) -> Resolved:
    """The rare bulk case (a crash on an old dunctl, a mail server's log that settles a whole batch): every action
    with an unknown outcome claimed before `before` was sent, or runs once more. Each goes on its case's
    timeline as if resolved one by one; `before` keeps later unknowns (not yet checked) out."""
    from dunctl.tick.schedule import schedule_case   # lazy: see dunctl/lazy.py

    done = Resolved()
    what = "it was sent" if sent else "run it once more"
    note = f"resolved by {by} (all unknown claimed before {before:%Y-%m-%d %H:%M:%S}Z): {what} ({reason})"
    settings = planner_settings(config, monitor=config.file.mode == "monitor")
    with ledger.transaction():
        for action in ledger.unknown_claimed_before(before):
            if not sent and action["case_state"] != "open":
                done.left.append((action, f"the case is {action['case_state']}: resume it, or settle the step "
                                          f"with `dunctl case resolve {action['invoice_id']} {action['step_id']} "
                                          f"--sent`"))
                continue
            ledger.resolve_unknown(action["id"], sent=sent, note=note, now=now)
            ledger.cases.add_timeline(action["case_id"], now, "resolved", f"{action['step_id']} ({action['action']}) {note}")
            if not sent:
                schedule_case(ledger, action["case_id"], settings, config.file.stripe.retries == "dunctl", now)
            done.resolved.append({**action, "status": "done" if sent else "resend"})
    return done


def close(ledger: Ledger, invoice_id: str, reason: str, now: datetime) -> dict:
    """A person ends the case (settled offline, forgiven, sent to collections)."""
    case = find_case(ledger, invoice_id)
    if case["state"] in ENDED_STATES:
        raise UsageError(f"case {invoice_id} already ended ({case['state']})")
    invoice = ledger.sync.invoice(invoice_id)
    with ledger.transaction():
        ledger.cases.end(case["id"], "closed", reason, now,
                        amount_recovered=max(0, invoice["amount_paid"] - case["amount_paid_at_open"]))
        ledger.cases.add_timeline(case["id"], now, "closed", f"closed by a person: {reason}")
    return ledger.cases.get(case["id"])


def as_text_time(value: str | None) -> str:
    return value.replace("T", " ").replace("Z", "") if value else "-"

