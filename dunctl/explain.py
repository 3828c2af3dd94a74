"""`dunctl explain INVOICE`: why a case is where it is, and what happens next. Reads only; plans with the same
pure planner the tick uses, so what it says is what the next tick will do."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from dunctl.cases import find_case
from dunctl.clock import iso
from dunctl.conditions import first_unmet
from dunctl.config import Config
from dunctl.ledger import Ledger
from dunctl.planner import RUN, SKIP
from dunctl.tick.context import planner_settings
from dunctl.tick.facts import condition_facts
from dunctl.tick.schedule import Sequences, load_bundle, next_due, plan_case


@dataclass
class RuleCheck:
    segment: str
    matched: bool
    why: str            # the condition that failed, or why it matched


@dataclass
class StepState:
    step: str
    action: str
    audience: str | None
    at: str             # the offset, as written
    state: str          # done | would | failed | unknown | skipped | missed | ... | due now | waits | to come
    when: str | None    # when it ran, or is due
    why: str = ""


@dataclass
class Explanation:
    invoice_id: str
    state: str
    segment: str
    sequence: str
    sequence_version: str
    rules: list[RuleCheck] = field(default_factory=list)
    steps: list[StepState] = field(default_factory=list)
    next_step: str | None = None
    next_due_at: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def explain(ledger: Ledger, config: Config, invoice_id: str, now: datetime) -> Explanation:
    monitor = config.file.mode == "monitor"
    settings = planner_settings(config, monitor=monitor)
    bundle = load_bundle(ledger, find_case(ledger, invoice_id)["id"], settings, now)
    case = bundle.case
    result = Explanation(invoice_id, case.state, case.segment, case.sequence, case.sequence_hash)
    result.rules = _rules(bundle, config, now)
    dunctl_retries = config.file.stripe.retries == "dunctl"
    sequence = Sequences(ledger)(bundle)
    decided = plan_case(bundle, sequence, settings, dunctl_retries, now)
    decisions = {d.step.id: d for d in decided.decisions}
    waits = {w.step.id: w for w in decided.waiting}
    records = bundle.steps()
    for step in sequence.steps:
        state = StepState(step.id, step.action, step.audience, step.at.text, "to come",
                          iso(step.at.after(case.first_failed_at)))
        record = records.get(step.id)
        if record is not None and record.status not in ("failed", "resend", "would") or \
                (record is not None and record.status == "would" and monitor):
            state.state, state.when = record.status, iso(record.finished_at)
            state.why = record.row.get("error") or record.row.get("detail") or ""
        elif step.id in decisions:
            d = decisions[step.id]
            state.state = {RUN: "due now", SKIP: "will be skipped"}.get(d.verdict, "will be missed")
            state.why = d.reason
        elif step.id in waits:
            state.state, state.why = "waits", waits[step.id].reason
            state.when = iso(waits[step.id].until) if waits[step.id].until else None
        elif record is not None:
            state.state, state.why = f"{record.status}, to run again", record.row.get("error") or ""
        if not case.is_open and state.state in ("to come", "due now", "waits"):
            state.state, state.why = "will not run", f"the case is {case.state}"
        result.steps.append(state)
    if case.is_open:
        due, step = next_due(bundle, decided, settings, dunctl_retries, now)
        result.next_step, result.next_due_at = step, iso(due)
    return result


def _rules(bundle, config: Config, now: datetime) -> list[RuleCheck]:
    """Each segment rule in order until the one that matched, judged on the facts the case opened with."""
    case, invoice = bundle.case, bundle.invoice
    facts = condition_facts(invoice, bundle.customer, bundle.subscription, case.row.get("first_failure_type")
                            or case.failure_type, invoice.attempt_count, case.opened_at)
    checks = []
    for segment in config.file.segments:
        unmet = first_unmet(segment.when, facts)
        if unmet is None:
            why = "no condition (the default)" if not segment.when else "every condition holds"
            checks.append(RuleCheck(segment.name, True, why))
            break
        name, test, actual = unmet
        checks.append(RuleCheck(segment.name, False, f"{name}: wants {test}, the case has {actual!r}"))
    return checks
