"""Money is an integer in the currency's minor unit plus the currency. Never a float, never summed across
currencies."""

from __future__ import annotations

# Stripe's zero-decimal currencies: the amount is already in the major unit.
ZERO_DECIMAL = frozenset(
    "bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split()
)
# Three-decimal currencies Stripe supports.
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

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
