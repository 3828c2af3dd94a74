"""Backtests on a team's own history: `dunctl simulate --from-ledger CONFIG...`.

The ledger's own failed invoices (their customers, amounts, currencies, lines, failure types and first decline
codes, payment methods, creation and first-failure times) are replayed on the simulated account under each
candidate config, with the real engine ticking hourly, exactly as `simulate` does with a synthetic book.

What the customers do is the simulation's model, fitted to this ledger where it has enough history:

- **retries**: of the soft-declined cases retried at least once, the share a retry collected;
- **messages**: of the cases that were sent at least one email or SMS, the share paid with a message as the
  last touch before payment (the report's attribution);
- **unprompted**: of all cases, the share paid with no touch at all;
- **timing**: the share of all cases recovered within 7 and 14 days. Fitted first, with the preset's shares:
  replays with the customers' response delays scaled (x2, x4, ... or x1/2, ...) until the by-day shares stop
  coming closer to the ledger's, then halfway to either neighbour; the closest scale is kept
  (`response_delay_scale`). It needs MIN_CASES recovered cases. Customers who act late also pay outside the
  attribution window and after the ledger's clock, so the shares above are then measured on a replay with the
  fitted timing, not the preset's.

Each share is measured twice: on the ledger, and on a replay of the ledger under its own config with the
preset's values (and the fitted timing). The ratio (bounded to [1/4, 4]) scales the preset's parameters
(retry_recoverable; email_response and sms_response; organic_daily_rate), so the model reproduces what this
ledger saw under the config that produced it. Where a share rests on fewer than MIN_CASES cases the preset's
value is kept, and the result says so. The share recovered by day 7, 14 and 30 is shown for the ledger, the
unfitted preset and the fitted replay.

The candidates then run on the same invoices with the same luck (the same seed and invoice ids): their
differences from the baseline (the active config, replayed) are the configs' doing.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from dunctl.simulation.account import HistoricalInvoice, SimulatedAccount
from dunctl.simulation.assumptions import (
    DEFAULT_PRESET,
    Assumptions,
    preset_assumptions,
)
from dunctl.simulation.demo import (
    DEFAULT_SEED,
    Driver,
    Outcome,
    RecordingChannels,
    _fast,
    stripe_retries,
    variant_config,
)
from dunctl.stats import Comparison, compare

MIN_CASES = 30
SOFT = ("card_soft", "bank_soft", "unknown")
BOUNDS = (0.25, 4.0)
CHECK_DAYS = (7, 14, 30)
TIMING_DAYS = (7, 14)
TIMING_STEPS = 5               # at most this many doublings (or halvings) of the response delays


@dataclass
class Fit:
    """One fitted quantity: what the ledger showed, what the preset gave on the same invoices, and the result."""

    quantity: str                 # retries | messages | unprompted | timing
    parameters: list[str]
    cases: int                    # the denominator on the ledger
    observed: float | None        # the share on the ledger
    replayed: float | None        # the share the preset gave on the replay
    scale: float                  # applied to the preset's parameters (1.0 when not fitted)
    fitted: bool
    why: str


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
    check: dict[str, dict[str, float | None]]    # share recovered by day N: {"ledger", "preset", "replay"}
    observed: Outcome                 # the ledger as it is
    baseline: Outcome                 # the active config, replayed with the fitted model
    candidates: list[Outcome] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)   # candidate vs baseline, recovered of all
    warnings: list[str] = field(default_factory=list)


# -- the history ---------------------------------------------------------------------------------------------------


def load_history(ledger: Ledger, since: datetime | None = None, until: datetime | None = None) -> list[HistoricalInvoice]:
    items = []
    for row in q.failed_invoices(ledger, iso(since), iso(until)):
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


# -- measuring shares, on the ledger and on a replay ------------------------------------------------------------


@dataclass
class Shares:
    retried: int
    by_retry: float | None
    messaged: int
    by_message: float | None
    cases: int
    unprompted: float | None
    by_day: dict[int, float | None]


def shares(ledger: Ledger, window: timedelta, since: datetime | None = None, until: datetime | None = None) -> Shares:
    rows = q.outcomes(ledger, int(window.total_seconds()), iso(since), iso(until))
    retried = [r for r in rows if r["failure_type"] in SOFT and r["attempts"] >= 2]
    messaged = [r for r in rows if r["messages"] > 0]

    def share(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    by_day = {}
    for day in CHECK_DAYS:
        done = sum(1 for r in rows if r["state"] == "recovered" and r["recovered_at"]
                   and from_iso(r["recovered_at"]) - from_iso(r["first_failed_at"]) < timedelta(days=day))
        by_day[day] = share(done, len(rows))
    return Shares(
        retried=len(retried),
        by_retry=share(sum(r["recovered_by"] in ("retry", "provider_retry") for r in retried), len(retried)),
        messaged=len(messaged),
        by_message=share(sum(r["last_touch"] in q.MESSAGES for r in messaged), len(messaged)),
        cases=len(rows),
        unprompted=share(sum(r["state"] == "recovered" and r["last_touch"] == "none" for r in rows), len(rows)),
        by_day=by_day)


def _fit(quantity: str, parameters: list[str], cases: int, observed: float | None, replayed: float | None,
         prior: str) -> Fit:
    if cases < MIN_CASES:
        return Fit(quantity, parameters, cases, observed, replayed, 1.0, False,
                   f"kept the {prior} preset's value: {cases} case(s), fewer than {MIN_CASES}")
    if not replayed:
        return Fit(quantity, parameters, cases, observed, replayed, 1.0, False,
                   f"kept the {prior} preset's value: the replay saw none to compare with")
    scale = min(max((observed or 0) / replayed, BOUNDS[0]), BOUNDS[1])
    bounded = " (bounded)" if scale in BOUNDS and (observed or 0) / replayed not in BOUNDS else ""
    return Fit(quantity, parameters, cases, observed, replayed, round(scale, 4), True,
               f"fitted from {cases} cases: ledger {observed:.1%}, {prior} preset {replayed:.1%}, "
               f"scale x{scale:.2f}{bounded}")


def fitted_assumptions(prior: Assumptions, fits: list[Fit]) -> Assumptions:
    changes: dict = {}
    for fit in fits:
        if not fit.fitted:
            continue
        for name in fit.parameters:
            value = getattr(prior, name)
            if isinstance(value, dict):
                changes[name] = {k: round(min(v * fit.scale, 0.95), 4) for k, v in value.items()}
            else:
                changes[name] = round(min(value * fit.scale, 0.95), 6)
    return dataclasses.replace(prior, **changes)


# -- replaying ------------------------------------------------------------------------------------------------------


def replay(config: Config, history: list[HistoricalInvoice], ledger_path: Path, *, name: str, seed: int,
           start: datetime, end: datetime, assumptions: Assumptions, preset: str) -> tuple[Outcome, Ledger]:
    """The history on a simulated account under `config`, ticked hourly from `start` to `end`. Returns the
    outcome and the (open) replay ledger; the caller closes it."""
    for stale in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
        stale.unlink(missing_ok=True)
    ledger = _fast(Ledger.open(ledger_path))
    account = SimulatedAccount([], seed=seed, start=start, bill_until=start, assumptions=assumptions,
                               smart_retries=stripe_retries(config))
    for item in history:
        account.replay(item)
    driver = Driver(config, ledger, account, RecordingChannels(config, {}))
    driver.run(start, end)
    customers = len({item.customer.id for item in history})
    # The number of subscriptions behind the history is not in the ledger: churn stays a count, not a rate.
    return driver.outcome(name, customers, driver.last_tick or end, preset, subscriptions=None), ledger


def _observed(ledger: Ledger, config: Config, now: datetime, customers: int) -> Outcome:
    from dunctl.ledger.views.report import messages_delivered, retries_made
    from dunctl.simulation.demo import measure

    # The same counting as every simulated run's (Driver.outcome): one engine, so the columns compare.
    ours, stripes = retries_made(ledger.conn)
    return measure("ledger (observed)", ledger, now, config.file.dunning.attribution_window, customers=customers,
                   messages=messages_delivered(ledger.conn), retries_dunctl=ours, retries_stripe=stripes,
                   subscriptions=None, preset="observed")


def run_backtest(active: Config, candidates: list[Path], work: Path, now: datetime, *, since: datetime | None = None,
                 until: datetime | None = None, follow_up_days: int = 0, seed: int = DEFAULT_SEED,
                 preset: str = DEFAULT_PRESET) -> Backtest:
    """Replay the active config's ledger under itself (the baseline) and under each candidate, with the model
    fitted to the ledger. `now` is the ledger's clock: the replay runs to it (plus `follow_up_days`), so the
    baseline sees what the ledger has seen."""
    prior = preset_assumptions(preset)
    if not active.ledger_path.exists():
        raise UsageError(f"no ledger at {active.ledger_path}", "run `dunctl tick` (or `dunctl demo`) first, or "
                         "pass -c with the config whose ledger holds the history")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.open_existing(active.ledger_path)
    try:
        history = load_history(ledger, since, until)
        if not history:
            raise UsageError(f"no failed invoices in {active.ledger_path}"
                             + (" in that period" if since or until else ""),
                             "a backtest replays the cases a ledger holds: run dunctl for a while first")
        window = active.file.dunning.attribution_window
        seen = shares(ledger, window, since, until)   # the same cohort as the history replayed
        observed = _observed(ledger, active, now, len({h.customer.id for h in history}))
    finally:
        ledger.close()
    start = min(h.created for h in history).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    end = now + timedelta(days=follow_up_days)
    if end <= start:
        raise UsageError(f"the ledger's clock ({iso(now)}) is before its first invoice ({iso(start)})",
                         "pass --now with a later time")

    def run(config: Config, name: str, assumptions: Assumptions, index: int) -> tuple[Outcome, Ledger]:
        path = work / f"{index:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.db"
        return replay(config, history, path, name=name, seed=seed, start=start, end=end, assumptions=assumptions,
                      preset=preset)

    # 1. the preset on the ledger's own config: what the model gives before fitting
    _, first = run(active, "baseline-prior", prior, 0)
    try:
        before = shares(first, window)
    finally:
        first.close()
    # 2. the timing: how many cases the ledger had recovered by day 7 and 14, with the preset's shares

    def timed(scale: float, index: int) -> Shares:
        _, trial = run(active, "timing", dataclasses.replace(prior, response_delay_scale=scale), index)
        try:
            return shares(trial, window)
        finally:
            trial.close()

    timing, delay_scale, at_timing = _fit_timing(timed, seen, before, preset)
    # 3. the shares, against a replay with the fitted timing (slower customers also pay outside the attribution
    # window and after the ledger's clock, so they are measured where the timing is right)
    fits = [
        _fit("retries", ["retry_recoverable"], seen.retried, seen.by_retry, at_timing.by_retry, preset),
        _fit("messages", ["email_response", "sms_response"], seen.messaged, seen.by_message, at_timing.by_message,
             preset),
        _fit("unprompted", ["organic_daily_rate"], seen.cases, seen.unprompted, at_timing.unprompted, preset),
        timing,
    ]
    shares_fitted = fitted_assumptions(prior, [fit for fit in fits if fit is not timing])
    model = dataclasses.replace(shares_fitted, response_delay_scale=delay_scale)
    # 4. the baseline: the active config, replayed with the fitted model
    baseline, base_ledger = run(active, "baseline", model, 1)
    try:
        after = shares(base_ledger, window)
    finally:
        base_ledger.close()
    result = Backtest(
        ledger=str(active.ledger_path), since=iso(since), until=iso(until), cases=len(history), start=iso(start),
        end=iso(end), seed=seed, preset=preset, fits=fits,
        check={f"recovered within {d} days": {"ledger": _round(seen.by_day[d]), "preset": _round(before.by_day[d]),
                                              "replay": _round(after.by_day[d])}
               for d in CHECK_DAYS},
        observed=observed, baseline=baseline)
    # 5. the candidates, on the same invoices with the same luck
    names = {"baseline"}
    for i, source in enumerate(candidates):
        name, config = variant_config(source, work)
        while name in names:
            name = f"{name}-{i + 1}"
        names.add(name)
        outcome, candidate_ledger = run(config, name, model, i + 2)
        candidate_ledger.close()
        result.candidates.append(outcome)
        result.comparisons.append(compare(name, outcome.recovered, outcome.failed_invoices, "the baseline",
                                          baseline.recovered, baseline.failed_invoices, noun=""))
    result.warnings = _warnings(result)
    return result


def _timing_error(replayed: Shares, seen: Shares) -> float:
    return sum(((replayed.by_day[d] or 0) - (seen.by_day[d] or 0)) ** 2 for d in TIMING_DAYS)


def _fit_timing(attempt, seen: Shares, before: Shares, preset: str) -> tuple[Fit, float, Shares]:
    """The response-delay scale whose replay recovers as many cases by day 7 and 14 as the ledger did: from x1
    (the preset's replay, `before`), doubling (customers slower than the model) or halving (faster) while the
    by-day shares come closer, then halfway to either neighbour. `attempt(scale, index)` replays with that
    scale. Returns the fit, the scale, and the chosen replay's shares."""
    recovered = round((seen.by_day[CHECK_DAYS[-1]] or 0) * seen.cases)
    parameters = ["response_delay_scale"]
    observed = seen.by_day[TIMING_DAYS[0]]
    if recovered < MIN_CASES:
        return (Fit("timing", parameters, recovered, observed, before.by_day[TIMING_DAYS[0]], 1.0, False,
                    f"kept the {preset} preset's value: {recovered} case(s) recovered, fewer than {MIN_CASES}"),
                1.0, before)
    # The model recovers more by day 7 than the ledger did: its customers are too quick, so slow them down.
    factor = 2.0 if (before.by_day[TIMING_DAYS[0]] or 0) > (observed or 0) else 0.5
    best = (_timing_error(before, seen), 1.0, before)
    scale = 1.0
    for step in range(TIMING_STEPS):
        scale *= factor
        trial = attempt(scale, 100 + step)
        error = _timing_error(trial, seen)
        if error >= best[0]:
            break
        best = (error, scale, trial)
    for n, between in enumerate((best[1] * math.sqrt(2), best[1] / math.sqrt(2))):
        trial = attempt(between, 150 + n)
        error = _timing_error(trial, seen)
        if error < best[0]:
            best = (error, between, trial)
    _, scale, got = best
    scale = round(scale, 4)
    shown = ", ".join(f"day {d}: ledger {seen.by_day[d]:.1%}, replay {got.by_day[d]:.1%}" for d in TIMING_DAYS)
    return (Fit("timing", parameters, recovered, observed, got.by_day[TIMING_DAYS[0]], scale, True,
                f"fitted from {recovered} cases recovered: customers' response delays x{scale:g}, the closest to "
                f"the ledger's share of all cases recovered by day {' and '.join(map(str, TIMING_DAYS))} "
                f"({shown}, with the {preset} preset's shares)"),
            scale, got)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _warnings(result: Backtest) -> list[str]:
    notes = []
    if result.cases < 100:
        notes.append(f"only {result.cases} failed invoices: differences of a few cases are noise; read the "
                     "verdicts, not the percentages")
    not_fitted = [f.quantity for f in result.fits if not f.fitted]
    if not_fitted:
        notes.append(f"not enough history to fit {', '.join(not_fitted)}: the {result.preset} preset's values "
                     "stand in for this ledger's customers there")
    for comparison in result.comparisons:
        if not comparison.distinguishable and comparison.more_per_arm:
            notes.append(f"{comparison.arm}: about {comparison.more_per_arm:,} more failed invoices would be "
                         "needed to tell it from the baseline")
    return notes
