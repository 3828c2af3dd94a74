"""Experiment statistics that survive peeking, several arms and the customer as the unit.

`report --by arm` is run whenever someone wants to know, often daily. A fixed-sample interval (Newcombe's, in
dunctl/stats.py) looked at daily calls an A/A experiment "distinguishable" in about a third of runs; so the arms
are compared here with an always-valid confidence sequence, which holds its level however often, and whenever,
it is looked at:

- **The boundary** is Robbins' normal mixture, the mixture sequential probability ratio test (mSPRT) of Johari,
  Koomen, Pekelis & Walsh (2022), "Always valid inference: continuous monitoring of A/B tests", Operations
  Research 70(3):1806-1821, section 4 (the same boundary is the two-sided normal mixture of Howard, Ramdas,
  McAuliffe & Sekhon (2021), "Time-uniform, nonparametric, nonasymptotic confidence sequences", Annals of
  Statistics 49(2):1055-1080, eq. (14)). With the difference d of the two rates, its variance V and the
  mixture's variance tau^2 the interval is d +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2)
  / V))), and its always-valid p-value 1 / Lambda with Lambda = sqrt(V / (V + tau^2)) exp(d^2 tau^2 / (2 V (V +
  tau^2))). tau is the experiment's minimum detectable effect, where the sequence is tightest. Like Johari et
  al.'s, the guarantee rests on the normal approximation, hence the floor of customers per arm below.
- **The customer is the unit.** Customers are randomised, and a customer's cases share a card, a bank and a
  habit: V is the cluster-robust (by customer) variance of each arm's rate, the ratio sum(recovered) /
  sum(cases) linearised over customers with the m / (m - 1) small-sample factor (Cameron & Miller (2015), "A
  practitioner's guide to cluster-robust inference", J. Human Resources 50(2), section II.C), never below the
  binomial variance at (recovered + 1) / (cases + 2), so three of three recovered is not a certainty.
- **Several arms** against one control are a family: Holm's step-down correction (Holm (1979), "A simple
  sequentially rejective multiple test procedure", Scand. J. Statistics 6(2):65-70) over the always-valid
  p-values, and each interval is shown at the level Holm tests its arm at, so an interval excludes zero exactly
  when the arm is declared different.
- **Refusals, not verdicts**: no control cases, no cases in the arm, fewer than `min_customers` customers in
  either arm (the normal approximation does not hold yet), or not yet enough cases to detect the stated
  minimum effect with the stated power: "not enough cases: 41 of ~800 needed".

Pure functions of counts: no I/O, no clock, no NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

METHOD = ("always-valid mSPRT confidence sequence (Johari et al. 2022; Howard et al. 2021), "
          "cluster-robust by customer, Holm-corrected across arms")


@dataclass(frozen=True)
class Design:
    """What the experiment promised to detect: the false-positive rate over every look, the smallest
    difference worth finding (a fraction: 0.05 is 5 points) and the chance of finding it."""

    alpha: float = 0.05
    minimum_detectable_effect: float = 0.05
    power: float = 0.8
    min_customers: int = 30

    @property
    def mixture_precision(self) -> float:
        """1 / tau^2: the mixture is tightest near the effect the experiment was designed for."""
        return 1 / self.minimum_detectable_effect ** 2


@dataclass(frozen=True)
class ArmSample:
    """One arm's cases grouped by customer: the sums a cluster-robust variance needs."""

    customers: int
    cases: int
    recovered: int
    cases_squared: int = 0          # sum over customers of cases^2
    recovered_squared: int = 0      # sum of recovered^2
    cases_recovered: int = 0        # sum of cases * recovered

    @classmethod
    def of(cls, per_customer: Iterable[tuple[int, int]]) -> ArmSample:
        """From (cases, recovered) per customer."""
        m = n = x = nn = xx = nx = 0
        for cases, recovered in per_customer:
            m, n, x = m + 1, n + cases, x + recovered
            nn, xx, nx = nn + cases * cases, xx + recovered * recovered, nx + cases * recovered
        return cls(m, n, x, nn, xx, nx)

    @property
    def rate(self) -> float:
        return self.recovered / self.cases

    @property
    def binomial_variance(self) -> float:
        shrunk = (self.recovered + 1) / (self.cases + 2)
        return shrunk * (1 - shrunk) / self.cases

    @property
    def variance(self) -> float:
        """The rate's variance with customers as independent units, floored at the binomial one."""
        floor = self.binomial_variance
        if self.customers < 2:
            return floor
        p = self.rate
        residuals = self.recovered_squared - 2 * p * self.cases_recovered + p * p * self.cases_squared
        clustered = self.customers / (self.customers - 1) * max(residuals, 0.0) / self.cases ** 2
        return max(clustered, floor)


def half_width(information: float, alpha: float, precision: float) -> float:
    """The mSPRT interval's half-width at information 1 / V (see the module docstring)."""
    return math.sqrt((information + precision) / information ** 2
                     * (2 * math.log(1 / alpha) + math.log1p(information / precision)))


def p_value(difference: float, information: float, precision: float) -> float:
    """1 / Lambda, the always-valid p-value of "no difference" at this look."""
    log_lambda = (0.5 * math.log(precision / (information + precision))
                  + (difference * information) ** 2 / (2 * (information + precision)))
    return 1.0 if log_lambda <= 0 else math.exp(-min(log_lambda, 700.0))


def holm(p_values: list[float], alpha: float) -> list[tuple[float, bool]]:
    """Per p-value: the level Holm's procedure tests it at, and whether it is rejected. Once one is not
    rejected, it and every larger one are tested at that same level and not rejected."""
    k = len(p_values)
    result: list[tuple[float, bool]] = [(alpha / max(k, 1), False)] * k
    stopped: float | None = None
    for rank, i in enumerate(sorted(range(k), key=lambda j: p_values[j])):
        level = alpha / (k - rank)
        if stopped is None and p_values[i] <= level:
            result[i] = (level, True)
        else:
            stopped = level if stopped is None else stopped
            result[i] = (stopped, False)
    return result


@lru_cache(maxsize=4096)
def _needed(base_rate: float, design_effect: float, alpha: float, design: Design) -> int:
    p0 = min(max(base_rate, 0.01), 0.99)
    effect = design.minimum_detectable_effect
    p1 = p0 + effect if p0 + effect <= 0.99 else p0 - effect
    per_case = design_effect * (p0 * (1 - p0) + p1 * (1 - p1))   # n x the variance of the difference
    z_power = NormalDist().inv_cdf(design.power)

    def enough(n: int) -> bool:
        information = n / per_case
        return (effect - half_width(information, alpha, design.mixture_precision)) * math.sqrt(information) \
            >= z_power

    low, high = 1, 2
    while not enough(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return max(high, design.min_customers)


def needed_per_arm(base_rate: float, design_effect: float, alpha: float, design: Design) -> int:
    """Cases per arm for the always-valid test at `alpha` to find the design's minimum effect with its power,
    from the control's rate and the customers' design effect (both rounded: the answer is "about")."""
    return _needed(round(base_rate, 2), round(max(design_effect, 1.0), 1), alpha, design)


@dataclass(frozen=True)
class ArmComparison:
    """One arm against the control, on recovered of failed (every case of the arm)."""

    arm: str
    control: str
    difference: float | None       # arm minus control, a fraction; None when either arm has no cases
    ci_low: float | None           # the always-valid interval at `confidence`; None when refused
    ci_high: float | None
    confidence: float | None       # 1 - the level Holm tests this arm at (0.975 with two arms)
    p_value: float | None          # always-valid p-value of "no difference" at this look
    distinguishable: bool
    needed_per_arm: int | None     # cases per arm to detect the minimum effect with the stated power
    more_per_arm: int | None       # beyond the smaller of the two arms today
    design_effect: float | None    # variance by customer over variance by case (1: independent cases)
    refusal: str | None            # why there is no verdict: no-control, no-cases, too-few-customers, too-few-cases
    verdict: str


def _points(value: float) -> str:
    return f"{value * 100:.1f}"


def _level(confidence: float) -> str:
    return f"always-valid {confidence * 100:.4g}% CI"


def _design_effect(*samples: tuple[ArmSample, float]) -> float:
    ratios = [v / (s.rate * (1 - s.rate) / s.cases) for s, v in samples if 0 < s.recovered < s.cases]
    return max(1.0, sum(ratios) / len(ratios)) if ratios else 1.0


@dataclass(frozen=True)
class _Pair:
    arm: str
    sample: ArmSample
    difference: float | None = None
    information: float | None = None
    design_effect: float | None = None
    needed: int | None = None
    refusal: str | None = None


def _pair(arm: str, sample: ArmSample, control: tuple[ArmSample, float], k: int, design: Design) -> _Pair:
    if control[0].cases == 0:
        return _Pair(arm, sample, refusal="no-control")
    if sample.cases == 0:
        return _Pair(arm, sample, refusal="no-cases")
    variance = sample.variance
    deff = _design_effect((sample, variance), control)
    control, control_variance = control
    needed = needed_per_arm(control.rate, deff, design.alpha / k, design)
    refusal = "too-few-customers" if min(sample.customers, control.customers) < design.min_customers else None
    return _Pair(arm, sample, sample.rate - control.rate, 1 / (variance + control_variance), deff, needed, refusal)


def compare_arms(control: str, control_sample: ArmSample, arms: list[tuple[str, ArmSample]],
                 design: Design = Design()) -> list[ArmComparison]:
    """Each arm against the control, corrected for the number of arms, with a verdict or a refusal."""
    k = max(len(arms), 1)
    base = (control_sample, control_sample.variance if control_sample.cases else 0.0)
    pairs = [_pair(arm, sample, base, k, design) for arm, sample in arms]
    precision = design.mixture_precision
    p_values = [1.0 if p.refusal else p_value(p.difference, p.information, precision) for p in pairs]
    return [_compared(p, control, control_sample, p_values[i], level, rejected, design)
            for i, (p, (level, rejected)) in enumerate(zip(pairs, holm(p_values, design.alpha)))]


def _compared(pair: _Pair, control: str, base: ArmSample, p: float, level: float, rejected: bool,
              design: Design) -> ArmComparison:
    arm, effect = pair.arm, _points(design.minimum_detectable_effect)
    if pair.refusal in ("no-control", "no-cases"):
        verdict = ("no control cases: nothing can be compared" if pair.refusal == "no-control"
                   else f"no cases yet in arm {arm}: nothing to compare")
        return ArmComparison(arm, control, None, None, None, None, None, False, None, None, None, pair.refusal,
                             verdict)
    smaller = min(pair.sample.cases, base.cases)
    more = max(0, pair.needed - smaller)
    shortfall = f"not enough cases: {smaller:,} of ~{pair.needed:,} needed per arm to detect {effect} points"
    if pair.refusal == "too-few-customers":
        verdict = (f"{shortfall}; no verdict before {design.min_customers} customers in each arm "
                   f"({min(pair.sample.customers, base.customers)} so far)")
        return ArmComparison(arm, control, round(pair.difference, 6), None, None, None, None, False, pair.needed,
                             more, round(pair.design_effect, 3), pair.refusal, verdict)
    width = half_width(pair.information, level, design.mixture_precision)
    # a difference of two rates lies in [-1, 1]: the interval says no more than that
    low, high = max(pair.difference - width, -1.0), min(pair.difference + width, 1.0)
    ci = f"{_level(1 - level)} {_points(low)} to {_points(high)}"
    refusal = None
    if rejected:
        direction = "more" if pair.difference > 0 else "fewer"
        verdict = f"arm {arm} recovers {_points(abs(pair.difference))} points {direction} than {control}, {ci}"
    elif more:
        refusal, verdict = "too-few-cases", f"{shortfall} ({ci})"
    elif -design.minimum_detectable_effect < low and high < design.minimum_detectable_effect:
        verdict = f"no difference of {effect} points or more: {ci}"
    else:
        verdict = f"not distinguishable: {ci}"
    return ArmComparison(arm, control, round(pair.difference, 6), round(low, 6), round(high, 6), round(1 - level, 6),
                         round(p, 6), rejected, pair.needed, more, round(pair.design_effect, 3), refusal, verdict)
