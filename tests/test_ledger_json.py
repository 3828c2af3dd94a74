"""The ledger's JSON text (dunctl.ledger.sql.to_json): the same text json.dumps gives with the ledger's options, so
that equal values stay equal text whichever encoder wrote them (rows written before and after a change compare)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from dunctl.ledger.sql import to_json

VALUES = [
    {},
    [],
    {"b": 1, "a": [1.5, None, True, False, "é", "雪", "\u2028", 'quote " and \\ back']},
    {"z": {"y": {"x": [{"b": 2, "a": 1}]}}, "a": -0.0, "n": 10**20, "f": 1e-7},
    {"amount_due": 133513, "currency": "gbp", "lines": [{"amount": 74720, "metered": False, "price_id": None}]},
    "plain text",
    42,
    None,
    {"when": datetime(2026, 12, 7, 12, 30, tzinfo=timezone.utc), "amount": Decimal("12.50")},   # default=str
    {"nan": float("nan"), "inf": float("inf")},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_ledgers_json_is_json_dumps_with_sorted_keys_and_no_spaces(value):
    assert to_json(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def test_the_encoder_is_reused_without_carrying_anything_between_values():
    first = {"b": [1, 2], "a": {"c": None}}
    assert [to_json(first) for _ in range(3)] == ['{"a":{"c":null},"b":[1,2]}'] * 3
    with pytest.raises(TypeError):
        to_json({1: "one", "two": 2})         # mixed key types cannot be sorted: refused, as json.dumps does
    assert to_json(first) == '{"a":{"c":null},"b":[1,2]}'
