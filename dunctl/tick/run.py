"""One tick: sync, reconcile, then every due effect through the executor.

    sync        gateway batches -> ledger (each batch and its cursor in one transaction)
    reconcile   changed invoices and signals -> case changes (pure) -> stored; people to tell -> executor
    run due     for each case due now: plan (pure) -> skipped/missed recorded -> effects -> executor

An idle tick (nothing changed, nothing due) runs a handful of indexed queries and imports nothing else: the
planner, the executor, the reconciler and the templates load inside the functions that found work for them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from dunctl.collector import freeze_long_lived
from dunctl.config import Config
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.gateway import Gateway
from dunctl.ledger import Ledger
from dunctl.ledger.journal import ACTIONS_JOURNAL
from dunctl.notices.run import reopen_would_notices, run_notices
from dunctl.receivables.tick import bring_coming_due
from dunctl.tick.channels import ChannelSet
from dunctl.tick import loaded
from dunctl.tick.clocks import check_stripe_clock
from dunctl.tick.context import DRY_RUN, LIVE, MONITOR, TickContext
from dunctl.tick.pending import reconcile_invoices, signal_cases
from dunctl.tick.read_only import ReadOnlyGateway
from dunctl.tick.effects import STEP, SYSTEM, CaseEffect, idempotency_key
from dunctl.tick.result import ActionReport, SyncResult, TickResult

if TYPE_CHECKING:
    from dunctl.ledger.records import CaseBundle
    from dunctl.planner import Plan
    from dunctl.tick.changes import Applied

CASES_PER_BATCH = 50
RESYNC_AFTER_SECONDS = 60   # a long run of batches syncs again, so a payment made meanwhile still stops them


class _Planned(NamedTuple):
    """What planning a case this tick asked for, to tell afterwards whether it went as planned."""

    plan: Plan
    effects: int    # how many effects
    own: bool       # any of dunctl's own (turning Stripe's retries off, a retry after a new card)


def run_sync(ledger: Ledger, gateway: Gateway, now: datetime, full: bool = False,
             progress: Callable[[SyncResult], None] | None = None, accept_stale: bool = False,
             notices: bool = False, stop: Callable[[], bool] = lambda: False) -> SyncResult:
    """Pull changes from the provider into the ledger. Each batch lands with its cursor, atomically.
    With `notices` (pre-dunning on), the first sync also lists the active subscriptions (billing_backfill).
    `stop` (a tick asked to stop) ends it between batches: the next sync resumes from the stored cursor."""
    result = SyncResult()
    cursor = None if full else ledger.get_state("cursor")
    batches = gateway.sync(cursor, now, full=full)
    if notices:
        from dunctl.notices.sync import with_billing_backfill   # lazy: see dunctl/lazy.py

        batches = with_billing_backfill(ledger, gateway, batches, full)
    for batch in batches:
        with ledger.transaction():
            new = ledger.sync.apply_batch(batch, now, accept_stale=accept_stale)
            ledger.notices.apply_batch(batch, now)
        result.invoices_new += new
        result.invoices_updated += len(batch.invoices) - new
        result.requests += batch.requests
        result.events += batch.events
        if progress is not None:
            progress(result)
        if stop():
            break
    if ledger.get_state("account_mode") != gateway.mode:    # a read, not a write on every tick
        ledger.set_state("account_mode", gateway.mode)
    return result


def reconcile(ctx: TickContext, result: TickResult) -> bool:
    """Open cases for newly failed invoices, follow changes on open ones, close the ones that ended; then tell
    people what they need to know about held cases (through the executor, like any effect). False when there
    was nothing to reconcile (then nothing was changed or sent)."""
    ledger = ctx.ledger

    if not bring_coming_due(ctx):       # one statement when nothing waits
        return False
    signals = ledger.sync.pending_signals() if ctx.waits("signals") else []
    if not signals and not ctx.waits("invoices"):   # reconcile_invoices reads them, once
        return False
    from dunctl import adoption   # lazy: see dunctl/lazy.py
    from dunctl.tick import changes as case_changes   # lazy: see dunctl/lazy.py
    from dunctl.tick.reconcile import apply_signal   # lazy: see dunctl/lazy.py
    from dunctl.tick.schedule import load_bundles, schedule_bundle   # lazy: see dunctl/lazy.py

    # Invoices whose Stripe note shows messages this ledger did not record: another ledger's are refused (unless
    # adopting) before anything is done; the rest are taken over once their cases are open (dunctl/adoption.py).
    behind = adoption.behind_stripe(ledger)
    own = adoption.ledger_id(ledger) if behind else ""
    adoption.refuse_other_ledgers(behind, own, ctx.adopt)
    applied = case_changes.Applied()
    for signal in signals:
        with ledger.transaction():
            found = [(c, ledger.sync.invoice_record(c.invoice_id))
                     for c in map(ledger.cases.record, signal_cases(ledger, signal))]
            case_changes.apply(ledger, apply_signal(signal, found, ctx.now, ctx.config.file.dunning.dispute_lost),
                               ctx.now, applied)
            ledger.sync.mark_signal_applied(signal.id)
    # the invoices, a take-over and the schedules of the cases they touched in one commit: all of it ledger
    # writes derived from what the sync stored (the invoices stay pending until it commits)
    with ledger.transaction():
        reconcile_invoices(ctx, applied)
        if behind:
            lines, touched = adoption.take_over(ledger, behind, own, ctx.sequences, ctx.now)
            result.taken_over.extend(lines)
            applied.touched |= touched
        # read together (one query per table), each as it is before its own schedule is written, as one by one
        loaded = load_bundles(ledger, sorted(applied.touched), ctx.settings, ctx.now)
        for case_id in applied.touched:
            schedule_bundle(ledger, case_id, loaded.get(case_id), ctx.settings, ctx.dunctl_retries, ctx.now,
                            ctx.sequences)
    result.opened.extend(applied.opened)
    for invoice_id, state in applied.closed:
        result.close(invoice_id, state)
    _notify(ctx, applied.notify, result)
    return True


def _notify(ctx: TickContext, notes: list, result: TickResult) -> None:
    """Tell the person who holds each case (`NotifyPerson` changes), and run what follows each `Ending`
    (tick/endings.py), through the executor."""
    from dunctl.tick.changes import Ending   # lazy: see dunctl/lazy.py
    from dunctl.tick.endings import follow   # lazy: see dunctl/lazy.py
    from dunctl.tick.executor import execute   # lazy: see dunctl/lazy.py

    effects = []
    for note in notes:
        if isinstance(note, Ending):
            continue
        bundle = ctx.ledger.cases.bundle(note.case_id)
        effects.append(CaseEffect(bundle, SYSTEM, note.name, "notify_person", ctx.now, audience="internal",
                                  channel=ctx.config.file.escalation.channel, note=note.note))
    if effects:
        applied = execute(ctx, effects, result)
        _notify(ctx, applied.notify, result)
    follow(ctx, [note for note in notes if isinstance(note, Ending)], result)


def run_due(ctx: TickContext, result: TickResult, resync: Callable[[], None] | None = None) -> bool:
    """Every case due now, in batches: plan, record what is skipped or missed, execute the rest. False when no
    case was due."""
    ledger = ctx.ledger
    chunks = _chunks(ledger.due_cases_by_customer(ctx.now)) if ctx.waits("cases") else []
    if not chunks:
        return False
    from dunctl.tick.executor import execute   # lazy: see dunctl/lazy.py
    from dunctl.tick.schedule import load_bundles, schedule_bundle   # lazy: see dunctl/lazy.py

    sequences = ctx.sequences
    started = time.monotonic()
    for n, ids in enumerate(chunks):
        if ctx.should_stop():
            result.deferred += sum(map(len, chunks[n:]))   # still due: the next tick takes them, nothing missed
            return True
        if resync is not None and n and time.monotonic() - started > RESYNC_AFTER_SECONDS:
            resync()
            started = time.monotonic()
        effects: list[CaseEffect] = []
        planned: dict[int, CaseBundle] = {}
        plans: dict[int, _Planned] = {}
        admitted: dict[str, list[tuple]] = {}   # customer -> the messages it gets this tick (a chunk has all)
        with ledger.transaction():
            loaded = load_bundles(ledger, ids, ctx.settings, ctx.now)
            for case_id in ids:
                effects += [e for e in _plan_one(ctx, loaded.get(case_id), sequences, result, planned, plans)
                            if not _held_in_this_tick(ctx, e, admitted)]
        applied = execute(ctx, effects, result)
        if n == 0:
            freeze_long_lived()   # what the process keeps is loaded now: dunctl/collector.py
        _notify(ctx, applied.notify, result)
        # customers something ran or was recorded for in this batch (a batch holds all of a customer's cases)
        acting = {planned[case_id].case.customer_id for case_id, asked in plans.items()
                  if asked.effects or asked.plan.decisions}
        with ledger.transaction():
            again, dues = [], []
            for case_id in ids:
                due = _went_as_planned(ctx, case_id, planned, plans, applied, acting)
                if due is not None:
                    dues.append((case_id, *due))
                else:
                    again.append(case_id)
            ledger.cases.schedule_many(dues)    # one statement
            # the other cases as the effects left them: only what effects write is read again
            loaded = load_bundles(ledger, again, ctx.settings, ctx.now, planned=planned)
            for case_id in again:
                schedule_bundle(ledger, case_id, loaded.get(case_id), ctx.settings, ctx.dunctl_retries, ctx.now,
                                sequences)
    return True


def _went_as_planned(ctx: TickContext, case_id: int, planned: dict[int, CaseBundle],
                     plans: dict[int, _Planned], applied: Applied, acting: set[str] = frozenset()) -> tuple | None:
    """When the case is next due, from its plan, when planning it again after its effects could only give the same:
    nothing in the plan was waiting (on another step, a contact rule, quiet hours), every effect it asked for was
    a step that ran and ended as planned (done; in monitor mode, would) without changing the case, and none was
    dunctl's own (turning Stripe's retries off, a retry after a new card: those change what is timed next). Then
    every step that was due is finished, and what is still to come is what the plan already timed (its times
    depend on the case and the clock, neither of which the effects changed). Or, whatever waited: nothing at all
    was decided for any case of its customer (not in `acting`: no effect, nothing skipped or missed): then nothing
    the case is planned from was written, and its whole plan is what planning again gives (most such cases wait
    for the end of quiet hours). Otherwise None: the case is read and planned again.
    `tests/test_schedule_refresh.py` checks these paths against a full reload."""
    planner, schedule = loaded.planning()
    asked = plans.get(case_id)
    if asked is None or case_id in applied.touched or any(note.case_id == case_id for note in applied.notify):
        return None
    if planned[case_id].case.customer_id not in acting:     # so neither was the case itself
        return schedule.next_due(planned[case_id], asked.plan, ctx.settings, ctx.dunctl_retries, ctx.now)
    outcomes = applied.as_planned.get(case_id, [])
    if asked.own or asked.plan.waiting or len(outcomes) != asked.effects or not all(outcomes):
        return None
    # the steps that were due are all finished: what comes next is what the plan timed
    ahead = planner.Plan(next_step=asked.plan.next_step, next_due_at=asked.plan.next_due_at)
    return schedule.next_due(planned[case_id], ahead, ctx.settings, ctx.dunctl_retries, ctx.now)


def _held_in_this_tick(ctx: TickContext, effect: CaseEffect, admitted: dict[str, list[tuple]]) -> bool:
    """The contact policy across one customer's cases due in the same tick. The planner counts what was sent
    before; here, what this tick already sends counts too: a second message (another currency, an SMS, or any
    other with grouping off) waits for the minimum gap instead of going out beside the first. Emails that go out
    as one message (`dunning.group_messages`, same currency) are one delivery. A held step is simply not run
    now: scheduling the case afterwards finds it waiting, with the policy's reason, until the earliest allowed
    time."""
    policy = ctx.settings.contact
    if policy is None or effect.kind != STEP or effect.audience != "customer":
        return False
    bundle = effect.bundle
    key = effect.together_key(ctx.config.file.dunning.group_messages) or (bundle.case.id, effect.name)
    keys = admitted.setdefault(bundle.case.customer_id, [])
    if key in keys:
        return False
    week = sum(1 for t in bundle.contacts if ctx.now - t < timedelta(days=7))
    if (keys and policy.min_gap > timedelta(0)) or week + len(keys) >= policy.max_per_week:
        return True
    keys.append(key)
    return False


def _chunks(due: list[tuple[int, str]]) -> list[list[int]]:
    """Batches of about CASES_PER_BATCH cases that never split one customer's cases."""
    chunks: list[list[int]] = []
    last = None
    for case_id, customer_id in due:
        if not chunks or (len(chunks[-1]) >= CASES_PER_BATCH and customer_id != last):
            chunks.append([])
        chunks[-1].append(case_id)
        last = customer_id
    return chunks


def _plan_one(ctx: TickContext, bundle: CaseBundle | None, sequences, result: TickResult,
              planned: dict[int, CaseBundle], plans: dict[int, _Planned]) -> list[CaseEffect]:
    planner, schedule = loaded.planning()
    if bundle is None or not bundle.case.is_open:
        return []
    case_id = bundle.case.id
    planned[case_id] = bundle
    sequence = sequences(bundle)
    effects = schedule.system_effects(bundle, ctx.settings, ctx.dunctl_retries, ctx.now, sequence.max_attempts)
    decided = schedule.plan_case(bundle, sequence, ctx.settings, ctx.dunctl_retries, ctx.now)
    plans[case_id] = _Planned(decided, len(effects) + len(decided.runs), own=bool(effects))   # so far: system effects
    records = bundle.steps()
    for decision in decided.decisions:
        step = decision.step
        if decision.verdict in (planner.SKIP, planner.MISSED):
            status = "skipped" if decision.verdict == planner.SKIP else "missed"
            if ctx.ledger.record_decision(case_id, STEP, step.id, step.action, status, decision.due_at, ctx.now,
                                          idempotency_key(bundle.case.invoice_id, step.id), decision.reason,
                                          ctx.tick_id, step.audience):
                ctx.ledger.cases.add_timeline(case_id, ctx.now, status, f"{step.id} ({step.action}) {status}: "
                                                                  f"{decision.reason}")
                result.actions.append(ActionReport(bundle.case.invoice_id, step.id, step.action, status,
                                                   decision.reason))
            continue
        record = records.get(step.id)
        effects.append(CaseEffect(bundle, STEP, step.id, step.action, decision.due_at, step.audience,
                                  _channel(ctx, step), step, generation=record.resends if record else 0))
    return effects


def prepare_case(ctx: TickContext, effects: list[CaseEffect]):
    """A case's effect (or several delivered as one message) ready to deliver, by the action registry. It loads
    with the first effect a tick prepares, never on an idle tick (it brings the channels, the reconciler and
    sqlite-utils: about 0.2 s)."""
    return loaded.actions().prepare(ctx, effects)


def _channel(ctx: TickContext, step) -> str | None:
    return loaded.planning()[0].channel_of(step, ctx.config.file.escalation.channel)


def _on_mode_change(ctx: TickContext) -> None:
    """Switching monitor <-> live changes what counts as finished (`would`): plan every open case again, once,
    and on the way to live reopen the `would` notices that are still useful."""
    previous = ctx.ledger.get_state("mode")
    if previous == ctx.mode:
        return
    from dunctl.tick.schedule import schedule_case   # lazy: see dunctl/lazy.py

    with ctx.ledger.transaction():
        if previous is not None:
            for case_id in ctx.ledger.cases.open_ids():
                schedule_case(ctx.ledger, case_id, ctx.settings, ctx.dunctl_retries, ctx.now, ctx.sequences)
        if previous == MONITOR and ctx.mode == LIVE:
            reopen_would_notices(ctx)      # the same for pre-dunning notices, sent by the same executor
        ctx.ledger.set_state("mode", ctx.mode)


def _missed_cause(ledger: Ledger, result: TickResult, now: datetime, grace) -> str | None:
    """The likeliest reason steps were missed, for the one line a tick prints about them. The last tick is read
    only then (this tick is not finished yet, so it is the one before): most ticks miss nothing."""
    if not result.missed:
        return None
    last_tick = ledger.last_tick_at()
    if last_tick is not None and now - last_tick > grace:
        return f"the last tick was {_days(now - last_tick)} ago"
    late = []
    for report in result.missed:
        case = ledger.cases.for_invoice(report.invoice_id)
        if case:
            gap = ledger.cases.record(case["id"])
            late.append(gap.opened_at - gap.first_failed_at)
    if late and max(late) > grace:
        return f"case first synced {_days(max(late))} after the failure"
    return "steps superseded by later ones due at the same time"


def _days(delta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if days >= 1 else f"{delta.total_seconds() / 3600:.1f} hours"


def run_tick(ledger: Ledger, config: Config, gateway: Gateway | None, channels: ChannelSet | None, now: datetime,
             dry_run: bool = False, sync: bool = True,
             progress: Callable[[SyncResult], None] | None = None, mode: str | None = None,
             accept_stale: bool = False, adopt: bool = False,
             wall: datetime | None = None, interrupted: Callable[[], bool] | None = None,
             deadline: float | None = None) -> TickResult:
    """One tick. Takes the ledger's lock (LockHeld when another tick runs). A dry run works on a snapshot copy
    of the ledger in memory: it never writes the ledger file nor holds a write transaction on it, and makes no
    call that changes anything outside. `wall` is the machine's clock (the CLI's reading, not --now): when given,
    it is compared with Stripe's after the sync, and a skew stops the tick before any effect (ClockRefused).
    `interrupted` (the CLI's signal flag): once true, the tick takes no new work, lets the effect in flight finish,
    gives back what it claimed and returns (result.interrupted). `deadline` (time.monotonic()) ends its budget;
    None: `dunning.tick_budget` from now."""
    if dry_run:
        return _dry_tick(ledger, config, gateway, now, sync, progress, accept_stale, adopt, deadline)
    mode = mode or (MONITOR if config.file.mode == "monitor" else LIVE)
    with ledger.tick_lock():
        tick_id = ledger.start_tick(now, dry_run=False)
        read_only = ReadOnlyGateway(gateway) if gateway else None
        ctx = TickContext(ledger, config, gateway if mode == LIVE else read_only, channels, now, mode=mode,
                          tick_id=tick_id, adopt=adopt,
                          interrupted=interrupted or (lambda: False), prepare_case=prepare_case, deadline=deadline)
        result = TickResult(now=now, mode=mode)
        try:
            if ctx.waits("claimed_actions"):
                ledger.journal(ACTIONS_JOURNAL).settle(now)   # claims a tick that died left behind
            _on_mode_change(ctx)
            _tick(ctx, result, gateway, sync, progress, accept_stale, wall=wall)
        finally:
            if channels is not None:
                channels.close()
        result.missed_cause = _missed_cause(ledger, result, now, config.file.dunning.grace)
        result.skipped_channels = sorted(ctx.skipped_channels)
        result.interrupted = ctx.interrupted()
        result.unknown_waiting = ctx.waits("unknown")   # every tick says how many wait for a person
        ledger.finish_tick(tick_id, len(result.opened), len(result.closed), len(result.actions), len(result.failed))
        return result


def _tick(ctx: TickContext, result: TickResult, gateway: Gateway | None, sync: bool,
          progress: Callable[[SyncResult], None] | None, accept_stale: bool = False,
          wall: datetime | None = None) -> None:
    def sync_now() -> None:
        if not sync or gateway is None:
            return
        try:
            result.sync = run_sync(ctx.ledger, gateway, ctx.now, progress=progress, accept_stale=accept_stale,
                                   notices=ctx.config.file.notices.enabled, stop=ctx.interrupted)
        except GatewayAuthError:
            raise
        except GatewayError as exc:
            from dunctl.tick.executor import _error_text   # lazy: see dunctl/lazy.py

            # An outage: what was synced before it is kept (batches land with their cursor), and the cases
            # already in the ledger still get their due steps.
            result.errors.append(f"sync failed: {_error_text(exc)}")
        except sqlite3.Error:
            raise

    def resync() -> None:
        sync_now()
        reconcile(ctx, result)

    sync_now()
    if wall is not None and gateway is not None:
        # The sync is kept; nothing is decided or sent on a machine clock Stripe disagrees with. Raised inside the
        # tick, so the tick is never marked finished and its wrong moment never becomes "the last tick".
        check_stripe_clock(wall, getattr(gateway, "stripe_date", None))
    acted = len(result.actions)
    reconcile(ctx, result)
    run_due(ctx, result, resync)
    if len(result.actions) > acted:
        # What the effects themselves changed (a suppressed invoice found paid). With no effect since the sync
        # (nothing was due, or all of it waits) nothing can have: such a tick skips it, half its reconciling.
        reconcile(ctx, result)
    if ctx.interrupted():
        return               # asked to stop: the notices wait for the next tick, as they are

    _follow_ups(ctx, result)

    notices = run_notices(ctx, result)   # pre-dunning: plan changed subscriptions, then send the notices due
    if notices:
        from dunctl.tick.executor import execute   # lazy: see dunctl/lazy.py

        execute(ctx, notices, result)


def _follow_ups(ctx: TickContext, result: TickResult) -> None:
    """After the end of a case: a thank-you held by quiet hours, a lift or a thank-you tried again. One indexed
    query when there are none; the rest (tick/endings.py) loads only when there are."""
    if not ctx.waits("follow_ups"):
        return
    dunning = ctx.config.file.dunning
    due = ctx.ledger.due_follow_ups(ctx.now, ctx.now - dunning.action_retry_after, dunning.max_action_tries)
    if due:
        from dunctl.tick.endings import run_waiting   # lazy: see dunctl/lazy.py

        run_waiting(ctx, due, result)


def _dry_tick(ledger: Ledger, config: Config, gateway: Gateway | None, now: datetime, sync: bool,
              progress: Callable[[SyncResult], None] | None, accept_stale: bool = False,
              adopt: bool = False, deadline: float | None = None) -> TickResult:
    copy = ledger.snapshot_in_memory()
    try:
        ctx = TickContext(copy, config, ReadOnlyGateway(gateway) if gateway else None, None, now, mode=DRY_RUN,
                          adopt=adopt, prepare_case=prepare_case, deadline=deadline)
        result = TickResult(now=now, dry_run=True, mode=DRY_RUN)
        _tick(ctx, result, ctx.gateway, sync, progress, accept_stale)
        return result
    finally:
        copy.close()


def sync_and_reconcile(ledger: Ledger, config: Config, gateway: Gateway, now: datetime, full: bool = False,
                       progress: Callable[[SyncResult], None] | None = None,
                       channels: ChannelSet | None = None, accept_stale: bool = False) -> SyncResult:
    """`dunctl sync`: pull changes and open or close cases, without running any step. People who hold a case
    are still told when it is disputed or recovered (through the executor), as `tick` would."""
    mode = MONITOR if config.file.mode == "monitor" else LIVE
    with ledger.tick_lock():
        result = run_sync(ledger, gateway, now, full=full, progress=progress, accept_stale=accept_stale,
                          notices=config.file.notices.enabled)
        tick = TickResult(now=now, mode=mode)
        ctx = TickContext(ledger, config, gateway if mode == LIVE else ReadOnlyGateway(gateway), channels, now,
                          mode=mode, prepare_case=prepare_case)
        try:
            reconcile(ctx, tick)
        finally:
            if channels is not None:
                channels.close()
        result.cases_opened = len(tick.opened)
        result.cases_closed = len(tick.closed)
        result.taken_over = tick.taken_over
        return result
