"""The statistics behind "did it work?": a confidence interval for the difference of two recovery rates, the
sample size needed to tell them apart, and a verdict in plain words.

- Wilson score interval for one proportion (Wilson 1927).
- Newcombe's hybrid score interval for a difference of two independent proportions (Newcombe 1998, "Interval
  estimation for the difference between independent proportions: comparison of eleven methods", method 10):
  it combines the two Wilson intervals, stays inside [-1, 1], and behaves well for small counts and rates near
  0 or 1, where the textbook Wald interval does not.
- Sample size per arm for a two-sided two-proportion z-test (Fleiss, "Statistical Methods for Rates and
  Proportions", without continuity correction), at the observed rates.

The standard library's NormalDist gives the quantiles; no SciPy. These intervals hold for one look at a fixed
sample (two simulated runs, a backtest); an experiment's arms, which `report --by arm` shows whenever it is run,
are compared in dunctl/sequential.py instead (always-valid, by customer, Holm-corrected).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

ALPHA = 0.05
POWER = 0.8


def z_for(alpha: float = ALPHA) -> float:
    """The two-sided critical value: 1.959964 for alpha 0.05."""
    return NormalDist().inv_cdf(1 - alpha / 2)


def wilson(successes: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The Wilson score interval for successes / n. (0, 1) when n is 0: nothing is known."""
    if n <= 0:
        return 0.0, 1.0
    z = z_for(alpha)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """Arm minus control, as fractions (0.061 is 6.1 points)."""

    difference: float
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        """The interval excludes zero: at 95%, the arms differ."""
        return self.low > 0 or self.high < 0


def newcombe(x1: int, n1: int, x2: int, n2: int, alpha: float = ALPHA) -> Difference | None:
    """p1 - p2 with Newcombe's hybrid score interval; None when either group is empty."""
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, alpha)
    l2, u2 = wilson(x2, n2, alpha)
    d = p1 - p2
    return Difference(d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
                      d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def sample_size(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Cases needed in each arm to detect p1 against p2 with a two-sided test at `alpha` and `power`. None when
    the rates are equal (no difference to detect)."""
    if p1 == p2:
        return None
    z_a, z_b = z_for(alpha), NormalDist().inv_cdf(power)
    mean = (p1 + p2) / 2
    root = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (p1 - p2) ** 2)


@dataclass(frozen=True)
class Comparison:
    """One arm against the control: the difference in recovery rate with its interval, the cases per arm a
    study at these rates needs, how many more that is, and a verdict a finance team can read."""

    arm: str
    control: str
    difference: float | None      # fraction; None when an arm has no cases
    ci_low: float | None
    ci_high: float | None
    distinguishable: bool
    needed_per_arm: int | None    # None when the rates are equal or an arm is empty
    more_per_arm: int | None      # beyond the smaller arm's cases today
    verdict: str


def points(value: float) -> str:
    return f"{value * 100:.1f}"


def compare(arm: str, x1: int, n1: int, control: str, x0: int, n0: int, alpha: float = ALPHA,
            power: float = POWER, measure: str = "recovers", noun: str = "arm ") -> Comparison:
    """Compare `arm` (x1 of n1) with `control` (x0 of n0). The verdict calls it "{noun}{arm}"."""
    diff = newcombe(x1, n1, x0, n0, alpha)
    if diff is None:
        return Comparison(arm, control, None, None, None, False, None, None,
                          f"no cases yet in {noun + arm if not n1 else 'the control ' + noun + control}")
    needed = sample_size(x1 / n1, x0 / n0, alpha, power)
    more = None if needed is None else max(0, needed - min(n1, n0))
    level = f"{(1 - alpha) * 100:g}%"
    ci = f"{level} CI {points(diff.low)} to {points(diff.high)}"
    if diff.distinguishable:
        direction = "more" if diff.difference > 0 else "fewer"
        verdict = f"{noun}{arm} {measure} {points(abs(diff.difference))} points {direction} than {control}, {ci}"
    elif needed is None:
        verdict = (f"not yet distinguishable: the same rate in both arms so far ({ci}); no sample size can "
                   "detect a difference that has not appeared")
    elif more:
        verdict = (f"not yet distinguishable: about {more:,} more cases per arm needed to detect "
                   f"{points(abs(diff.difference))} points ({ci})")
    else:
        verdict = (f"not distinguishable at {level}: {points(abs(diff.difference))} points is within the noise "
                   f"({ci})")
    return Comparison(arm, control, round(diff.difference, 6), round(diff.low, 6), round(diff.high, 6),
                      diff.distinguishable, needed, more, verdict)
