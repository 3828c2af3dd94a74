"""The `notices:` section of dunctl.yaml, validated like the rest (unknown keys, bad durations, conditions)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from dunctl.conditions import check_condition
from dunctl.errors import ConfigProblem
from dunctl.offsets import parse_duration
from dunctl.strict import Strict as _Strict

RECIPIENTS = ("billing_contact", "customer")
# Every link in a message must work for as long as the message asks the customer to act. A customer portal
# session URL does not: "sessions are short-lived and will expire if the customer does not visit the URL"
# (https://docs.stripe.com/api/customer_portal/sessions), and an email is often opened hours or days later. So no
# message carries one: a dunning message links the invoice's hosted page (pay there, with a new card too), a
# pre-dunning notice the portal's static login link (the customer signs in with their email).
SESSION_EXPIRES = ("emails a customer portal session URL, which Stripe expires shortly after it is made, usually "
                   "before the customer clicks")
# What `dunctl init` writes for notices.update_url: `check` notes it until it is replaced.
STARTER_UPDATE_URL = "https://billing.stripe.com/p/login/test_replace_with_yours"
PORTAL_LOGIN_HINT = ("set notices.update_url to your customer portal login link (Stripe Dashboard > Settings > "
                     "Billing > Customer portal > Login link: https://billing.stripe.com/p/login/...)")


def _durations(value: Any) -> list[timedelta]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("give at least one duration, e.g. [14d, 3d]")
    return sorted({v if isinstance(v, timedelta) else parse_duration(v) for v in values}, reverse=True)


def _amounts(value: dict[str, int]) -> dict[str, int]:
    for currency, amount in value.items():
        if len(currency) != 3 or not currency.isalpha() or currency != currency.lower():
            raise ValueError(f"'{currency}' is not a currency; use a lowercase ISO code such as usd")
        if amount <= 0:
            raise ValueError(f"{currency}: amounts are positive integers in minor units (cents)")
    return value


class CardExpiring(_Strict):
    enabled: bool = True
    before: list[timedelta] = Field(default_factory=lambda: [timedelta(days=14), timedelta(days=3)])
    template: str = "card-expiring"
    to: Literal[RECIPIENTS] = "billing_contact"  # type: ignore[valid-type]

    _before = field_validator("before", mode="before")(classmethod(lambda cls, v: _durations(v)))


class UpcomingRenewal(_Strict):
    enabled: bool = True
    before: list[timedelta] = Field(default_factory=lambda: [timedelta(days=7)])
    # The segment condition language, plus `interval` (the plan's billing interval). A renewal gets a reminder
    # when it matches `when`, or when its amount is at least `above` in its currency.
    when: dict[str, Any] | None = Field(default_factory=lambda: {"interval": "year"})
    above: dict[str, int] = Field(default_factory=dict)
    template: str = "upcoming-renewal"
    to: Literal[RECIPIENTS] = "billing_contact"  # type: ignore[valid-type]

    _before = field_validator("before", mode="before")(classmethod(lambda cls, v: _durations(v)))
    _above = field_validator("above")(classmethod(lambda cls, v: _amounts(v)))

    @field_validator("when")
    @classmethod
    def _condition(cls, value: dict | None) -> dict | None:
        if value:
            rest = {k: v for k, v in value.items() if k != "interval"}
            for path, message in check_condition(rest):
                raise ValueError(f"{'.'.join(map(str, path))}: {message}")
            interval = value.get("interval")
            allowed = {"day", "week", "month", "year"}
            intervals = interval if isinstance(interval, list) else [interval]
            # a mapping or a nested list is no interval either (and not hashable: never put it in a set)
            if interval is not None and not all(isinstance(i, str) and i in allowed for i in intervals):
                raise ValueError(f"interval: '{interval}' is not an interval; allowed: day, week, month, year")
        return value


class LargeCharge(_Strict):
    enabled: bool = True
    factor: float = Field(3.0, gt=1, le=100)
    template: str = "large-charge"


class Usage(_Strict):
    enabled: bool = True
    # Percent of the expected amount, reached by the period's running charge (the guide's 50/75/100%: a customer
    # sees the bill build up). With `pace` they apply instead to the charge projected to the period's end at the
    # pace so far, so usual usage never alerts (fewer notices; use with e.g. [150, 200]).
    thresholds: list[int] = Field(default_factory=lambda: [50, 75, 100])
    pace: bool = False
    # No projection before this share (%) of the period has passed: too early to tell a pace, so until then
    # only the running amount itself counts.
    min_elapsed: int = Field(25, ge=0, le=100)
    # Expected amount per period when a subscription has no three paid invoices to average, per currency.
    expected: dict[str, int] = Field(default_factory=dict)
    # Previews follow how close usage is to its next alert: the next one when usage could reach it at `surge`
    # times its pace so far, at most one per `check_every`. A higher surge looks more often (1000: every
    # check_every, whatever the usage).
    check_every: timedelta = Field(default_factory=lambda: timedelta(hours=6))
    surge: float = Field(2.0, ge=1, le=1000)
    # Upcoming-invoice previews per tick at most (one request each); the rest wait for the next tick,
    # least recently checked first.
    max_previews_per_tick: int = Field(200, ge=1, le=10000)
    template: str = "usage-alert"
    to: Literal[RECIPIENTS] = "billing_contact"  # type: ignore[valid-type]
    large_charge: LargeCharge = LargeCharge()

    _every = field_validator("check_every", mode="before")(
        classmethod(lambda cls, v: v if isinstance(v, timedelta) else parse_duration(v)))
    _expected = field_validator("expected")(classmethod(lambda cls, v: _amounts(v)))

    @field_validator("thresholds")
    @classmethod
    def _percentages(cls, value: list[int]) -> list[int]:
        if not value or any(not 1 <= t <= 1000 for t in value):
            raise ValueError("thresholds are percentages of the expected amount, 1 to 1000, e.g. [150, 200]")
        return sorted(set(value))


class NoticesConfig(_Strict):
    """Pre-dunning. A config without `notices:` (written before it existed) sends none."""

    enabled: bool = False
    # Where the one-click link goes: `update_url`, a static link such as the customer portal's login link.
    # `billing_portal` (a portal session) is refused: it expires before customers click (SESSION_EXPIRES).
    link: Literal["billing_portal", "url"] = "url"
    update_url: str | None = None
    card_expiring: CardExpiring = CardExpiring()
    upcoming_renewal: UpcomingRenewal = UpcomingRenewal()
    usage: Usage = Usage()

    @field_validator("update_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"'{value}' is not a URL; use https://...")
        if value is not None and "/p/session/" in value:
            raise ValueError(f"'{value}' is a customer portal session URL: it expires; use the portal's login link "
                             "(https://billing.stripe.com/p/login/...)")
        return value

    @field_validator("link")
    @classmethod
    def _no_session(cls, value: str) -> str:
        if value == "billing_portal":
            raise ValueError(f"billing_portal {SESSION_EXPIRES}; remove notices.link and {PORTAL_LOGIN_HINT}")
        return value

    @model_validator(mode="after")
    def _has_link(self) -> NoticesConfig:
        if self.enabled and not self.update_url:
            raise ValueError(f"notices send a link to update the payment method: {PORTAL_LOGIN_HINT}")
        return self

    def templates(self) -> list[str]:
        """The templates enabled notices use."""
        if not self.enabled:
            return []
        names = []
        if self.card_expiring.enabled:
            names.append(self.card_expiring.template)
        if self.upcoming_renewal.enabled:
            names.append(self.upcoming_renewal.template)
        if self.usage.enabled:
            names.append(self.usage.template)
            if self.usage.large_charge.enabled:
                names.append(self.usage.large_charge.template)
        return names


def template_problems(notices: NoticesConfig, templates_dir, config_path, lines: dict) -> list:
    """Every enabled notice's template must exist (subject and txt; html optional), named like steps' templates."""
    problems = []
    if not notices.enabled or not templates_dir.is_dir():
        return problems
    for name in notices.templates():
        for part in ("subject", "txt"):
            if not (templates_dir / f"{name}.{part}.j2").exists():
                known = sorted({p.name.split(".")[0] for p in templates_dir.glob("*.j2") if not p.name.startswith("_")})
                problems.append(ConfigProblem(str(config_path), "notices", f"unknown template '{name}': "
                                              f"{templates_dir}/{name}.{part}.j2 does not exist; known templates: "
                                              f"{', '.join(known)}", lines.get(("notices",))))
                break
    return problems
