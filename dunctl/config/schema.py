"""The schema of `dunctl.yaml` and of the sequence files: strict pydantic models (unknown keys refused), with the
bounds each value may take, and `Config`, what `load_config` returns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator

from dunctl.experiments import Experiment
from dunctl.notices.config import SESSION_EXPIRES, NoticesConfig
from dunctl.offsets import Offset, offset_text, parse_offset
from dunctl.receivables.settings import CollectionsConfig
from dunctl.recipients import address_problem
from dunctl.strict import Strict

# Visa allows at most 15 attempts of one payment in 30 days; no sequence may plan more.
NETWORK_ATTEMPT_LIMIT = 15

ACTIONS = ("email", "sms", "slack", "webhook", "retry", "escalate", "pause_subscription", "cancel_subscription",
           "mark_uncollectible", "close", "hand_off")
CUSTOMER_FACING = frozenset({"email", "sms"})
# Steps that take the service away; they never run unless the customer was told first.
SUSPENDING = frozenset({"pause_subscription", "cancel_subscription", "mark_uncollectible"})
# Steps that cannot be undone: dunctl/irreversible.py decides when they may run. A hand-off to collections is one:
# the customer hears from an agency next, so they must have been told first, like a pause.
IRREVERSIBLE = SUSPENDING | {"hand_off"}
CUSTOMER, INTERNAL = "customer", "internal"
RECIPIENTS = ("billing_contact", "customer", "account_manager")


# What each duration can mean. Beyond these a value is a typo (99999999999999w overflows every date it touches).
MAX_OFFSET = timedelta(days=365)            # a sequence ends within a year of the first failure
MAX_OFFSET_BUSINESS_DAYS = 261
MAX_STEP_ID = 64                            # characters: a step id ends up in a Stripe idempotency key
TIMEOUT_LIMIT = 120.0                       # seconds; a channel call that takes longer stalls the tick
DEFAULT_TIMEOUT = 10.0


def _duration(value: Any, low: timedelta, high: timedelta) -> timedelta:
    if isinstance(value, timedelta):
        duration = value
    else:
        offset = parse_offset(value)  # ints, never a timedelta, so a huge value cannot overflow here
        if offset.business_days:
            raise ValueError(f"'{value}' uses business days; use m, h, d or w here")
        if offset.minutes > high.total_seconds() // 60:
            raise ValueError(f"'{value}' is too long; allowed: {offset_text(low)} to {offset_text(high)}")
        duration = timedelta(minutes=offset.minutes)
    if not low <= duration <= high:
        raise ValueError(f"'{value}' is out of range; allowed: {offset_text(low)} to {offset_text(high)}")
    return duration


def _bounded(name: str, low: timedelta, high: timedelta):
    """A validator reading `name` as a duration between `low` and `high` ('36h', '3d')."""
    return field_validator(name, mode="before")(classmethod(lambda cls, value: _duration(value, low, high)))


def _timeout(default: float = DEFAULT_TIMEOUT):
    """Seconds a channel call may take in all (connecting, sending, waiting for the answer)."""
    return Field(default, gt=0, le=TIMEOUT_LIMIT, allow_inf_nan=False,
                 description=f"seconds, more than 0 and at most {TIMEOUT_LIMIT:g}")


class LedgerConfig(Strict):
    path: str = "dunctl.db"


def _no_session_link(value: str | None) -> str | None:
    """A dunning message's link is the invoice's hosted page: an invoice exists, and its page stays valid while
    the invoice is open (the customer pays there, with a new card too). Never a portal session: it expires."""
    if value == "billing_portal":
        raise ValueError(f"billing_portal {SESSION_EXPIRES}; remove it: the default, hosted_invoice, is the "
                         "invoice's own payment page, where the customer can also pay with a new card")
    return value


class StripeConfig(Strict):
    api_key_env: str = "STRIPE_API_KEY"
    api_base: str | None = None
    retries: Literal["stripe", "dunctl"] = "stripe"
    # Stripe's limits (https://docs.stripe.com/rate-limits): 100 requests a second per account live, 25 in a
    # sandbox and per endpoint (a tick mostly reads one: events, invoices). Above 100 is always refused.
    max_requests_per_second: float = Field(25.0, gt=0)
    max_backoff_tries: int = Field(6, ge=0, le=20)
    update_link: Literal["hosted_invoice", "billing_portal"] = "hosted_invoice"   # billing_portal: refused
    portal_return_url: str | None = None
    pause_behavior: Literal["void", "keep_as_draft", "mark_uncollectible"] = "void"
    recheck_before_action: bool = False
    backfill_days: int = Field(60, ge=1, le=400)
    # Connect platforms: the connected account this ledger follows (sent as the Stripe-Account header).
    account: str | None = Field(None, pattern=r"^acct_[A-Za-z0-9]+$")
    # Retry the open invoice on the next tick when the customer's payment method changes during a case.
    retry_on_update: bool = True

    _update_link = field_validator("update_link")(classmethod(lambda cls, v: _no_session_link(v)))

    @field_validator("max_requests_per_second")
    @classmethod
    def _within_stripes_limit(cls, value: float) -> float:
        if value > 100:
            raise ValueError(f"{value:g} requests a second is more than Stripe allows: at most 100 in live mode, "
                             "25 in test mode and per endpoint; use 25")
        return value


class SenderConfig(Strict):
    from_: str = Field("Billing <billing@example.com>", alias="from")
    reply_to: str | None = None
    company: str = "Our company"
    timezone: str = "UTC"
    quiet_hours: str | None = None
    # The language of the unsuffixed templates, used when no template matches the customer's preferred locale.
    locale: str = "en"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown time zone '{value}'; use an IANA name such as America/New_York")
        return value

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        from babel import Locale, UnknownLocaleError   # lazy: see dunctl/lazy.py

        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(f"unknown locale '{value}'; use a language tag such as en, fr or pt-BR")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _hours(cls, value: str | None) -> str | None:
        if value is not None:
            quiet_window(value)
        return value


def quiet_window(text: str) -> tuple[int, int]:
    """'21:00-08:00' -> (1260, 480) minutes after midnight."""
    try:
        start, end = text.split("-")
        result = []
        for part in (start, end):
            hours, minutes = part.strip().split(":")
            if not (0 <= int(hours) < 24 and 0 <= int(minutes) < 60):
                raise ValueError
            result.append(int(hours) * 60 + int(minutes))
        return result[0], result[1]
    except ValueError:
        raise ValueError(f"'{text}' is not a window; use HH:MM-HH:MM such as 21:00-08:00")


class EmailChannel(Strict):
    transport: Literal["smtp", "file"] = "file"
    host: str = "localhost"
    port: int = Field(25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    username_env: str | None = None
    password_env: str | None = None
    dir: str = "outbox"
    timeout: float = _timeout()


class SlackChannel(Strict):
    webhook_url_env: str = "SLACK_WEBHOOK_URL"
    timeout: float = _timeout()


class WebhookChannel(Strict):
    url: str | None = None
    url_env: str | None = None
    secret_env: str = "DUNCTL_WEBHOOK_SECRET"
    timeout: float = _timeout()


class Collections(CollectionsConfig):
    # the hand-off's packet also goes here when set: url or url_env, secret_env, timeout, as channels.webhook
    webhook: WebhookChannel | None = None


class SmsChannel(Strict):
    provider: Literal["twilio"] = "twilio"
    account_sid_env: str = "TWILIO_ACCOUNT_SID"
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    from_: str = Field(..., alias="from")
    base_url: str = "https://api.twilio.com"
    timeout: float = _timeout()
    # strict: texts carry neither the customer's name nor an amount (an SMS is read on a lock screen).
    privacy: Literal["standard", "strict"] = "standard"


class Channels(Strict):
    email: EmailChannel | None = None
    slack: SlackChannel | None = None
    webhook: WebhookChannel | None = None
    sms: SmsChannel | None = None


class ChannelContact(Strict):
    max_per_case: int | None = Field(None, ge=1, le=50)


class ContactConfig(Strict):
    """How often one customer hears from dunctl, across all its cases and notices (customer messages only)."""

    max_per_week: int = Field(3, ge=1, le=50)        # in any rolling 7 days
    min_gap: timedelta = Field(default_factory=lambda: timedelta(hours=36))
    channels: dict[Literal["email", "sms"], ChannelContact] = Field(default_factory=dict)

    _gap = _bounded("min_gap", timedelta(0), timedelta(days=7))


class EscalationConfig(Strict):
    channel: Literal["slack", "webhook", "email"] = "slack"
    to: str | None = None             # an address, when the escalation channel is email


class DunningConfig(Strict):
    grace: timedelta = Field(default_factory=lambda: timedelta(days=1))
    max_action_tries: int = Field(5, ge=1, le=50)
    action_retry_after: timedelta = Field(default_factory=lambda: timedelta(minutes=30))
    attribution_window: timedelta = Field(default_factory=lambda: timedelta(days=3))
    # Suspension, cancellation and write-off run only when the customer was sent a message at least this long
    # before: a backlog adopted on the first sync never suspends someone who was never told.
    notice_before_suspension: timedelta = Field(default_factory=lambda: timedelta(days=3))
    # A tick stops starting new work after this long; what it did not reach waits for the next tick (not missed).
    tick_budget: timedelta = Field(default_factory=lambda: timedelta(minutes=4))
    # After this many failures in a row, a channel is skipped for the rest of the tick (its server is down).
    channel_failures_before_skip: int = Field(3, ge=1, le=100)
    # One customer's emails due in the same tick, in one currency, go out as one message.
    group_messages: bool = True
    # A dispute on any of a customer's charges holds all its cases; when the dispute is lost: a person decides
    # (person), back to the sequence (resume), or the held invoices are written off in the ledger (write_off).
    dispute_lost: Literal["person", "resume", "write_off"] = "person"

    @field_validator("tick_budget", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> timedelta:
        text = str(value).strip()
        seconds = text.endswith("s") and text[:-1].isdigit() and len(text) <= 6
        budget = timedelta(seconds=int(text[:-1])) if seconds else _duration(value, timedelta(0), timedelta(hours=1))
        if not timedelta(seconds=1) <= budget <= timedelta(hours=1):
            raise ValueError(f"'{value}' is not a tick budget; use 1s to 1h, such as 4m (cron runs every few minutes)")
        return budget

    _grace = _bounded("grace", timedelta(0), timedelta(days=90))
    _retry_after = _bounded("action_retry_after", timedelta(minutes=1), timedelta(days=7))
    _window = _bounded("attribution_window", timedelta(0), timedelta(days=90))
    _notice = _bounded("notice_before_suspension", timedelta(0), timedelta(days=90))


class Segment(Strict):
    name: str
    when: dict[str, Any] | None = None
    sequence: str


class LogConfig(Strict):
    path: str | None = None           # one JSON line per tick and per action (--log-file overrides)


class DirConfig(Strict):
    dir: str


class FxConfig(Strict):
    """Exchange rates for ranking only (`status`: most revenue at risk across currencies): `rates` says what one
    major unit of each currency is worth in `base` (eur: 1.08 with base usd). Never used to add money up."""

    base: str = Field(..., pattern=r"^[a-z]{3}$")
    rates: dict[str, float] = Field(default_factory=dict)

    @field_validator("rates")
    @classmethod
    def _positive(cls, rates: dict[str, float]) -> dict[str, float]:
        bad = [code for code, rate in rates.items() if rate <= 0 or not re.fullmatch(r"[a-z]{3}", code)]
        if bad:
            raise ValueError(f"rates for {', '.join(bad)}: each key is a lowercase currency code and each rate > 0")
        return rates


class ReportConfig(Strict):
    fx: FxConfig | None = None    # absent: `status` ranks revenue at risk within each currency


class ConfigFile(Strict):
    # monitor: plan and record every step as `would`, send nothing, write nothing to Stripe. `init` writes
    # monitor; a config without the key is one written before monitor mode existed, and stays live.
    mode: Literal["monitor", "live"] = "live"
    ledger: LedgerConfig = LedgerConfig()
    stripe: StripeConfig = StripeConfig()
    sender: SenderConfig = SenderConfig()
    channels: Channels = Channels()
    escalation: EscalationConfig = EscalationConfig()
    dunning: DunningConfig = DunningConfig()
    # Absent: no contact policy (configs written before it existed keep their behaviour); `init` writes one.
    contact: ContactConfig | None = None
    log: LogConfig = LogConfig()
    sequences: DirConfig = DirConfig(dir="sequences")
    templates: DirConfig = DirConfig(dir="templates")
    segments: list[Segment]
    experiments: list[Experiment] = Field(default_factory=list)   # dunctl/experiments.py
    notices: NoticesConfig = NoticesConfig()   # pre-dunning (dunctl/notices); off when the key is absent
    collections: Collections = Collections()   # the hand_off step (dunctl/receivables/handoff.py)
    report: ReportConfig = ReportConfig()


class Step(Strict):
    id: str
    at: Offset
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    template: str | None = None
    to: str | list[str] | None = None      # rule names (RECIPIENTS) and/or literal addresses
    cc: str | list[str] | None = None
    channel: Literal["slack", "webhook", "email"] | None = None
    when: dict[str, Any] | None = None
    link: Literal["hosted_invoice", "billing_portal"] | None = None   # billing_portal: refused (it expires)
    behavior: Literal["void", "keep_as_draft", "mark_uncollectible"] | None = None
    comment: str | None = None
    note: str | None = None
    # A customer message that tells the customer about a later irreversible step (dunctl/irreversible.py): that
    # step runs only once this message was delivered, at least dunning.notice_before_suspension earlier.
    announces: str | None = None

    _link = field_validator("link")(classmethod(lambda cls, v: _no_session_link(v)))

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        # The id is part of the step's key, and so of the idempotency key of its Stripe request, which Stripe takes
        # only up to 255 characters (https://docs.stripe.com/api/idempotent_requests): a longer one fails every time.
        if not 1 <= len(value) <= MAX_STEP_ID:
            raise ValueError(f"a step id has 1 to {MAX_STEP_ID} characters ({len(value)} here); shorten it")
        return value

    @field_validator("at", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Offset:
        offset = value if isinstance(value, Offset) else parse_offset(value)
        if abs(offset.minutes) > MAX_OFFSET.total_seconds() // 60 or offset.business_days > MAX_OFFSET_BUSINESS_DAYS:
            raise ValueError(f"'{offset.text}' is too far from the first failure; allowed: up to 365d (52w, "
                             f"{MAX_OFFSET_BUSINESS_DAYS}bd)")
        return offset

    @field_validator("to", "cc")
    @classmethod
    def _recipients(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in [value] if isinstance(value, str) else value or []:
            if item in RECIPIENTS:
                continue
            if "@" not in item:
                raise ValueError(f"'{item}' is not a recipient; use {', '.join(RECIPIENTS)} or an email address")
            problem = address_problem(item)
            if problem:
                raise ValueError(f"'{item}' is not a valid email address: {problem}")
        if isinstance(value, list) and not value:
            raise ValueError("an empty list names nobody; leave the key out for the default (billing_contact)")
        return value

    @functools.cached_property
    def audience(self) -> str | None:
        """Who a message step talks to: the `customer` (or its billing contacts) or someone `internal` (account
        manager, escalation channel, a fixed address). None for steps that are not messages (retries, suspension,
        close). Quiet hours, dunning=off, superseding and contact caps apply to customer messages only."""
        if self.action in ("slack", "webhook", "escalate"):
            return INTERNAL
        if self.action not in CUSTOMER_FACING:
            return None
        targets = self.to if isinstance(self.to, list) else [self.to or "billing_contact"]
        return CUSTOMER if any(t in ("billing_contact", "customer") for t in targets) else INTERNAL

    @property
    def customer_facing(self) -> bool:
        return self.audience == CUSTOMER

    @property
    def recipient(self) -> str | list[str]:
        return self.to or "billing_contact"

    @property
    def recipient_rules(self) -> list[str]:
        return [self.to] if isinstance(self.to, str) else list(self.to or [])


class OnRecovery(Strict):
    """What the customer hears when the invoice is paid: `email: <template>` ("payment received, thank you")."""

    email: str


class Sequence(Strict):
    name: str
    description: str | None = None
    max_attempts: int = Field(5, ge=1, le=NETWORK_ATTEMPT_LIMIT)
    steps: list[Step]
    # Absent (or null): no thank-you when the invoice is paid; sequences written before it existed stay as they
    # were. The shipped sequences turn it on.
    on_recovery: OnRecovery | None = None

    def used_templates(self) -> dict[str, str]:
        """{template: action} for every message this sequence can send, steps and the thank-you alike."""
        used = {step.template: step.action for step in self.steps if step.template}
        if self.on_recovery is not None:
            used.setdefault(self.on_recovery.email, "email")
        return used


@dataclass
class Config:
    """Everything `tick` needs, validated. Paths are absolute."""

    file: ConfigFile
    path: Path
    sequences: dict[str, Sequence]
    sequence_files: dict[str, Path]
    templates_dir: Path
    notes: list[str] = field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def ledger_path(self) -> Path:
        return (self.base_dir / self.file.ledger.path).resolve()

    def sequence_hash(self, name: str) -> str:
        return sequence_hash(self.sequences[name])

    @staticmethod
    def sequence_without_steps(name: str, description: str) -> Sequence:
        """A sequence that plans nothing, ever (an experiment's holdout). Offered here because dunctl.experiments
        holds a Config but may not import this package, which imports it for the `experiments:` schema."""
        return Sequence(name=name, description=description, max_attempts=1, steps=[])


def sequence_definition(sequence: Sequence) -> dict:
    data = sequence.model_dump(mode="json", exclude_none=True)
    for step in data["steps"]:
        step["at"] = step["at"]["text"] if isinstance(step["at"], dict) else step["at"]
    return data


def sequence_hash(sequence: Sequence) -> str:
    text = json.dumps(sequence_definition(sequence), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
