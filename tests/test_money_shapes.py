"""Amounts formatted for a locale without Babel on every one (dunctl/money.py `_shape`): the same text as Babel's,
for every number of digits, both signs, the currencies whose minor unit Babel shows as it is and those it rounds
(issue #25: a usage alert's amounts never recur, and Babel took a hundred calls for each)."""

from __future__ import annotations

import pytest

from dunctl.money import _babel_currency, _formatted, _shape

AMOUNTS = [0, 5, 99, 100, 1234, 100000, 1234567, 987654321012]


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "BHD", "INR", "ISK", "HUF", "XOF"])
@pytest.mark.parametrize("locale", ["en_US", "fr_FR", "de_CH", "hi_IN", "ar_EG", "ja"])
def test_an_amount_reads_as_babel_writes_it(currency, locale):
    for amount in AMOUNTS + [-a for a in AMOUNTS]:
        assert _formatted(amount, currency, locale) == _babel_currency(amount, currency, locale), amount


def test_another_amount_of_as_many_digits_takes_the_shape_already_worked_out():
    _formatted(123456, "USD", "pl_PL")
    hits = _shape.cache_info().hits
    assert _formatted(654321, "USD", "pl_PL") == _babel_currency(654321, "USD", "pl_PL")
    assert _shape.cache_info().hits == hits + 1
    assert _shape("ISK", "en_US", 5, False) is None      # Babel rounds ISK to whole krónur: each amount is Babel's
