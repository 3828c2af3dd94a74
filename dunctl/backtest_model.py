"""The backtest's customer model, fitted to a ledger channel by channel and checked on cases it did not see.

Every recovery is credited to the one channel that most likely caused it, by one rule applied alike to the
ledger and to every replay (`credit`): a retry that collected is the retries'. A payment the customer made goes to
the strongest prompt before it whose effect could still be running (a message's within 2 days, a person's within
4, lost service's within 7: the model's own response delays, times the fitted timing): lost service (a pause, a
cancellation) before a person, a person before a message, the latest of equals. A payment later than any prompted
customer acts (7 days, times the timing) is unprompted. The shares: retries of the soft-declined cases retried at
least once; each prompt's channel of the cases it reached; unprompted of all cases.

The fit replays the ledger's invoices under the config that produced them, first to fit the timing alone (the
response delays, from the hours between a message and the payments credited to it), then every channel: each
moves its parameters so the replay's share meets the ledger's (a ratio step, then secant steps in logs), replaying
until no scale moves more than 5% or the replays run out. The same rule on both sides means a payment the rule
misplaces is misplaced alike on both, so the fixed point is still the model's parameters: a test fits ledgers
played from known parameters and finds each within 25%. A channel whose ledger share rests on fewer than
MIN_RECOVERIES recoveries (recoveries, not cases) keeps the preset's value, by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import geometric_mean

from dunctl.clock import from_iso
from dunctl.simulation.assumptions import Assumptions
from dunctl.stats import newcombe, wilson

MIN_RECOVERIES = 30
BOUNDS = (0.25, 4.0)              # a channel's scale on the preset's parameters
TIMING_BOUNDS = (1 / 32, 32.0)    # the response delays' scale
ITERATIONS = 4                    # replays fitting every channel, after the timing's
TIMING_FIRST = 3                  # replays fitting the timing alone, at most
SETTLED = 0.05                    # a scale that moves less than this between replays has settled
SOFT = ("card_soft", "bank_soft", "unknown")
HELD_OUT_EVERY = 3                # one case in three (by a hash of its invoice id) is kept out of the fit
CAP = 0.95                        # no prompt makes a payment certain
LONGEST = timedelta(days=7)       # the model's longest delay before a prompted customer acts (x1): later is unprompted


@dataclass(frozen=True)
class Channel:
    name: str
    parameters: tuple[str, ...]
    horizon: timedelta | None     # how long after its prompt a payment is still its doing (delays x1)
    rank: int                     # of two prompts still running, the higher rank takes the credit


CHANNELS = (
    Channel("retries", ("retry_recoverable",), None, 0),
    # message delays: a median of 5 hours, log-normal sigma 1: 2 days is past the 99th percentile
    Channel("messages", ("email_response", "sms_response"), timedelta(days=2), 1),
    Channel("escalation", ("escalation_response",), timedelta(days=4), 2),     # a person: 1-4 days
    # Lost service, paused or cancelled: one channel, as both act after 1-7 days and a cancellation follows its
    # pause by days, so no rule on a ledger could tell their payments apart.
    Channel("suspension", ("suspension_response", "cancellation_winback"), timedelta(days=7), 3),
    Channel("unprompted", ("organic_daily_rate",), None, 0),
)
BY_NAME = {c.name: c for c in CHANNELS}
# The timing is fitted on the payments credited to messages: the commonest prompt, and the fastest to act on, so
# the hours from it to payment are the model's response delays, little cut short by the next prompt.
TIMED = "messages"


def _prompt_channel(action: str, audience: str) -> str:
    if action in ("email", "sms"):
        # An email to the account manager is a person being asked to follow up, not a message to the customer.
        return "messages" if audience == "customer" else "escalation"
    return "escalation" if action == "escalate" else "suspension"     # pause_subscription, cancel_subscription


@dataclass(frozen=True)
class CaseRecord:
    """What a ledger (or a replay's ledger) shows of one case, as much as crediting needs."""

    invoice_id: str
    first_failed_at: datetime
    recovered_at: datetime | None
    soft: bool
    retried: bool
    by_retry: bool
    prompts: tuple[tuple[datetime, str], ...]     # (when, channel), oldest first


def records(rows: list[dict]) -> list[CaseRecord]:
    """CaseRecords from `ledger.views.history.case_touches` rows."""
    out = []
    for row in rows:
        prompts = [(from_iso(at), _prompt_channel(action, audience))
                   for at, action, audience in json.loads(row["touches"] or "[]") if at]
        prompts.sort()
        recovered = row["state"] == "recovered" and row["recovered_at"]
        out.append(CaseRecord(
            row["invoice_id"], from_iso(row["first_failed_at"]), from_iso(row["recovered_at"]) if recovered else None,
            row["failure_type"] in SOFT, (row["attempts"] or 0) >= 2,
            bool(recovered) and row["recovered_by"] in ("retry", "provider_retry"), tuple(prompts)))
    return out


def credit(case: CaseRecord, timing: float = 1.0) -> tuple[str | None, float | None]:
    """The channel a recovery is credited to (None when the case was not recovered) and, for a prompt's, the
    hours from that prompt to the payment."""
    if case.recovered_at is None:
        return None, None
    if case.by_retry:
        return "retries", None
    before = [(at, channel) for at, channel in case.prompts if at <= case.recovered_at]
    running = [(BY_NAME[channel].rank, at, channel) for at, channel in before
               if case.recovered_at - at <= BY_NAME[channel].horizon * timing]
    if running:
        _, at, channel = max(running)
        return channel, (case.recovered_at - at).total_seconds() / 3600
    if before and case.recovered_at - before[-1][0] <= LONGEST * timing:
        return before[-1][1], None       # slower than usual, but no prompted customer is slower than this
    return "unprompted", None


def exposed(case: CaseRecord, channel: str) -> bool:
    if channel == "retries":
        return case.soft and case.retried
    if channel == "unprompted":
        return True
    return any(c == channel for _, c in case.prompts)


@dataclass
class Tally:
    cases: int
    exposed: dict[str, int]
    recovered: dict[str, int]
    delays: list[float]           # hours from the message to each payment credited to messages

    def share(self, channel: str) -> float | None:
        return self.recovered[channel] / self.exposed[channel] if self.exposed[channel] else None


def tally(cases: list[CaseRecord], timing: float = 1.0) -> Tally:
    result = Tally(len(cases), {c.name: 0 for c in CHANNELS}, {c.name: 0 for c in CHANNELS}, [])
    for case in cases:
        for channel in CHANNELS:
            result.exposed[channel.name] += exposed(case, channel.name)
        channel, hours = credit(case, timing)
        if channel is not None:
            result.recovered[channel] += 1
        if channel == TIMED and hours is not None:
            result.delays.append(max(hours, 0.01))     # a log mean needs no zero
    return result


def recovered_within(cases: list[CaseRecord], days: int) -> int:
    return sum(1 for c in cases if c.recovered_at and c.recovered_at - c.first_failed_at < timedelta(days=days))


def held_out(invoice_id: str) -> bool:
    """Whether a case is kept out of the fit to check it: a hash of its invoice id, so the split is the same on
    every run and unrelated to when or how the case failed."""
    return int(hashlib.sha256(invoice_id.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


# -- the fit --------------------------------------------------------------------------------------------------------


@dataclass
class Fit:
    """One fitted quantity: what the ledger showed (with its 95% Wilson interval), what the fitted replay gave,
    and the scale on the preset's parameters."""

    quantity: str                 # a channel, or timing
    parameters: list[str]
    cases: int                    # the ledger's cases exposed to it (the denominator)
    recoveries: int               # the ledger's recoveries credited to it: what the fit rests on
    observed: float | None        # the ledger's share (timing: geometric mean hours from message to payment)
    observed_low: float | None
    observed_high: float | None
    replayed: float | None        # the same on the last replay
    scale: float
    fitted: bool
    why: str


@dataclass
class ModelFit:
    model: Assumptions
    fits: list[Fit]
    prior_cases: list[CaseRecord] | None     # the first replay (the preset's); None when nothing was fitted
    fitted_cases: list[CaseRecord] | None    # the last replay
    replays: int
    settled: bool


def apply(prior: Assumptions, scales: dict[str, float], timing: float) -> Assumptions:
    changes: dict = {"response_delay_scale": round(prior.response_delay_scale * timing, 6)}
    for name, scale in scales.items():
        for parameter in BY_NAME[name].parameters:
            value = getattr(prior, parameter)
            if isinstance(value, dict):
                changes[parameter] = {k: round(min(v * scale, CAP), 6) for k, v in value.items()}
            else:
                changes[parameter] = round(min(value * scale, CAP), 8)
    return dataclasses.replace(prior, **changes)


def _bounded(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


class _Secant:
    """One scale's search, in logs: the first step assumes the statistic moves as much as the scale (a ratio
    update); later steps use the slope between the last two replays, since a channel's share grows slower than
    its parameter (other channels collect first) and the latest prompt's delay slower than the delays (the next
    prompt cuts it short)."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []     # (log scale, log replay statistic)

    def step(self, scale: float, observed: float, replayed: float, bounds: tuple[float, float]) -> float:
        x, y, target = math.log(scale), math.log(replayed), math.log(observed)
        slope = 1.0
        if self.points and abs(x - self.points[-1][0]) > 0.05:
            # never steeper than proportional: a step that overshoots would swing between replays
            slope = min(max((y - self.points[-1][1]) / (x - self.points[-1][0]), 0.3), 1.0)
        self.points.append((x, y))
        return _bounded(math.exp(x + (target - y) / slope), bounds)


def _next_scales(scales: dict[str, float], timing: float, seen: Tally, got: Tally, search: dict[str, _Secant],
                 channels: bool) -> tuple[dict[str, float], float]:
    new = dict(scales)
    for name in scales if channels else ():
        observed, replayed = seen.share(name), got.share(name)
        if seen.recovered[name] >= MIN_RECOVERIES and replayed:
            new[name] = search[name].step(scales[name], observed, replayed, BOUNDS)
    if len(seen.delays) >= MIN_RECOVERIES and got.delays:
        timing = search["timing"].step(timing, geometric_mean(seen.delays), geometric_mean(got.delays), TIMING_BOUNDS)
    return new, timing


def _moved(old: float, new: float) -> bool:
    return abs(math.log(new / old)) >= math.log1p(SETTLED)


def fit_model(ledger_cases: list[CaseRecord], replay: Callable[[Assumptions, int], list[CaseRecord]],
              prior: Assumptions, preset: str) -> ModelFit:
    """Fit `prior` to `ledger_cases`; `replay(assumptions, n)` replays the same invoices under the ledger's own
    config and returns their records. The timing first, alone: until customers act as quickly as the ledger's,
    the horizons misplace payments and every channel's share with them (at most TIMING_FIRST replays)."""
    scales = {c.name: 1.0 for c in CHANNELS}
    seen = tally(ledger_cases)
    if len(seen.delays) < MIN_RECOVERIES and not any(seen.recovered[k] >= MIN_RECOVERIES for k in scales):
        # Nothing rests on enough recoveries: the preset stands everywhere, and no replay can change that.
        empty = tally([])
        fits = [*(_channel_fit(c, seen, empty, 1.0, preset) for c in CHANNELS), _timing_fit(seen, empty, 1.0, preset)]
        return ModelFit(prior, fits, None, None, 0, True)
    timing, first, n, timed, settled = 1.0, None, 0, False, False
    search = {name: _Secant() for name in (*scales, "timing")}
    while n < ITERATIONS + TIMING_FIRST and not settled:
        got_cases = replay(apply(prior, scales, timing), n)
        first = first or got_cases
        seen, got = tally(ledger_cases, timing), tally(got_cases, timing)
        new, new_timing = _next_scales(scales, timing, seen, got, search, channels=timed)
        moved = _moved(timing, new_timing) or any(_moved(scales[k], new[k]) for k in scales)
        # Nothing with enough recoveries to fit: the preset's replay is the model's, one replay is enough.
        fittable = any(seen.recovered[k] >= MIN_RECOVERIES for k in scales)
        settled = not moved and (timed or not fittable)
        timed = timed or not moved or n + 1 >= TIMING_FIRST
        scales, timing, n = new, new_timing, n + 1
    fits = [_channel_fit(c, seen, got, scales[c.name], preset) for c in CHANNELS]
    fits.append(_timing_fit(seen, got, timing, preset))
    return ModelFit(apply(prior, scales, timing), fits, first, got_cases, n, settled)


def _kept(preset: str, recoveries: int) -> str:
    return (f"not fitted: {recoveries} recoveries on the ledger, fewer than {MIN_RECOVERIES}; the {preset} "
            "preset's value stands")


def _channel_fit(channel: Channel, seen: Tally, got: Tally, scale: float, preset: str) -> Fit:
    name = channel.name
    recoveries, cases = seen.recovered[name], seen.exposed[name]
    low, high = wilson(recoveries, cases) if cases else (None, None)
    observed, replayed = seen.share(name), got.share(name)
    fitted = recoveries >= MIN_RECOVERIES and bool(replayed)
    if recoveries < MIN_RECOVERIES:
        why = _kept(preset, recoveries)
    elif not replayed:
        why = f"not fitted: the replay credited no recovery to it; the {preset} preset's value stands"
    else:
        bounded = " (at its bound)" if scale in BOUNDS else ""
        why = (f"fitted from {recoveries} recoveries of {cases} cases: ledger {observed:.1%} (95% CI {low:.1%} to "
               f"{high:.1%}), fitted replay {replayed:.1%}; x{scale:.2f} on the {preset} preset{bounded}")
    return Fit(name, list(channel.parameters), cases, recoveries, _round(observed), _round(low), _round(high),
               _round(replayed), round(scale, 4) if fitted else 1.0, fitted, why)


def _timing_fit(seen: Tally, got: Tally, timing: float, preset: str) -> Fit:
    recoveries = len(seen.delays)
    observed = geometric_mean(seen.delays) if seen.delays else None
    replayed = geometric_mean(got.delays) if got.delays else None
    fitted = recoveries >= MIN_RECOVERIES and bool(got.delays)
    if recoveries < MIN_RECOVERIES:
        why = _kept(preset, recoveries) + " (payments credited to messages)"
    elif not got.delays:
        why = f"not fitted: the replay credited no payment to messages; the {preset} preset's value stands"
    else:
        why = (f"fitted from {recoveries} payments credited to messages: {observed:.1f} h from the message to payment "
               f"(geometric mean) on the ledger, {replayed:.1f} h on the fitted replay; customers' response delays x{timing:.2g}")
    return Fit("timing", ["response_delay_scale"], recoveries, recoveries, _round(observed), None, None,
               _round(replayed), round(timing, 4) if fitted else 1.0, fitted, why)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


# -- the check on held-out cases --------------------------------------------------------------------------------


@dataclass
class Validation:
    """The fitted model replayed, with a fresh seed, on cases the fit never saw, against what the ledger shows
    for them: recovered of failed by the replay's end, and the gap (replay - ledger) with its 95% interval
    (Newcombe's, for two independent proportions: the ledger's cases are one draw of the world, the replay
    another of the model)."""

    fitted_on: int
    held_out: int
    seed: int
    ledger_recovered: int
    replay_recovered: int
    ledger: float | None
    replay: float | None
    gap: float | None
    gap_low: float | None
    gap_high: float | None
    misses: bool                  # the interval excludes zero: the model does not reproduce this ledger
    verdict: str = ""


MIN_HELD_OUT = 20


def validate(ledger_cases: list[CaseRecord], replay_cases: list[CaseRecord], fitted_on: int, seed: int) -> Validation:
    n = len(ledger_cases)
    x_ledger = sum(1 for c in ledger_cases if c.recovered_at)
    x_replay = sum(1 for c in replay_cases if c.recovered_at)
    diff = newcombe(x_replay, len(replay_cases), x_ledger, n) if n and replay_cases else None
    result = Validation(fitted_on, n, seed, x_ledger, x_replay, _share(x_ledger, n), _share(x_replay, len(replay_cases)),
                        None, None, None, False)
    if diff is None or n < MIN_HELD_OUT:
        result.verdict = (f"not validated: {n} held-out case(s), fewer than {MIN_HELD_OUT}; the projections below "
                          "are the model's, untested on this ledger")
        return result
    result.gap, result.gap_low, result.gap_high = round(diff.difference, 4), round(diff.low, 4), round(diff.high, 4)
    result.misses = diff.distinguishable
    shown = (f"on {n} held-out cases the fitted replay (seed {seed}) recovers {result.replay:.1%} of all, the ledger "
             f"{result.ledger:.1%}: a gap of {diff.difference * 100:+.1f} points (95% CI {diff.low * 100:+.1f} to "
             f"{diff.high * 100:+.1f})")
    result.verdict = (f"{shown}: the model misses this ledger beyond its interval; the projections' levels are not "
                      "this ledger's, only the candidates' differences may be" if diff.distinguishable
                      else f"{shown}: within the interval")
    return result


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
