"""The condition language shared by segment rules and a step's `when:`.

A condition is a mapping of field to test; every field must match (AND). A test is a value (equals), a list (any
of), or comparisons (`gte`, `gt`, `lte`, `lt`). Amount thresholds name their currency: `{gte: {usd: 500000}}`; a
case in a currency the threshold does not name does not match.

    when:
      amount_due: {gte: {usd: 5000000, eur: 4500000}}
      failure_type: [card_soft, unknown]
      customer.metadata.tier: enterprise
"""

from __future__ import annotations

from typing import Any

from dunctl.failures import FAILURE_TYPES

AMOUNT_FIELDS = ("amount_due", "amount_remaining")
# days_overdue: days past the due date (negative before it); a card invoice's due date is its first failure
NUMBER_FIELDS = ("attempt_count", "days_since_failure", "days_overdue")
TEXT_FIELDS = ("currency", "failure_type", "decline_code", "payment_method_type", "billing_reason", "segment",
               "collection_method")
BOOL_FIELDS = ("usage_based", "livemode")
METADATA_PREFIXES = ("customer.metadata.", "invoice.metadata.", "subscription.metadata.")
COMPARISONS = ("gte", "gt", "lte", "lt")
FIELDS = AMOUNT_FIELDS + NUMBER_FIELDS + TEXT_FIELDS + BOOL_FIELDS


def check_condition(condition: Any) -> list[tuple[tuple, str]]:
    """Return (relative key path, problem) pairs; empty when the condition is valid."""
    if condition is None:
        return []
    if not isinstance(condition, dict):
        return [((), "a condition is a mapping of field to value, list, or comparisons")]
    problems: list[tuple[tuple, str]] = []
    for field, test in condition.items():
        path = (field,)
        if not isinstance(field, str) or not (field in FIELDS or field.startswith(METADATA_PREFIXES)):
            problems.append((path, f"unknown field '{field}'; allowed fields are {', '.join(FIELDS)}, "
                                   f"or customer.metadata.KEY, invoice.metadata.KEY, subscription.metadata.KEY"))
            continue
        if field in AMOUNT_FIELDS:
            problems += _check_amount(path, test)
        elif field in NUMBER_FIELDS:
            problems += _check_number(path, test)
        elif field in BOOL_FIELDS:
            if not isinstance(test, bool):
                problems.append((path, "must be true or false"))
        else:
            values = test if isinstance(test, list) else [test]
            if isinstance(test, dict) or not values or not all(isinstance(v, (str, int)) for v in values):
                problems.append((path, "must be a value or a list of values (any of)"))
            elif field == "failure_type":
                for i, v in enumerate(values):
                    if v not in FAILURE_TYPES:
                        where = path + (i,) if isinstance(test, list) else path
                        problems.append((where, f"unknown failure type '{v}'; allowed: {', '.join(FAILURE_TYPES)}"))
    return problems


def _check_amount(path: tuple, test: Any) -> list[tuple[tuple, str]]:
    if not isinstance(test, dict) or not test:
        return [(path, "an amount test is comparisons with a threshold per currency, "
                       "e.g. {gte: {usd: 500000}} (minor units)")]
    problems = []
    for op, thresholds in test.items():
        if op not in COMPARISONS:
            problems.append((path + (op,), f"unknown comparison '{op}'; allowed: {', '.join(COMPARISONS)}"))
        elif not isinstance(thresholds, dict) or not thresholds:
            problems.append((path + (op,), "a threshold names its currency: {usd: 500000} (minor units)"))
        else:
            for currency, amount in thresholds.items():
                if not (isinstance(currency, str) and len(currency) == 3 and currency.islower()):
                    problems.append((path + (op, currency), "currency must be a lowercase ISO code such as usd"))
                elif not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
                    problems.append((path + (op, currency), "threshold must be a whole number of minor units"))
    return problems


def _check_number(path: tuple, test: Any) -> list[tuple[tuple, str]]:
    if isinstance(test, bool):
        return [(path, "must be a number, a list of numbers, or comparisons")]
    if isinstance(test, int):
        return []
    if isinstance(test, list) and test and all(isinstance(v, int) and not isinstance(v, bool) for v in test):
        return []
    if isinstance(test, dict) and test:
        return [(path + (op,), f"unknown comparison '{op}'; allowed: {', '.join(COMPARISONS)}")
                if op not in COMPARISONS else (path + (op,), "must be a number")
                for op, v in test.items() if op not in COMPARISONS or not isinstance(v, int) or isinstance(v, bool)]
    return [(path, "must be a number, a list of numbers, or comparisons such as {gte: 3}")]


def _compare(op: str, actual, threshold) -> bool:
    if actual is None:
        return False
    return {"gte": actual >= threshold, "gt": actual > threshold,
            "lte": actual <= threshold, "lt": actual < threshold}[op]


def matches(condition: dict | None, facts: dict) -> bool:
    """True when every field of `condition` holds for `facts`. Pure."""
    return first_unmet(condition, facts) is None


def first_unmet(condition: dict | None, facts: dict) -> tuple[str, Any, Any] | None:
    """The first (field, test, actual value) of `condition` that does not hold for `facts`, or None when all
    do: what `dunctl explain` shows for a segment rule that did not match."""
    for field, test in (condition or {}).items():
        if field.startswith(METADATA_PREFIXES):
            scope, _, key = field.partition(".metadata.")
            actual = (facts.get(f"{scope}.metadata") or {}).get(key)
        else:
            actual = facts.get(field)
        if not _holds(field, test, actual, facts):
            return field, test, actual
    return None


def _holds(field: str, test: Any, actual: Any, facts: dict) -> bool:
    if field in AMOUNT_FIELDS:
        currency = facts.get("currency")
        return all(currency in thresholds and _compare(op, actual, thresholds[currency])
                   for op, thresholds in test.items())
    if isinstance(test, dict):
        return all(_compare(op, actual, value) for op, value in test.items())
    if isinstance(test, list):
        return any(_equal(actual, v) for v in test)
    return _equal(actual, test)


def _equal(actual, expected) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected or actual == expected
    return actual is not None and str(actual) == str(expected)
