"""Money is an integer in the currency's minor unit plus the currency. Never a float, never summed across
currencies."""

from __future__ import annotations

import functools

from datetime import date, datetime
from decimal import Decimal

from typing import TYPE_CHECKING

from dunctl.formats import remembered

if TYPE_CHECKING:   # Babel itself loads with the first formatted value: a tick with nothing to say never pays for it
    from babel import Locale

# Stripe's zero-decimal currencies: the amount is already in the major unit.
ZERO_DECIMAL = frozenset(
    ["bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"]
)
# Three-decimal currencies Stripe supports.
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])

SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "cad": "CA$", "aud": "A$", "chf": "CHF ",
           "inr": "₹", "brl": "R$", "mxn": "MX$", "sek": "SEK ", "nzd": "NZ$"}


def decimals(currency: str) -> int:
    c = currency.lower()
    if c in ZERO_DECIMAL:
        return 0
    if c in THREE_DECIMAL:
        return 3
    return 2


def to_major(amount: int, currency: str) -> str:
    """The amount in major units as exact decimal text ('1234.50'), for CSV and JSON consumers."""
    places = decimals(currency)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{frac:0{places}d}"


def format_amount(amount: int, currency: str) -> str:
    """Human text with grouping and symbol: '$1,234.50', '¥1,200', '1,234.500 KWD'."""
    places = decimals(currency)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**places) if places else (abs(amount), 0)
    number = f"{whole:,}" + (f".{frac:0{places}d}" if places else "")
    symbol = SYMBOLS.get(currency.lower())
    if symbol:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number} {currency.upper()}"


# -- formatting for a customer's locale (Babel) --------------------------------------------------------------


def exponent(currency: str) -> int:
    """How many minor-unit digits Stripe uses for `currency`: the amount 1234 is 12.34 USD but 1234 JPY.

    This is Stripe's exponent, not always ISO 4217's: Stripe keeps two decimals for ISK, HUF and TWD (amounts must
    be divisible by 100), so the conversion follows Stripe and Babel then rounds to the currency's display digits.
    """
    return decimals(currency)


def to_decimal(amount: int, currency: str) -> Decimal:
    """The exact major-unit value of an integer minor-unit amount, never through a float."""
    return Decimal(int(amount)).scaleb(-exponent(currency))


@functools.lru_cache(maxsize=256)
def babel_locale(tag: str | None, default: str = "en") -> Locale:
    """A Babel locale for a Stripe/BCP 47 tag ('fr-CA', 'ja', 'pt_BR'), or the default when the tag is unknown.
    Looked up once per tag: every message asks again."""
    from babel import Locale, UnknownLocaleError   # lazy: see dunctl/lazy.py

    for candidate in (tag, default, "en"):
        if not candidate:
            continue
        try:
            return Locale.parse(str(candidate).replace("-", "_"))
        except (ValueError, TypeError, UnknownLocaleError):
            continue
    return Locale.parse("en")


@functools.lru_cache(maxsize=256)
def locale_names(tag: str | None, default: str = "en") -> tuple[str, str]:
    """(language, Babel's identifier) of babel_locale(tag, default): ('fr', 'fr_CA'). What messages are keyed and
    worded by; kept between processes (dunctl/formats.py) with the values formatted in it, so that a process whose
    values are all known never imports Babel."""
    language, code = remembered("locale", (tag, default), lambda: _babel_names(tag, default))
    return language, code


def _babel_names(tag: str | None, default: str) -> tuple[str, str]:
    loc = babel_locale(tag, default)
    return loc.language, str(loc)


def _code(tag: str | None) -> str:
    return locale_names(tag)[1]


def _locale_code(locale: str | Locale | None) -> str:
    """Babel's identifier for a tag or a Locale ('fr_CA'): the key formatted values are cached under."""
    return _code(locale) if locale is None or isinstance(locale, str) else str(locale)


def format_money(amount: int, currency: str, locale: str | Locale | None = "en") -> str:
    """Human text for the locale: '$1,234.56' (en), '1 234,56 €' (fr, Babel puts a narrow no-break space
    between thousands and a no-break space before the symbol), '1.234,56 €' (de), '￥1,250,000' (ja)."""
    return _formatted(int(amount), currency.upper(), _locale_code(locale))


@functools.lru_cache(maxsize=65536)
def _formatted(amount: int, currency: str, locale: str) -> str:
    # Babel's formatting is the slow part of a message (about 0.15 ms each); the same amounts recur across a
    # tick's messages (plan prices), so each (amount, currency, locale) is formatted once per process. Amounts
    # that do not recur (usage so far, projections: most of a usage alert's) fill in the shape Babel gave an
    # amount with as many digits (_shape): the same text, a hundred function calls fewer.
    digits = str(abs(amount)).rjust(exponent(currency) + 1, "0")
    shape = _shape(currency, locale, len(digits), amount < 0)
    return shape.format(*digits) if shape is not None else _babel_currency(amount, currency, locale)


def _babel_currency(amount: int, currency: str, locale: str) -> str:
    from babel.numbers import format_currency   # lazy: see dunctl/lazy.py

    # the Locale looked up once (babel_locale), not parsed again for every amount
    return format_currency(to_decimal(amount, currency.lower()), currency, locale=babel_locale(locale))


@functools.lru_cache(maxsize=4096)
def _shape(currency: str, locale: str, digits: int, negative: bool) -> str | None:
    """Babel's text for an amount of `digits` digits in minor units (at least one before the decimal point), its
    digits as `{}`: two such amounts differ only in their digits (the symbol, the separators, the grouping and
    the sign's place depend on the locale, the currency and the number of digits). Kept between processes
    (dunctl/formats.py). None when that cannot hold: Babel shows fewer decimals than Stripe's minor unit (it
    rounds), or its text has other digits (then Babel formats each amount itself)."""
    return remembered("amount", (currency, locale, digits, negative),
                      lambda: _babel_shape(currency, locale, digits, negative))


def _babel_shape(currency: str, locale: str, digits: int, negative: bool) -> str | None:
    from babel.numbers import get_currency_precision   # lazy: see dunctl/lazy.py

    if get_currency_precision(currency) != exponent(currency):
        return None
    return digit_shape(_babel_currency(int("1" * digits) * (-1 if negative else 1), currency, locale), digits)


def digit_shape(text: str, digits: int) -> str | None:
    """`text`, Babel's for the number 11...1 of `digits` digits, with its digits as `{}` (for str.format), or None
    when it has other digits too."""
    if text.count("1") != digits or sum(ch.isdigit() for ch in text) != digits:
        return None
    return "".join("{}" if ch == "1" else ch.replace("{", "{{").replace("}", "}}") for ch in text)


def format_day(moment: date | datetime, locale: str | Locale | None = "en", style: str = "long") -> str:
    """A date as the locale writes it: 'December 7, 2026', '7 décembre 2026', '7. Dezember 2026', '2026年12月7日'."""
    day = moment.date() if isinstance(moment, datetime) else moment
    return _formatted_day(day, _locale_code(locale), style)


@functools.lru_cache(maxsize=4096)
def _formatted_day(day: date, locale: str, style: str) -> str:
    # like amounts, the same few dates (due dates, failure days) recur across a tick's messages, and across the
    # ticks of a day: kept between processes (dunctl/formats.py)
    return remembered("day", (day.isoformat(), locale, style), lambda: _babel_day(day, locale, style))


def _babel_day(day: date, locale: str, style: str) -> str:
    from babel.dates import format_date   # lazy: see dunctl/lazy.py

    return format_date(day, style, locale=babel_locale(locale))
