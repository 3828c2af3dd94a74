"""Rough exchange rates, only to compare thresholds written in several currencies (never to convert money a
customer owes: amounts are never summed or converted across currencies).

A segment such as `amount_due: {gte: {usd: 5000000, jpy: 7500000}}` means "about $50,000, in each currency";
a value 100x off (yen has no minor unit) silently sends a ¥750M invoice down the normal path. The rates below are
deliberately rough (order of magnitude is what matters); a factor of 10 between two currencies is a typo, not a
pricing choice.
"""

from __future__ import annotations

from dunctl.money import decimals

# US dollars per one major unit, rounded (late 2026): good to within ~30%, which is all a 10x check needs.
ROUGH_USD_PER_UNIT: dict[str, float] = {
    "usd": 1.0, "eur": 1.1, "gbp": 1.3, "chf": 1.15, "cad": 0.72, "aud": 0.65, "nzd": 0.6, "jpy": 0.0067,
    "cny": 0.14, "hkd": 0.13, "sgd": 0.75, "inr": 0.012, "krw": 0.00072, "sek": 0.095, "nok": 0.093,
    "dkk": 0.15, "pln": 0.25, "czk": 0.044, "huf": 0.0028, "brl": 0.18, "mxn": 0.055, "zar": 0.055,
}
MAX_SPREAD = 10.0


def rough_usd(amount: int, currency: str, rates: dict[str, float] | None = None) -> float | None:
    """`amount` (minor units) in US dollars at a rough rate, or None for a currency without one."""
    rate = (rates or ROUGH_USD_PER_UNIT).get(currency.lower())
    if rate is None:
        return None
    return amount / 10 ** decimals(currency) * rate


def threshold_spread(thresholds: dict[str, int], rates: dict[str, float] | None = None) -> str | None:
    """Why per-currency thresholds that should mean the same amount do not (more than 10x apart once roughly
    converted), or None when they agree."""
    converted = {c: usd for c, v in thresholds.items()
                 if isinstance(v, int) and (usd := rough_usd(v, c, rates)) is not None and usd > 0}
    if len(converted) < 2:
        return None
    low = min(converted, key=converted.get)
    high = max(converted, key=converted.get)
    if converted[high] <= converted[low] * MAX_SPREAD:
        return None
    return (f"{high}: {thresholds[high]} is about ${converted[high]:,.0f} but {low}: {thresholds[low]} is about "
            f"${converted[low]:,.0f} (rough rates), {converted[high] / converted[low]:.0f}x apart; amounts are in "
            f"each currency's minor unit ({high} has {decimals(high)} decimals)")
