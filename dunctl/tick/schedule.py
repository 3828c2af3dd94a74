"""Planning one case and storing when it is next due: the tick, `case resume` and reconciling all use this."""

from __future__ import annotations

from datetime import datetime, timedelta

from dunctl.adoption import marks_to_retry
from dunctl.config import Sequence
from dunctl.ledger import Ledger
from dunctl.ledger.records import CaseBundle
from dunctl.planner import Plan, Settings, plan
from dunctl.tick.effects import SYSTEM, CaseEffect
from dunctl.tick.facts import STOP_PROVIDER_RETRIES, open_dispute, snapshot, step_records


class Sequences:
    """Sequences as they were when each case opened, parsed once per version (and per ledger object: a version
    never changes)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._parsed: dict[str, Sequence] = ledger.cases.parsed_sequences

    def __call__(self, bundle: CaseBundle) -> Sequence:
        digest = bundle.case.sequence_hash
        if digest not in self._parsed:
            self._parsed[digest] = Sequence.model_validate(self.ledger.cases.sequence_definition(digest))
        return self._parsed[digest]


def load_bundle(ledger: Ledger, case_id: int, settings: Settings, now: datetime) -> CaseBundle | None:
    """A case as the planner needs it: with the customer's recent messages when a contact policy is set."""
    return load_bundles(ledger, [case_id], settings, now).get(case_id)


def load_bundles(ledger: Ledger, case_ids: list[int], settings: Settings, now: datetime,
                 planned: dict[int, CaseBundle] | None = None) -> dict[int, CaseBundle]:
    """`load_bundle` for several cases at once (one query per table). `planned`: the same cases loaded earlier in
    this tick, of which only what a tick's effects write is read again."""
    if settings.contact is None:
        since, statuses = None, ("done",)
    else:
        since, statuses = now - timedelta(days=7), ("done", "would") if settings.monitor else ("done",)
    return ledger.cases.bundles(case_ids, contacts_since=since, contact_statuses=statuses, planned=planned)


def plan_case(bundle: CaseBundle, sequence: Sequence, settings: Settings, dunctl_retries: bool,
              now: datetime) -> Plan:
    return plan(snapshot(bundle, now, dunctl_retries, settings.monitor), sequence, step_records(bundle), settings, now)


def system_effects(bundle: CaseBundle, settings: Settings, dunctl_retries: bool, now: datetime,
                   max_attempts: int = 5) -> list[CaseEffect]:
    """dunctl's own effects that are due on an open case: turning Stripe's retries off (`retries: dunctl`),
    tried until it is done, since no dunctl retry may run while Stripe's own still do; and a retry on the first
    tick after the customer replaced the payment method (`stripe.retry_on_update`)."""
    if not bundle.case.is_open or bundle.case.arm == "holdout":
        return []   # a holdout gets no dunctl action at all: Stripe's own retries and emails only
    effects = _retry_after_update(bundle, settings, max_attempts) if settings.retry_on_update else []
    effects += marks_to_retry(bundle, settings, now)   # a note on the Stripe invoice that failed (dunctl/adoption)
    if not dunctl_retries or bundle.case.failure_type == "net_terms":
        return effects   # Stripe does not retry a net-terms invoice: nothing of its to turn off
    return _stop_provider_retries(bundle, settings, now) + effects


UPDATE_RETRY_CAP = 5


def retry_after_update_name(changed_at: datetime) -> str:
    return f"retry-after-update-{changed_at.strftime('%Y%m%dT%H%M%S')}"


def _retry_after_update(bundle: CaseBundle, settings: Settings, max_attempts: int) -> list[CaseEffect]:
    """Once per new payment method (named by when it changed, so its key is stable), counted in the budget."""
    case, invoice = bundle.case, bundle.invoice
    changed = case.payment_method_changed_at
    if changed is None or (invoice.failed_at is not None and changed <= invoice.failed_at):
        return []
    # A sequence for cards that cannot be retried allows one attempt (the failed one); a new card is another
    # story: it gets its retry within the guide's usual cap of five attempts, counting Stripe's own.
    if case.failure_type == "dispute" or case.attempts >= max(max_attempts, UPDATE_RETRY_CAP):
        return []
    if open_dispute(bundle.customer):
        return []   # no charge while the customer disputes one (it runs once the dispute closes)
    name = retry_after_update_name(changed)
    record = bundle.system().get(name)
    if record is not None and not (record.status == "failed" and record.tries < settings.max_action_tries):
        return []
    return [CaseEffect(bundle, SYSTEM, name, "retry_now", changed, channel="stripe")]


def _stop_provider_retries(bundle: CaseBundle, settings: Settings, now: datetime) -> list[CaseEffect]:
    record = bundle.system().get(STOP_PROVIDER_RETRIES)
    if record is not None:
        done = record.status in ("done", "unknown") or (record.status == "would" and settings.monitor)
        if done or record.tries >= settings.max_action_tries and record.status == "failed":
            return []
        if record.status == "failed" and (record.finished_at or now) + settings.action_retry_after > now:
            return []
    return [CaseEffect(bundle, SYSTEM, STOP_PROVIDER_RETRIES, "stop_provider_retries", bundle.case.opened_at,
                       channel="stripe")]


def next_due(bundle: CaseBundle, decided: Plan, settings: Settings, dunctl_retries: bool,
             now: datetime, pending: list[CaseEffect] = ()) -> tuple[datetime | None, str | None]:
    """When the case is next due and for what: something decided now (or one of dunctl's own effects) is due at
    once: the next tick takes it."""
    if not bundle.case.is_open:
        return None, None
    candidates = [(d.due_at, d.step.id) for d in decided.decisions] + [(e.due_at, e.name) for e in pending]
    if decided.next_due_at is not None:
        candidates.append((decided.next_due_at, decided.next_step))
    record = bundle.system().get(STOP_PROVIDER_RETRIES)
    if dunctl_retries and record is not None and record.status == "failed" \
            and record.tries < settings.max_action_tries:
        candidates.append(((record.finished_at or now) + settings.action_retry_after, STOP_PROVIDER_RETRIES))
    return min(candidates) if candidates else (None, None)


def schedule_case(ledger: Ledger, case_id: int, settings: Settings, dunctl_retries: bool, now: datetime,
                  sequences: Sequences | None = None) -> None:
    """Store when the case is next due, so a tick finds due work with one indexed query."""
    schedule_bundle(ledger, case_id, load_bundle(ledger, case_id, settings, now), settings, dunctl_retries, now,
                    sequences)


def schedule_bundle(ledger: Ledger, case_id: int, bundle: CaseBundle | None, settings: Settings,
                    dunctl_retries: bool, now: datetime, sequences: Sequences | None = None) -> None:
    """`schedule_case` for a case already loaded (`load_bundles`), as it is now."""
    if bundle is None or not bundle.case.is_open:
        ledger.cases.schedule(case_id, None, None)
        return
    sequence = (sequences or Sequences(ledger))(bundle)
    decided = plan_case(bundle, sequence, settings, dunctl_retries, now)
    pending = system_effects(bundle, settings, dunctl_retries, now, sequence.max_attempts)
    ledger.cases.schedule(case_id, *next_due(bundle, decided, settings, dunctl_retries, now, pending))
