# Over 500 lines: the whole dunctl.yaml schema and its cross-checks in one place; splitting it into config/ (schema, safe loading, cross-checks) is issue #22.
"""Configuration: `dunctl.yaml`, the sequences it points at, and their templates, validated strictly on load.

Every problem carries the file, the key path inside it (`steps[3].at`), the line, and what is allowed. Loading
never touches the ledger, so a bad config changes nothing.
"""

from __future__ import annotations

import errno
import functools

import hashlib
import json
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dunctl.conditions import check_condition
from dunctl.errors import ConfigError, ConfigProblem
from dunctl.experiments import Experiment, check_experiments
from dunctl.failures import NEVER_RETRY
from dunctl.notices.config import SESSION_EXPIRES, STARTER_UPDATE_URL, NoticesConfig, template_problems
from dunctl.receivables.settings import CollectionsConfig
from dunctl.offsets import Offset, parse_offset

# Visa allows at most 15 attempts of one payment in 30 days; no sequence may plan more.
NETWORK_ATTEMPT_LIMIT = 15

ACTIONS = ("email", "sms", "slack", "webhook", "retry", "escalate", "pause_subscription", "cancel_subscription",
           "mark_uncollectible", "close", "hand_off")
CUSTOMER_FACING = frozenset({"email", "sms"})
# Steps that take the service away; they never run unless the customer was told first.
SUSPENDING = frozenset({"pause_subscription", "cancel_subscription", "mark_uncollectible"})
# Steps that cannot be undone: dunctl/irreversible.py decides when they may run (a hand-off to collections joins
# this set when sequences get one).
IRREVERSIBLE = SUSPENDING
CUSTOMER, INTERNAL = "customer", "internal"
RECIPIENTS = ("billing_contact", "customer", "account_manager")


class Strict(BaseModel):
    # defer_build: a model's validator is built when it first validates, not when the module is imported; a
    # nested model is validated through its parent's, so a process builds one validator per file it loads
    # instead of one per model (about a third of an idle tick's CPU went to building all of them).
    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)


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
            raise ValueError(f"'{value}' is too long; allowed: {_span(low)} to {_span(high)}")
        duration = timedelta(minutes=offset.minutes)
    if not low <= duration <= high:
        raise ValueError(f"'{value}' is out of range; allowed: {_span(low)} to {_span(high)}")
    return duration


def _bounded(name: str, low: timedelta, high: timedelta):
    """A validator reading `name` as a duration between `low` and `high` ('36h', '3d')."""
    return field_validator(name, mode="before")(classmethod(lambda cls, value: _duration(value, low, high)))


def _span(duration: timedelta) -> str:
    minutes = int(duration.total_seconds() // 60)
    for unit, size in (("d", 1440), ("h", 60)):
        if minutes and minutes % size == 0:
            return f"{minutes // size}{unit}"
    return f"{minutes}m"


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
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception:
            raise ValueError(f"unknown time zone '{value}'; use an IANA name such as America/New_York")
        return value

    @field_validator("locale")
    @classmethod
    def _known_locale(cls, value: str) -> str:
        from babel import Locale, UnknownLocaleError

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
    collections: CollectionsConfig = CollectionsConfig()   # the hand_off step (dunctl/receivables/handoff.py)
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
        from dunctl.recipients import address_problem

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


def sequence_definition(sequence: Sequence) -> dict:
    data = sequence.model_dump(mode="json", exclude_none=True)
    for step in data["steps"]:
        step["at"] = step["at"]["text"] if isinstance(step["at"], dict) else step["at"]
    return data


def sequence_hash(sequence: Sequence) -> str:
    text = json.dumps(sequence_definition(sequence), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- loading ------------------------------------------------------------------------------------------------


def format_path(path: tuple) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# Bounds on what a config file may be: far above any real config, far below what hurts. A YAML alias bomb
# ("billion laughs") stays a few hundred bytes on disk and expands to billions of values; nesting thousands deep
# blows the stack of anything that walks it.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_VALUES = 100_000    # every scalar, list and mapping, counted again each time an alias repeats it
MAX_YAML_DEPTH = 64

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed: 10-20x faster


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """The file's data and the line of every key path in it, or ConfigError naming the file (and line).

    Refuses what `yaml.safe_load` would accept or choke on: bytes that are not UTF-8, a key given twice in one
    mapping, more than one document, nesting deeper than MAX_YAML_DEPTH, and more than MAX_YAML_VALUES values
    once aliases are expanded (the expansion is counted, never performed).
    """
    file = str(path)
    try:
        raw = _read_capped(path)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(file, "", "file not found")],
                          "run `dunctl init` to write a starter config, or pass --config PATH")
    except OSError as exc:
        raise ConfigError([ConfigProblem(file, "", f"cannot read: {exc.strerror or exc}")])
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError([ConfigProblem(file, "", f"the file is more than {MAX_YAML_BYTES:,} bytes, the most a "
                                                   "config or sequence file may be")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError([ConfigProblem(file, "", f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at column "
                                                   f"{column}; save the file as UTF-8", line)])
    try:
        node, lines = _compose(text.removeprefix("\ufeff"), file)
        data = yaml.constructor.SafeConstructor().construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(file, "", f"not valid YAML: {problem}", mark.line + 1 if mark else None)])
    except (ValueError, OverflowError) as exc:  # a scalar the constructor cannot build (a date like 2026-02-31)
        raise ConfigError([ConfigProblem(file, "", f"not valid YAML: {exc}")])
    return data, lines


def _read_capped(path: Path) -> bytes:
    """At most MAX_YAML_BYTES + 1 bytes of a regular file. Anything else is refused before it is read: a FIFO
    would block the command until some writer came (cron would pile up ticks), and /dev/zero or /dev/urandom would
    be read until memory ran out. O_NONBLOCK makes opening a FIFO return at once, so its type can be checked."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else \
                "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) \
                else "not a regular file"
            raise ConfigError([ConfigProblem(str(path), "", f"is {kind}, not a regular file; a config or sequence "
                                                            "must be a plain file (write it out, then point at it)")])
        chunks, size = [], 0
        while size <= MAX_YAML_BYTES:
            chunk = os.read(fd, MAX_YAML_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


class _Refused(Exception):
    def __init__(self, path: tuple, message: str, line: int):
        self.path, self.message, self.line = path, message, line


def _compose(text: str, file: str) -> tuple[yaml.Node | None, dict[tuple, int]]:
    """Build the document's node graph from the parser's events, without recursion, checking the bounds as it
    goes. Returns the root node (None for an empty document) and key path -> 1-based line."""
    try:
        return _compose_events(yaml.parse(text, Loader=_Loader))
    except _Refused as refused:
        raise ConfigError([ConfigProblem(file, format_path(refused.path), refused.message, refused.line)])


def _compose_events(events) -> tuple[yaml.Node | None, dict[tuple, int]]:
    resolver = yaml.resolver.Resolver()
    lines: dict[tuple, int] = {}
    anchors: dict[str, tuple[yaml.Node, int]] = {}   # anchor -> (node, its size once expanded)
    # One frame per open collection: [node, path, size so far, anchor, pending key node, keys seen -> line]
    stack: list[list] = []
    root: yaml.Node | None = None
    documents = 0
    total = 0

    def child_path() -> tuple:
        if not stack:
            return ()
        frame = stack[-1]
        if isinstance(frame[0], yaml.SequenceNode):
            return frame[1] + (len(frame[0].value),)
        key = frame[4]
        if key is None:  # the next node is a key: it belongs to the mapping's own path
            return frame[1]
        return frame[1] + ((key.value if isinstance(key, yaml.ScalarNode) else "?"),)

    def add(node: yaml.Node, size: int, path: tuple) -> None:
        nonlocal root, total
        total += size
        if total > MAX_YAML_VALUES:
            raise _Refused(path, f"more than {MAX_YAML_VALUES:,} values once aliases are expanded; a config "
                                 "this large is a mistake or an attack (an alias bomb)", node.start_mark.line + 1)
        if not stack:
            root = node
            return
        frame = stack[-1]
        frame[2] += size
        parent = frame[0]
        if isinstance(parent, yaml.SequenceNode):
            parent.value.append(node)
        elif frame[4] is None:  # a key
            if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:merge":
                seen = (node.tag, node.value)
                if seen in frame[5]:
                    raise _Refused(frame[1] + (node.value,), f"duplicate key '{node.value}' (first given at line "
                                                             f"{frame[5][seen]}); each key may appear once",
                                   node.start_mark.line + 1)
                frame[5][seen] = node.start_mark.line + 1
                lines[frame[1] + (node.value,)] = node.start_mark.line + 1
            frame[4] = node
        else:
            parent.value.append((frame[4], node))
            frame[4] = None

    for event in events:
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _Refused((), "more than one YAML document (a second '---'); a config file holds one", line)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise _Refused(child_path(), f"alias *{event.anchor} refers to an anchor that is not defined "
                                             "before it (or that contains the alias itself)", line)
            node, size = anchors[event.anchor]
            add(node, size, child_path())
        elif isinstance(event, yaml.ScalarEvent):
            path = child_path()
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolver.resolve(yaml.ScalarNode, event.value, event.implicit)
            node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
            if not (stack and isinstance(stack[-1][0], yaml.MappingNode) and stack[-1][4] is None):
                lines.setdefault(path, line)  # a value (a key's line is recorded by add())
            if event.anchor is not None:
                anchors[event.anchor] = (node, 1)
            add(node, 1, path)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            path = child_path()
            if len(stack) >= MAX_YAML_DEPTH:
                raise _Refused(path, f"exceeded maximum nesting depth ({MAX_YAML_DEPTH} levels)", line)
            kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolver.resolve(kind, None, event.implicit)
            node = kind(tag, [], event.start_mark, event.end_mark, flow_style=event.flow_style)
            lines.setdefault(path, line)
            stack.append([node, path, 1, event.anchor, None, {}])
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            node, path, size, anchor, _, _ = stack.pop()
            node.end_mark = event.end_mark
            if anchor is not None:  # registered only now: an alias inside its own anchor is refused above
                anchors[anchor] = (node, size)
            total -= size - 1      # its children were counted as they arrived; add() counts the whole again
            add(node, size, path)
    return root, lines


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The keys allowed at `loc` (the parent of an unknown key), by walking the model's annotations."""
    annotation: Any = model
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else Any
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            info = next((f for name, f in annotation.model_fields.items() if (f.alias or name) == part), None)
            if info is None:
                return None
            annotation = info.annotation
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or name for name, f in annotation.model_fields.items()]
    return None


def _unwrap(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _validation_problems(exc: ValidationError, model: type[BaseModel], file: Path, lines: dict,
                         prefix: tuple = ()) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = f"unknown key '{loc[-1]}'"
            if allowed:
                message += f"; allowed keys are {', '.join(allowed)}"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif error["type"] == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"'{error.get('input')}' is not allowed; allowed: {expected}"
        else:
            message = error["msg"].removeprefix("Value error, ")
        full = prefix + loc
        line = lines.get(full) or lines.get(full[:-1])
        problems.append(ConfigProblem(str(file), format_path(full), message, line))
    return problems


def load_config(path: str | Path) -> Config:
    """Load and validate the config, its sequences and its templates. Raises ConfigError listing every problem."""
    path = Path(path).resolve()
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "", "the config must be a mapping (key: value)")])
    try:
        config_file = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc, ConfigFile, path, lines))

    problems: list[ConfigProblem] = []
    base = path.parent
    sequences_dir = (base / config_file.sequences.dir).resolve()
    templates_dir = (base / config_file.templates.dir).resolve()
    sequences: dict[str, Sequence] = {}
    sequence_files: dict[str, Path] = {}
    broken: set[str] = set()
    if not sequences_dir.is_dir():
        problems.append(ConfigProblem(str(path), "sequences.dir", f"no such directory: {sequences_dir}",
                                      lines.get(("sequences", "dir"))))
    else:
        for seq_path in sorted(sequences_dir.glob("*.yaml")) + sorted(sequences_dir.glob("*.yml")):
            sequence, seq_problems = _load_sequence(seq_path)
            problems += seq_problems
            if isinstance(sequence, str):
                broken.add(sequence)
            elif sequence is not None:
                if sequence.name in sequences:
                    problems.append(ConfigProblem(str(seq_path), "name",
                                                  f"sequence '{sequence.name}' is also defined in "
                                                  f"{sequence_files[sequence.name]}"))
                sequences[sequence.name] = sequence
                sequence_files[sequence.name] = seq_path
    if not templates_dir.is_dir():
        problems.append(ConfigProblem(str(path), "templates.dir", f"no such directory: {templates_dir}",
                                      lines.get(("templates", "dir"))))

    config = Config(config_file, path, sequences, sequence_files, templates_dir)
    problems += _cross_check(config, lines, broken)
    problems += check_experiments(config, lines, broken)
    problems += template_problems(config_file.notices, templates_dir, path, lines)
    if problems:
        raise ConfigError(problems)
    return config


def _load_sequence(path: Path) -> tuple[Sequence | str | None, list[ConfigProblem]]:
    """The sequence, or (when it is invalid) its name, so that segments naming it report no second error."""
    try:
        data, lines = _read_yaml(path)
    except ConfigError as exc:
        return None, exc.problems
    if not isinstance(data, dict):
        return None, [ConfigProblem(str(path), "", "a sequence must be a mapping with name and steps")]
    try:
        sequence = Sequence.model_validate(data)
    except ValidationError as exc:
        return str(data.get("name") or path.stem), _validation_problems(exc, Sequence, path, lines)
    problems = []

    def problem(loc: tuple, message: str) -> None:
        problems.append(ConfigProblem(str(path), format_path(loc), message, lines.get(loc)))

    seen: set[str] = set()
    previous: Offset | None = None
    for i, step in enumerate(sequence.steps):
        if step.id in seen:
            problem(("steps", i, "id"), f"step id '{step.id}' is used twice; step ids must be unique")
        seen.add(step.id)
        if previous is not None and step.at.sort_key < previous.sort_key:
            problem(("steps", i, "at"), f"'{step.at.text}' comes before the previous step's "
                                        f"'{previous.text}'; list steps in time order")
        previous = step.at
        for rel, message in check_condition(step.when):
            problem(("steps", i, "when") + rel, message)
        if step.action in ("email", "sms") and not step.template:
            problem(("steps", i, "template"), f"a {step.action} step needs a template")
        if step.action == "escalate" and any(rule in ("billing_contact", "customer") for rule in step.recipient_rules):
            problem(("steps", i, "to"), "an escalation goes to the escalation channel, to account_manager or to "
                                        "an address, never to the customer")
        if step.to and step.action not in ("email", "sms", "escalate"):
            problem(("steps", i, "to"), f"'to' applies to email, sms and escalate steps, not {step.action}")
        if step.cc and step.action != "email":
            problem(("steps", i, "cc"), f"'cc' applies to email steps, not {step.action}")
        if step.announces is not None:
            message = _announcement_problem(sequence, i)
            if message:
                problem(("steps", i, "announces"), message)
    retries = sum(step.action == "retry" for step in sequence.steps)
    # The first failed attempt counts against the cap, so a sequence may plan max_attempts - 1 retries.
    if retries > sequence.max_attempts - 1:
        first = [i for i, s in enumerate(sequence.steps) if s.action == "retry"][sequence.max_attempts - 1]
        problem(("steps", first), f"{retries} retry steps exceed the cap: max_attempts is "
                                  f"{sequence.max_attempts}, counting the failed attempt, so at most "
                                  f"{sequence.max_attempts - 1} retries are allowed")
    return sequence, problems


def _announcement_problem(sequence: Sequence, index: int) -> str:
    """What is wrong with step `index`'s `announces:` key, or ''."""
    step = sequence.steps[index]
    ids = [s.id for s in sequence.steps]
    if step.audience != CUSTOMER:
        return (f"only a customer message (an email or sms step to the customer) can announce a step; "
                f"'{step.id}' is {step.action}" + (" to someone internal" if step.action in CUSTOMER_FACING else ""))
    if step.announces not in ids:
        return f"unknown step '{step.announces}'; steps of this sequence: {', '.join(ids)}"
    target = ids.index(step.announces)
    if target <= index:
        return f"'{step.announces}' is not a later step; a message announces a step that comes after it"
    action = sequence.steps[target].action
    if action not in IRREVERSIBLE:
        return (f"'{step.announces}' ({action}) is not an irreversible step; only those are announced: "
                f"{', '.join(sorted(IRREVERSIBLE))}")
    return ""


def _cross_check(config: Config, lines: dict, broken: set[str]) -> list[ConfigProblem]:
    problems = []
    path = str(config.path)
    segments = config.file.segments
    if not segments or segments[-1].when:
        problems.append(ConfigProblem(path, "segments", "the last segment must be a default: a segment with no "
                                      "'when', which catches every case the rules above do not",
                                      lines.get(("segments",))))
    names: set[str] = set()
    for i, segment in enumerate(segments):
        loc = ("segments", i)
        if segment.name in names:
            problems.append(ConfigProblem(path, format_path(loc + ("name",)),
                                          f"segment name '{segment.name}' is used twice", lines.get(loc)))
        names.add(segment.name)
        if not segment.when and i != len(segments) - 1:
            problems.append(ConfigProblem(path, format_path(loc), "a segment with no 'when' matches everything; "
                                          "only the last segment may be the default", lines.get(loc)))
        for rel, message in check_condition(segment.when):
            problems.append(ConfigProblem(path, format_path(loc + ("when",) + rel), message,
                                          lines.get(loc + ("when",) + rel) or lines.get(loc)))
        if segment.sequence in broken:
            continue
        if config.sequences and segment.sequence not in config.sequences:
            problems.append(ConfigProblem(path, format_path(loc + ("sequence",)),
                                          f"unknown sequence '{segment.sequence}'; known sequences: "
                                          f"{', '.join(sorted(config.sequences))}",
                                          lines.get(loc + ("sequence",))))
            continue
        sequence = config.sequences.get(segment.sequence)
        hard = _failure_types(segment.when) & NEVER_RETRY
        for j, step in enumerate(sequence.steps if sequence and hard else []):
            step_types = _failure_types(step.when) or None
            if step.action == "retry" and (step_types is None or step_types & hard):
                problems.append(ConfigProblem(
                    str(config.sequence_files[sequence.name]), format_path(("steps", j)),
                    f"retry step in sequence '{sequence.name}', which segment '{segment.name}' uses for "
                    f"{', '.join(sorted(hard))}: a hard decline must never be retried (give the step a when: "
                    f"failure_type that excludes them, or use another sequence)"))

    channels = config.file.channels
    used_templates: dict[str, list[tuple[str, int]]] = {}
    for name, sequence in config.sequences.items():
        file = str(config.sequence_files[name])
        for j, step in enumerate(sequence.steps):
            loc = ("steps", j)
            needed = {"email": "email", "sms": "sms", "slack": "slack", "webhook": "webhook"}.get(step.action)
            if step.action == "escalate":
                needed = step.channel or config.file.escalation.channel
            if needed and getattr(channels, needed) is None:
                # Not an error: shipped sequences go multi-channel where the channel exists, and skip the step
                # (recorded on the case) where it does not.
                config.notes.append(f"{file}: step '{step.id}' uses the {needed} channel, which is not configured "
                                    f"(channels.{needed}); the step will be skipped")
            if step.template:
                used_templates.setdefault(step.template, []).append((name, j))
                kinds = ("sms",) if step.action == "sms" else ("subject", "txt")
                problems += _missing_template(config, file, loc + ("template",), step.template, kinds)
        if sequence.on_recovery is not None:
            problems += _missing_template(config, file, ("on_recovery", "email"), sequence.on_recovery.email,
                                          ("subject", "txt"))
    config.notes.extend(_threshold_notes(segments))
    if config.file.stripe.retries == "stripe" and any(
            step.action == "retry" for seq in config.sequences.values() for step in seq.steps):
        config.notes.append("stripe.retries is 'stripe': retry steps are left to Stripe's Smart Retries and "
                            "recorded on the case; set stripe.retries: dunctl for dunctl to retry itself")
    if config.file.notices.enabled and config.file.notices.update_url == STARTER_UPDATE_URL:
        config.notes.append("notices.update_url is still the starter's placeholder: set it to your customer portal "
                            "login link before notices reach customers")
    return problems


def _threshold_notes(segments: list[Segment]) -> list[str]:
    """A warning for each amount test whose per-currency values are far apart once roughly converted: meant as
    the same amount, one of them is off (a zero-decimal currency written in cents)."""
    from dunctl.fx import threshold_spread

    notes = []
    for i, segment in enumerate(segments):
        for field_name in ("amount_due", "amount_remaining"):
            test = (segment.when or {}).get(field_name)
            for op, values in (test.items() if isinstance(test, dict) else []):
                why = threshold_spread(values) if isinstance(values, dict) else None
                if why:
                    notes.append(f"segments[{i}] ({segment.name}) {field_name}.{op}: the thresholds differ by more "
                                 f"than 10x: {why}; make them the same amount in each currency")
    return notes


def _missing_template(config: Config, file: str, loc: tuple, template: str, kinds: tuple) -> list[ConfigProblem]:
    return [ConfigProblem(file, format_path(loc), f"unknown template '{template}': {config.templates_dir}/"
                                                  f"{template}.{kind}.j2 does not exist; known templates: "
                                                  f"{', '.join(known_templates(config.templates_dir))}")
            for kind in kinds
            if config.templates_dir.is_dir() and not (config.templates_dir / f"{template}.{kind}.j2").exists()]


def known_templates(templates_dir: Path) -> list[str]:
    if not templates_dir.is_dir():
        return []
    return sorted({p.name.split(".")[0] for p in templates_dir.glob("*.j2") if not p.name.startswith("_")})


def _failure_types(when: dict | None) -> set[str]:
    """The failure types a `when:` names. A malformed test (a mapping, a nested list) names none: check_condition
    has already reported it with its key path, and this must not crash on it (a dict is not hashable)."""
    types = (when or {}).get("failure_type") if isinstance(when, dict) else None
    return {t for t in (types if isinstance(types, list) else [types]) if isinstance(t, str)}
