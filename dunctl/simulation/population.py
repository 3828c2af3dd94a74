"""The synthetic book of customers: consumers and businesses, monthly and annual, flat and usage-based, four
currencies, card and ACH payers. Deterministic for a seed; built from `assumptions` only."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta

from dunctl.simulation.assumptions import DEFAULT, Assumptions

FIRST = ("Ada Grace Alan Linus Margaret Katherine Barbara Dennis Frances Hedy Radia Tim Sophie Yuki Hiro Amara "
         "Chen Priya Lars Ingrid Mateo Lucia Omar Zara Noah Emma Kenji Aiko Liam Chloe Raj Ana").split()
LAST = ("Lovelace Hopper Turing Torvalds Hamilton Johnson Liskov Ritchie Allen Lamarr Perlman Berners-Lee Wilson "
        "Tanaka Sato Okafor Wang Patel Larsen Berg Garcia Rossi Haddad Khan Smith Martin Suzuki Ito Murphy Dubois "
        "Singh Souza").split()
COMPANY_A = ("Northwind Contoso Initech Globex Umbrella Stark Wayne Acme Hooli Vandelay Tyrell Cyberdyne Soylent "
             "Wonka Gringotts Monarch Aperture Oscorp Pied Massive Blue Black Red Silver Quantum Vertex").split()
COMPANY_B = ("Labs Systems Analytics Logistics Foods Media Health Robotics Studio Partners Works Cloud Energy "
             "Capital Retail Data").split()
ZONES = {"usd": ("America/New_York", "America/Chicago", "America/Los_Angeles"), "eur": ("Europe/Berlin",
         "Europe/Paris", "Europe/Madrid"), "gbp": ("Europe/London",), "jpy": ("Asia/Tokyo",)}
LOCALES = {"usd": ("en-US",), "eur": ("de-DE", "fr-FR", "es-ES"), "gbp": ("en-GB",), "jpy": ("ja-JP",)}
BRANDS = (("visa", 0.55), ("mastercard", 0.30), ("amex", 0.12), ("discover", 0.03))


@dataclass(frozen=True)
class AddOn:
    """A second subscription of the same customer (extra seats, a module), billed as its own invoice on the main
    plan's billing date."""

    subscription_id: str
    description: str
    base_amount: int           # per billing period, minor units


ADD_ONS = ("Extra seats", "Analytics module", "Priority support", "Additional workspace", "API add-on")


@dataclass(frozen=True)
class SimCustomer:
    """One synthetic customer, their main subscription and any add-on subscriptions."""

    id: str
    kind: str                  # b2c | b2b
    tier: str                  # standard | business | enterprise
    name: str
    email: str                 # the product user
    billing_email: str | None  # B2B: the billing contact (accounts payable), a different person
    phone: str | None
    currency: str
    timezone: str
    locale: str
    method_type: str           # card | us_bank_account
    brand: str | None
    interval: str              # month | year
    usage_based: bool
    base_amount: int           # per billing period, minor units
    anchor: timedelta          # when in the first period (from the simulation start) the first renewal falls
    subscription_id: str
    payment_method_id: str
    add_ons: tuple[AddOn, ...] = ()
    plan: str | None = None    # the invoice line's description (None: the tier's plan)

    @property
    def subscriptions(self) -> int:
        return 1 + len(self.add_ons)

    @property
    def payer_email(self) -> str:
        return self.billing_email or self.email


def pick(rng: random.Random, weights: dict):
    """One key of `weights` (values are shares; they need not sum to one)."""
    total = sum(weights.values())
    point = rng.random() * total
    for key, weight in weights.items():
        point -= weight
        if point < 0:
            return key
    return key


def _minor(amount_usd_cents: float, currency: str, fx: dict) -> int:
    """A US-cent price in `currency`'s minor unit, rounded to a price a person would choose."""
    major = amount_usd_cents / 100 * fx[currency]
    if currency == "jpy":
        return int(max(100, round(major, -2)))
    return int(max(1, round(major)) * 100 - (1 if major < 1000 else 0))


def build_book(customers: int, seed: int, assumptions: Assumptions = DEFAULT) -> list[SimCustomer]:
    """`customers` synthetic customers, the same ones for the same seed."""
    a = assumptions
    rng = random.Random(f"dunctl-book/{seed}")
    book = []
    used_names: set[str] = set()
    for n in range(customers):
        kind = "b2b" if rng.random() < a.b2b_share else "b2c"
        tier = "standard"
        if kind == "b2b":
            tier = "enterprise" if rng.random() < a.enterprise_share_of_b2b else "business"
        currency = pick(rng, a.currency_mix)
        usage = rng.random() < a.usage_based_share[kind]
        interval = "year" if rng.random() < a.annual_share[kind] else "month"
        ach_key = "b2b_usage" if kind == "b2b" and usage else kind
        method = "us_bank_account" if currency == "usd" and rng.random() < a.ach_share[ach_key] else "card"
        low, high = a.monthly_price_usd["b2c" if kind == "b2c" else ("enterprise" if tier == "enterprise" else "b2b")]
        monthly = math.exp(rng.uniform(math.log(low), math.log(high)))
        base = _minor(monthly * (a.annual_months if interval == "year" else 1), currency, a.fx_per_usd)
        first, last = rng.choice(FIRST), rng.choice(LAST)
        if kind == "b2b":
            company = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)}"
            while company in used_names:
                company = f"{rng.choice(COMPANY_A)} {rng.choice(COMPANY_B)} {len(used_names)}"
            used_names.add(company)
            domain = company.lower().replace(" ", "") + ".test"
            name, email = company, f"{first.lower()}@{domain}"
            billing_email = rng.choice(("ap", "billing", "finance", "accounts")) + f"@{domain}"
            phone = None
        else:
            name = f"{first} {last}"
            email = f"{first.lower()}.{last.lower()}{n}@example.test"
            billing_email = None
            phone = f"+1555{rng.randrange(10**6):07d}" if rng.random() < 0.6 else None
        period_days = 365 if interval == "year" else 30
        anchor = timedelta(seconds=rng.randrange(period_days * 86400))
        brand = pick(rng, dict(BRANDS)) if method == "card" else None
        add_ons = _add_ons(n, kind, base, seed, a)
        book.append(SimCustomer(
            id=f"cus_sim{n:05d}", kind=kind, tier=tier, name=name, email=email, billing_email=billing_email,
            phone=phone, currency=currency, timezone=rng.choice(ZONES[currency]), locale=rng.choice(LOCALES[currency]),
            method_type=method, brand=brand, interval=interval, usage_based=usage, base_amount=base, anchor=anchor,
            subscription_id=f"sub_sim{n:05d}", payment_method_id=f"pm_sim{n:05d}a", add_ons=add_ons))
    return book


def _add_ons(n: int, kind: str, base: int, seed: int, a: Assumptions) -> tuple[AddOn, ...]:
    """Customer n's add-on subscriptions. Drawn from a generator of their own, so the rest of the book (and its
    luck) is the same whatever the add-on shares are."""
    rng = random.Random(f"dunctl-book/{seed}/add-ons/{n}")
    if rng.random() >= a.several_subscriptions_share[kind]:
        return ()
    count = rng.randint(*a.add_on_subscriptions)
    names = rng.sample(ADD_ONS, count)
    # Whole major units (whole hundreds of yen): 100 minor units at least.
    return tuple(AddOn(f"sub_sim{n:05d}x{i + 1}", name, int(max(100, round(base * rng.uniform(*a.add_on_price_share),
                                                                           -2))))
                 for i, name in enumerate(names))
