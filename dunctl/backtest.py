"""Backtests on a team's own history: `dunctl simulate --from-ledger CONFIG...`.

The ledger's own failed invoices (their customers, amounts, currencies, lines, failure types and first decline
codes, payment methods, creation and first-failure times) are replayed on the simulated account under each
candidate config, with the real engine ticking hourly, exactly as `simulate` does with a synthetic book.

What the customers do is the simulation's model, fitted to this ledger (dunctl.backtest_model): every channel that
causes a payment (retries, messages, escalation, suspension, cancellation, unprompted) and the customers'
response delays, each from the recoveries the ledger credits to it, on two cases in three. A channel resting on
fewer than MIN_RECOVERIES recoveries keeps the preset's value, and the result names it.

The fitted model is then checked on the third case it never saw: replayed with a fresh seed (seed + 1), its
recovered of failed against the ledger's for those cases, with the gap's 95% interval. A gap whose interval excludes
zero is a warning, by name: the model does not reproduce this ledger.

The baseline (the active config) and the candidates then run on every invoice with the fitted model and the same
luck (the same seed and invoice ids): their differences from the baseline are the configs' doing. Every projected
rate carries its 95% Wilson interval.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from dunctl.clock import from_iso, iso
from dunctl.config import Config
from dunctl.errors import UsageError
from dunctl.failures import Decline
from dunctl.ledger import Ledger
from dunctl.ledger.views import history as q
from dunctl.model import Customer, InvoiceLine
from dunctl.failures import NET_TERMS
from dunctl.simulation.account import HistoricalInvoice, SimulatedAccount
from dunctl.simulation.net_terms import HistoricalNetTermsInvoice
from dunctl.backtest_net_terms import load_net_terms_history
from dunctl.simulation.assumptions import (
    DEFAULT_PRESET,
    Assumptions,
    preset_assumptions,
)
from dunctl.simulation.demo import (
    DEFAULT_SEED,
    TICK_EVERY,
    Driver,
    Outcome,
    RecordingChannels,
    _fast,
    measure,
    stripe_retries,
    variant_config,
)
from dunctl.backtest_model import (
    MIN_HELD_OUT,
    CaseRecord,
    Fit,
    Validation,
    fit_model,
    held_out,
    records,
    recovered_within,
    validate,
)
from dunctl.ledger.views.report import messages_delivered, retries_made
from dunctl.simulation.net_terms_outcome import card_part, measure_net_terms
from dunctl.stats import Comparison, compare, newcombe, wilson

CHECK_DAYS = (7, 14, 30)
FEW_CASES = 100


@dataclass
class Backtest:
    ledger: str
    since: str | None
    until: str | None
    cases: int
    start: str
    end: str
    seed: int
    preset: str
    fits: list[Fit]
    validation: Validation
    # share of the fitted cases recovered by day N, with 95% Wilson intervals: {"ledger", "preset", "replay"}
    check: dict[str, dict[str, dict[str, float | None]]]
    observed: Outcome                 # the ledger as it is
    baseline: Outcome                 # the active config, replayed with the fitted model
    candidates: list[Outcome] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)   # candidate vs baseline, recovered of failed
    # the baseline against the ledger on every case, recovered of failed: {"ledger", "replay", "gap", "low", "high"}
    baseline_gap: dict[str, float | None] = field(default_factory=dict)
    # every run's rates with their 95% Wilson intervals:
    # {name: {"recovered_of_failed": {"rate", "low", "high"}, "recovered_of_ended": {...}}}
    projected: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- the history ---------------------------------------------------------------------------------------------------


def load_history(ledger: Ledger, since: datetime | None = None, until: datetime | None = None) -> list[HistoricalInvoice]:
    items = []
    for row in q.failed_invoices(ledger, iso(since), iso(until)):
        if row["first_failure_type"] == NET_TERMS:
            continue            # never failed: replayed as what it is (dunctl/backtest_net_terms.py)
        decline = json.loads(row["first_decline"] or row["latest_decline"] or "{}")
        known = {f.name for f in dataclasses.fields(Decline)}
        lines = [InvoiceLine(line.get("description"), int(line.get("amount") or 0), line.get("quantity"),
                             bool(line.get("metered"))) for line in json.loads(row["lines"] or "[]")]
        customer = Customer(id=row["customer_id"], name=row["name"], email=row["email"], phone=row["phone"],
                            metadata=json.loads(row["customer_metadata"] or "{}"),
                            preferred_locale=row["preferred_locale"], timezone=row["timezone"])
        method_type = row["payment_method_type"] or decline.get("payment_method_type") or "card"
        items.append(HistoricalInvoice(
            invoice_id=row["invoice_id"], customer=customer, subscription_id=row["subscription_id"],
            usage_based=bool(row["usage_based"]) or any(line.metered for line in lines), currency=row["currency"],
            amount_due=row["amount_due"], lines=lines or [InvoiceLine("Replayed invoice", row["amount_due"], 1)],
            billing_reason=row["billing_reason"],
            payment_method_id=row["payment_method_id"] or f"pm_replay_{row['customer_id']}a",
            payment_method_type=method_type, created=from_iso(row["created_at"]),
            first_failed_at=from_iso(row["first_failed_at"]),
            decline=Decline(**{k: v for k, v in decline.items() if k in known})))
    return items


# -- replaying ------------------------------------------------------------------------------------------------------


def replay(config: Config, history: list[HistoricalInvoice], ledger_path: Path, *, name: str, seed: int,
           start: datetime, end: datetime, assumptions: Assumptions, preset: str,
           net_terms: list[HistoricalNetTermsInvoice] = (), tick_every: timedelta = TICK_EVERY
           ) -> tuple[Outcome, Ledger]:
    """The history (and the net-terms invoices `net_terms`) on a simulated account under `config`, ticked hourly
    from `start` to `end`. Returns the outcome and the (open) replay ledger; the caller closes it."""
    for stale in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
        stale.unlink(missing_ok=True)
    ledger = _fast(Ledger.open(ledger_path))
    account = SimulatedAccount([], seed=seed, start=start, bill_until=start, assumptions=assumptions,
                               smart_retries=stripe_retries(config))
    for item in history:
        account.replay(item)
    for invoice in net_terms:
        account.replay_net_terms(invoice)
    driver = Driver(config, ledger, account, RecordingChannels(config, {}), tick_every=tick_every)
    driver.run(start, end)
    customers = len({item.customer.id for item in history})
    # The number of subscriptions behind the history is not in the ledger: churn stays a count, not a rate.
    return driver.outcome(name, customers, driver.last_tick or end, preset, subscriptions=None), ledger


def _observed(ledger: Ledger, config: Config, now: datetime, customers: int, since: datetime | None = None,
              until: datetime | None = None) -> Outcome:
    # The same counting as every simulated run's (Driver.outcome): one engine, so the columns compare.
    with card_part(ledger) as cards:
        ours, stripes = retries_made(cards.conn)
        outcome = measure("ledger (observed)", cards, now, config.file.dunning.attribution_window,
                          customers=customers, messages=messages_delivered(cards.conn), retries_dunctl=ours,
                          retries_stripe=stripes, subscriptions=None, preset="observed")
    outcome.net_terms = measure_net_terms(ledger, now, issued=(since, until))
    return outcome


def _read_ledger(active: Config, now: datetime, since: datetime | None, until: datetime | None
                 ) -> tuple[list[HistoricalInvoice], list[CaseRecord], Outcome, list[HistoricalNetTermsInvoice]]:
    if not active.ledger_path.exists():
        raise UsageError(f"no ledger at {active.ledger_path}", "run `dunctl tick` (or `dunctl demo`) first, or "
                         "pass -c with the config whose ledger holds the history")
    ledger = Ledger.open_existing(active.ledger_path)
    try:
        history = load_history(ledger, since, until)
        if not history:
            raise UsageError(f"no failed invoices in {active.ledger_path}"
                             + (" in that period" if since or until else ""),
                             "a backtest replays the cases a ledger holds: run dunctl for a while first")
        card_ids = {h.invoice_id for h in history}
        # the customer model is fitted on failed payments only: net-terms cases have their own model
        cases = [c for c in records(q.case_touches(ledger, iso(since), iso(until))) if c.invoice_id in card_ids]
        observed = _observed(ledger, active, now, len({h.customer.id for h in history}), since, until)
        net_terms = load_net_terms_history(ledger, since, until)
    finally:
        ledger.close()
    return history, cases, observed, net_terms


@dataclass
class _Runs:
    """Replays of (part of) the history, each into its own numbered ledger under `work`."""

    history: list[HistoricalInvoice]
    work: Path
    seed: int
    start: datetime
    end: datetime
    preset: str
    made: int = 0
    net_terms: list[HistoricalNetTermsInvoice] = field(default_factory=list)   # replayed in whole runs only
    tick_every: timedelta = TICK_EVERY

    def outcome(self, config: Config, name: str, model: Assumptions, part: list[HistoricalInvoice] | None = None,
                seed: int | None = None, keep: bool = False) -> tuple[Outcome, list[CaseRecord]]:
        path = self.work / f"{self.made:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.db"
        self.made += 1
        outcome, ledger = replay(config, self.history if part is None else part, path, name=name,
                                 seed=self.seed if seed is None else seed, start=self.start, end=self.end,
                                 assumptions=model, preset=self.preset,
                                 net_terms=self.net_terms if part is None else (), tick_every=self.tick_every)
        try:
            return outcome, records(q.case_touches(ledger)) if keep else []
        finally:
            ledger.close()

    def cases(self, config: Config, name: str, model: Assumptions, part: list[HistoricalInvoice],
              seed: int | None = None) -> list[CaseRecord]:
        return self.outcome(config, name, model, part, seed, keep=True)[1]


def run_backtest(active: Config, candidates: list[Path], work: Path, now: datetime, *, since: datetime | None = None,
                 until: datetime | None = None, follow_up_days: int = 0, seed: int = DEFAULT_SEED,
                 preset: str = DEFAULT_PRESET, tick_every: timedelta = TICK_EVERY) -> Backtest:
    """Fit the customer model to the active config's ledger, check it on held-out cases, then replay every case
    under the active config (the baseline) and under each candidate. `now` is the ledger's clock: the replay runs
    to it (plus `follow_up_days`), so the baseline sees what the ledger has seen. Cron's hourly ticks, unless
    `tick_every` says otherwise (tests of what holds at any cadence)."""
    prior = preset_assumptions(preset)
    history, ledger_cases, observed, net_terms = _read_ledger(active, now, since, until)
    start = min(h.created for h in (*history, *net_terms)).replace(minute=0, second=0, microsecond=0) \
        - timedelta(hours=1)
    end = now + timedelta(days=follow_up_days)
    if end <= start:
        raise UsageError(f"the ledger's clock ({iso(now)}) is before its first invoice ({iso(start)})",
                         "pass --now with a later time")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    runs = _Runs(history, work, seed, start, end, preset, net_terms=net_terms, tick_every=tick_every)
    train = [h for h in history if not held_out(h.invoice_id)]
    test = [h for h in history if held_out(h.invoice_id)]
    train_ids = {h.invoice_id for h in train}
    ledger_train = [c for c in ledger_cases if c.invoice_id in train_ids]
    ledger_test = [c for c in ledger_cases if c.invoice_id not in train_ids]
    fitted = fit_model(ledger_train, lambda model, n: runs.cases(active, f"fit-{n}", model, train), prior, preset)
    # A fresh seed: a ledger simulated with `seed` (a demo's) would otherwise be replayed with its own luck.
    fresh = seed + 1
    replayed_test = runs.cases(active, "held-out", fitted.model, test, fresh) if len(test) >= MIN_HELD_OUT else []
    validation = validate(ledger_test, replayed_test, len(train), fresh)
    baseline, replayed = runs.outcome(active, "baseline", fitted.model, keep=fitted.prior_cases is None)
    # Nothing fitted: the baseline's replay of the fitted cases is the preset's, and the fitted model's.
    preset_cases = fitted.prior_cases or [c for c in replayed if c.invoice_id in train_ids]
    result = Backtest(
        ledger=str(active.ledger_path), since=iso(since), until=iso(until), cases=len(history), start=iso(start),
        end=iso(end), seed=seed, preset=preset, fits=fitted.fits, validation=validation,
        check=_check(ledger_train, preset_cases, fitted.fitted_cases or preset_cases), observed=observed,
        baseline=baseline)
    _run_candidates(result, runs, candidates, work, fitted.model)
    result.projected = {o.name: {"recovered_of_failed": _interval(o.recovered, o.failed_invoices),
                                 "recovered_of_ended": _interval(o.recovered, o.ended)}
                        for o in (observed, baseline, *result.candidates)}
    result.baseline_gap = _gap(sum(1 for c in ledger_cases if c.recovered_at), len(ledger_cases), baseline)
    result.warnings = _warnings(result)
    return result


def _gap(recovered: int, cases: int, baseline: Outcome) -> dict[str, float | None]:
    """The baseline's recovered of failed against the ledger's (`recovered` of its `cases`: the cohort replayed, not
    the whole ledger), on every case: the fitted ones included, so a weaker check than the held-out validation.
    With Newcombe's 95% interval."""
    diff = newcombe(baseline.recovered, baseline.failed_invoices, recovered, cases)
    return {"ledger": round(recovered / cases, 4) if cases else None, "replay": baseline.recovered_of_failed,
            "gap": None if diff is None else round(diff.difference, 4),
            "low": None if diff is None else round(diff.low, 4), "high": None if diff is None else round(diff.high, 4)}


def _run_candidates(result: Backtest, runs: _Runs, candidates: list[Path], work: Path, model: Assumptions) -> None:
    """The candidates, on the same invoices with the same luck as the baseline."""
    names = {"baseline"}
    for i, source in enumerate(candidates):
        name, config = variant_config(source, work)
        while name in names:
            name = f"{name}-{i + 1}"
        names.add(name)
        outcome, _ = runs.outcome(config, name, model)
        result.candidates.append(outcome)
        result.comparisons.append(compare(name, outcome.recovered, outcome.failed_invoices, "the baseline",
                                          result.baseline.recovered, result.baseline.failed_invoices, noun=""))


def _interval(part: int, whole: int) -> dict[str, float | None]:
    if not whole:
        return {"rate": None, "low": None, "high": None}
    low, high = wilson(part, whole)
    return {"rate": round(part / whole, 4), "low": round(low, 4), "high": round(high, 4)}


def _check(ledger: list[CaseRecord], prior: list[CaseRecord], fitted: list[CaseRecord]) -> dict:
    """Share of the fitted cases recovered within N days: on the ledger, on the preset's replay, on the fitted
    model's replay, each with its 95% Wilson interval."""
    return {f"recovered within {d} days": {
        "ledger": _interval(recovered_within(ledger, d), len(ledger)),
        "preset": _interval(recovered_within(prior, d), len(prior)),
        "replay": _interval(recovered_within(fitted, d), len(fitted))} for d in CHECK_DAYS}


def _warnings(result: Backtest) -> list[str]:
    notes = []
    if result.cases < FEW_CASES:
        notes.append(f"only {result.cases} failed invoices: differences of a few cases are noise; read the "
                     "verdicts, not the percentages")
    for fit in result.fits:
        if not fit.fitted:
            notes.append(f"{fit.quantity} ({', '.join(fit.parameters)}) {fit.why}")
    if result.validation.misses or result.validation.gap is None:
        notes.append(f"validation: {result.validation.verdict}")
    gap = result.baseline_gap
    if gap.get("low") is not None and (gap["low"] > 0 or gap["high"] < 0):
        notes.append(f"baseline: the replay of every case recovers {gap['replay']:.1%} of all, the ledger "
                     f"{gap['ledger']:.1%}, a gap of {gap['gap'] * 100:+.1f} points (95% CI {gap['low'] * 100:+.1f} to "
                     f"{gap['high'] * 100:+.1f}): the model misses this ledger beyond its interval")
    for comparison in result.comparisons:
        if not comparison.distinguishable and comparison.more_per_arm:
            notes.append(f"{comparison.arm}: about {comparison.more_per_arm:,} more failed invoices would be "
                         "needed to tell it from the baseline")
    return notes
