"""Which notices one subscription calls for now: a pure function of (subscription facts, config, preview, now).

No I/O and no clock. The tick stores what this returns (each notice once, under its (kind, object, period, offset)
key) and sends what is due through the executor; quiet hours are applied at send time, like dunning steps.

Catch-up, as for customer messages in dunning: of a kind's offsets already due (a card first seen 2 days before
it expires), only the latest runs; the earlier ones are recorded as skipped, so a customer never gets a burst.
A usage jump past several thresholds at once sends only the highest one crossed.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from dunctl.clock import from_iso, iso
from dunctl.conditions import matches
from dunctl.notices import CARD_EXPIRING, LARGE_CHARGE, UPCOMING_RENEWAL, USAGE_ALERT
from dunctl.notices.config import NoticesConfig
from dunctl.offsets import offset_text

BILLING = ("active", "trialing")   # subscriptions that will take a next payment
PENDING, SKIPPED = "pending", "skipped"


@dataclass(frozen=True)
class NoticePlan:
    kind: str
    object_id: str
    period: str
    offset: str
    due_at: datetime
    data: dict
    status: str = PENDING          # pending | skipped (never sent: superseded by a later one)
    detail: str | None = None

    @property
    def key(self) -> str:
        return notice_key(self.kind, self.object_id, self.period, self.offset)


@dataclass
class NoticeDecision:
    plans: list[NoticePlan] = field(default_factory=list)
    why_none: str = ""             # why the subscription calls for no notice, for the cancelled ones' record


def notice_key(kind: str, object_id: str, period: str, offset: str) -> str:
    """The notice's key: stable across ticks and machines, and the idempotency key of the email."""
    return f"dunctl-notice-{kind}-{object_id}-{period}-{offset}"


@functools.lru_cache(maxsize=1024)
def card_expires_at(exp_month: int, exp_year: int) -> datetime:
    """A card works through the last day of its expiry month."""
    if exp_month == 12:
        return datetime(exp_year + 1, 1, 1, tzinfo=timezone.utc)
    return datetime(exp_year, exp_month + 1, 1, tzinfo=timezone.utc)


def dunning_off(customer: dict | None) -> bool:
    return _off((customer or {}).get("metadata") or "{}")


@functools.lru_cache(maxsize=4096)
def _off(metadata: str) -> bool:
    """dunning=off in this stored metadata, worked out once per distinct text (asked twice a planning)."""
    return str(_metadata(metadata).get("dunning", "")).strip().lower() == "off"


@functools.lru_cache(maxsize=4096)
def _metadata(text: str) -> dict:
    """Stored metadata, parsed once per distinct text: planning a subscription read its customer's three times
    (a tenth of planning's CPU in the demo). Shared: read it, never change it."""
    return json.loads(text)


def plan_notices(subject: dict, config: NoticesConfig, now: datetime, preview: dict | None = None) -> NoticeDecision:
    """The notices a subscription calls for. `subject` is `ledger.notices.subject()`; `preview` the latest upcoming-
    invoice preview of a metered subscription (None: none fetched yet, or not metered)."""
    sub, customer = subject["subscription"], subject["customer"]
    decision = NoticeDecision()
    if not config.enabled:
        decision.why_none = "notices are off"
        return decision
    if dunning_off(customer):
        decision.why_none = "the customer has dunning=off"
        return decision
    if sub["status"] not in BILLING:
        decision.why_none = f"the subscription is {sub['status']}"
        return decision
    if sub.get("cancel_at_period_end"):
        decision.why_none = "the subscription ends at the end of its period: no next payment"
        return decision
    period_end = from_iso(sub.get("current_period_end"))
    if period_end is None or period_end <= now:
        decision.why_none = "the next payment date is not known yet"
        return decision
    if config.card_expiring.enabled:
        decision.plans += _card_expiring(subject, config, period_end, now)
    if config.upcoming_renewal.enabled:
        decision.plans += _renewal(subject, config, period_end, now)
    if config.usage.enabled and sub.get("usage_based"):
        if preview is not None:
            decision.plans += _usage(subject, config, preview, now)
    if not decision.plans:
        decision.why_none = "nothing calls for a notice any more (card replaced or renewal moved)"
    return decision


def usage_preview_due(subject: dict, config: NoticesConfig, now: datetime, preview: dict | None) -> bool:
    """Does the subscription call for a fresh upcoming-invoice preview now (metered, billing, and its usage may
    have reached an alert since the last preview: see next_usage_check)? Asked before planning, so a tick plans
    each subscription once, with the preview it needs."""
    sub = subject["subscription"]
    if not (config.enabled and config.usage.enabled and sub.get("usage_based")):
        return False
    if dunning_off(subject["customer"]) or sub["status"] not in BILLING or sub.get("cancel_at_period_end"):
        return False
    period_end = from_iso(sub.get("current_period_end"))
    if period_end is None or period_end <= now:
        return False
    checked = from_iso(sub.get("usage_checked_at"))
    if preview is None or checked is None or (from_iso(preview.get("period_end")) or period_end) < period_end:
        return True                                 # never looked, or looked in a period that has ended
    due = next_usage_check(subject, config, preview)
    return due is not None and now >= due


def next_usage_check(subject: dict, config: NoticesConfig, preview: dict) -> datetime | None:
    """When the usage seen in `preview` (fetched at the subscription's usage_checked_at) could first reach the
    next alert of its period, were it to run `usage.surge` times as fast as its pace so far; never sooner than
    `usage.check_every` after that preview; the period's end when no alert is left to reach in it. None: no alert
    can be reached (no expected amount). Usage far from an alert is looked at rarely, usage close to one every
    `check_every`: each look halves the time left (with surge 2), so a steady pace is caught within
    `check_every` of crossing, at a few previews per alert instead of one per `check_every`."""
    checked, paid = subject["subscription"].get("usage_checked_at"), subject.get("paid_amounts")
    known = _LOOKS.get(id(preview))
    if known is not None and known[0] is preview and known[1] is config and known[2] == checked and known[3] == paid:
        return known[4]
    value = _next_usage_check(subject, config, preview)
    if len(_LOOKS) >= 4096:
        _LOOKS.clear()
    _LOOKS[id(preview)] = (preview, config, checked, paid, value)
    return value


# The last next_usage_check of each preview, by the id of its dict (kept, to tell it from a later one that reuses the
# id), with what else it was worked out from: a planning works out the next look with the preview it fetched, and
# the subscription's next planning asks again, with the same dict (NoticeStore.preview hands back the one stored),
# before it fetches another (2,094 of the demo's 4,336 asks). A preview is never changed once fetched.
_LOOKS: dict[int, tuple] = {}


def _next_usage_check(subject: dict, config: NoticesConfig, preview: dict) -> datetime | None:
    rule = config.usage
    checked = from_iso(subject["subscription"].get("usage_checked_at"))
    start, end = from_iso(preview.get("period_start")), from_iso(preview.get("period_end"))
    expected, _ = expected_amount(subject, config, preview["currency"])
    if checked is None or not expected:
        return None
    if start is None or end is None or end <= start or checked >= end:
        return checked + rule.check_every
    metered = sum(line.get("amount") or 0 for line in preview.get("lines") or [] if line.get("metered"))
    return _next_check(checked, start, end, expected, metered, preview["amount_due"], _rule(rule))


def _rule(rule) -> tuple:
    """The usage rule as (check_every, the alerts' percentages, pace, min_elapsed, surge): read from the rule once,
    not at every look."""
    def build() -> tuple:
        large = [rule.large_charge.factor * 100] if rule.large_charge.enabled else []
        return rule.check_every, (*rule.thresholds, *large), rule.pace, rule.min_elapsed, rule.surge

    return _kept(("usage rule", id(rule)), rule, build)


# (what, id of the config part it comes from, ...) -> (that part, the value worked out from it): planning asks the
# same of the same config at every look. Keyed by id, the part kept to tell it from a later one that reuses the id
# (a config is not replaced in place: tick/context.py `_per_config` counts on it too).
_KEPT: dict[tuple, tuple] = {}


def _kept(key: tuple, part, build):
    known = _KEPT.get(key)
    if known is None or known[0] is not part:
        if len(_KEPT) >= 4096:
            _KEPT.clear()
        known = _KEPT[key] = (part, build())
    return known[1]


@functools.lru_cache(maxsize=16384)
def _next_check(checked: datetime, start: datetime, end: datetime, expected: int, metered: int, amount_due: int,
                rule: tuple) -> datetime:
    """next_usage_check's arithmetic, on plain values (the usage rule as (check_every, the alerts' percentages,
    pace, min_elapsed, surge)). Worked out once per distinct look: a subscription's next planning asks again what
    its last one did (the same preview, fetched at the same moment), and the bisection was a sixth of planning."""
    check_every, alerts, pace, min_elapsed, surge = rule
    percent_at, speed = _usage_curve(metered, amount_due - metered, expected, start, end, checked, surge, pace,
                                     min_elapsed)
    now = percent_at(0.0)
    target = min((t for t in alerts if t > now), default=None)
    if target is None:
        return max(end, checked + check_every)
    # A pace seen over a short time says little (none at all at the period's start): wait at most as long again
    # as the period has run, so the pace is measured again over twice the time before anything is assumed of it.
    horizon = min(end - checked, max(checked - start, check_every)).total_seconds()
    if percent_at(horizon) < target:
        return checked + max(check_every, timedelta(seconds=horizon))
    if not pace:       # a straight line: where it reaches the target is known, and the bisection's answer next to it
        high = _first_point(percent_at, target, horizon, (target * expected / 100 - amount_due) / speed)
        return checked + max(check_every, timedelta(seconds=high))
    low, high = 0.0, horizon                               # reached `high` seconds after the preview, not `low`
    while high - low > 60:
        middle = (low + high) / 2
        low, high = (low, middle) if percent_at(middle) >= target else (middle, high)
    return checked + max(check_every, timedelta(seconds=high))


def _first_point(percent_at, target: float, horizon: float, near: float) -> float:
    """What the bisection of [0, horizon] above finds, when `percent_at` reaches `target` at about `near` seconds:
    the first point where it has of the grid that halving the interval down to steps of at most 60 s makes (it
    only grows, is below target at 0 and not at `horizon`). Found next to `near` with a look or two at it, not with
    a look per halving (15 for a month): the bisection of a straight line was two thirds of a look's planning."""
    step, points = horizon, 1
    while step > 60:
        step, points = step / 2, points * 2
    at = min(max(math.ceil(near / step), 1), points)
    while at < points and percent_at(at * step) < target:
        at += 1
    while at > 1 and percent_at((at - 1) * step) >= target:
        at -= 1
    return at * step


def _usage_curve(metered: int, fee: int, expected: int, start: datetime, end: datetime, checked: datetime,
                 surge: float, pace: bool, min_elapsed: int):
    """(later (seconds after `checked`) -> the alert percentage then, with metered usage going on at `surge` times
    its pace so far (at least a usual period's amount per period: usage that has not started may start); that
    speed, in amount a second). It only grows with `later`, so the first moment it reaches a threshold can be
    bisected; without `pace`, a straight line."""
    length, elapsed = (end - start).total_seconds(), max(0.0, (checked - start).total_seconds())
    speed = surge * max(metered / elapsed if elapsed else 0.0, expected / length)

    def percent_at(later: float) -> float:
        usage, share = metered + speed * later, (elapsed + later) / length
        if pace and min_elapsed <= share * 100 < 100:
            usage /= share                             # projected to the period's end, as _usage does
        return (fee + usage) * 100 / expected

    return percent_at, speed


def _catch_up(plans: list[NoticePlan], now: datetime) -> list[NoticePlan]:
    """Of the offsets already due, only the latest runs; the earlier ones are skipped."""
    overdue = [p for p in plans if p.due_at <= now]
    if len(overdue) <= 1:
        return plans
    latest = max(overdue, key=lambda p: p.due_at)
    return [p if p is latest or p.due_at > now else
            NoticePlan(p.kind, p.object_id, p.period, p.offset, p.due_at, p.data, SKIPPED,
                       f"superseded by the {latest.offset} notice (both were due when first planned)")
            for p in plans]


def _card_expiring(subject: dict, config: NoticesConfig, period_end: datetime, now: datetime) -> list[NoticePlan]:
    card = subject.get("payment_method")
    if not card or card.get("type") != "card" or not card.get("exp_month") or not card.get("exp_year"):
        return []
    expires = card_expires_at(card["exp_month"], card["exp_year"])
    # Only a card the next payment will still need after it expired; a renewal before the expiry is charged
    # to the card as it is, and planned again (with the new next payment) when the period moves on.
    if expires <= now or period_end < expires:
        return []
    sub = subject["subscription"]
    data = {"card": {"id": card["id"], "brand": card.get("brand"), "last4": card.get("last4"),
                     "exp_month": card["exp_month"], "exp_year": card["exp_year"], "expires_at": iso(expires)},
            "renewal": {"date": sub["current_period_end"], "amount": sub.get("amount"),
                        "currency": sub.get("currency")},
            "to": config.card_expiring.to}
    period = f"{card['exp_year']:04d}-{card['exp_month']:02d}"
    plans = [NoticePlan(CARD_EXPIRING, card["id"], period, offset_text(before), expires - before, data)
             for before in config.card_expiring.before]
    return _catch_up(plans, now)


def renewal_facts(subject: dict) -> dict:
    sub, customer = subject["subscription"], subject["customer"] or {}
    return {"amount_due": sub.get("amount"), "amount_remaining": sub.get("amount"), "currency": sub.get("currency"),
            "interval": sub.get("interval"), "usage_based": bool(sub.get("usage_based")),
            "customer.metadata": dict(_metadata(customer.get("metadata") or "{}")),
            "subscription.metadata": dict(_metadata(sub.get("metadata") or "{}"))}


def _renewal(subject: dict, config: NoticesConfig, period_end: datetime, now: datetime) -> list[NoticePlan]:
    rule = config.upcoming_renewal
    if not _reminded(subject, rule):
        return []
    sub = subject["subscription"]
    data = {"renewal": {"date": sub["current_period_end"], "amount": sub.get("amount"),
                        "currency": sub.get("currency"), "interval": sub.get("interval")},
            "to": rule.to}
    plans = [NoticePlan(UPCOMING_RENEWAL, sub["id"], sub["current_period_end"], offset_text(before),
                        period_end - before, data)
             for before in rule.before]
    return _catch_up(plans, now)


def _reminded(subject: dict, rule) -> bool:
    """Does the rule call for a renewal reminder of this subscription (a large charge, or its `when`)? Worked out
    once per rule and distinct facts (renewal_facts' inputs): a subscription is planned again at every usage look
    and every sync that changes it, with the same facts, and the condition's matching was a tenth of a planning."""
    sub, customer = subject["subscription"], subject["customer"] or {}

    def build() -> bool:
        facts = renewal_facts(subject)
        large = facts["currency"] in rule.above and (facts["amount_due"] or 0) >= rule.above[facts["currency"]]
        return bool(large or (rule.when and matches(rule.when, facts)))

    return _kept(("reminded", id(rule), sub.get("amount"), sub.get("currency"), sub.get("interval"),
                  bool(sub.get("usage_based")), customer.get("metadata") or "{}", sub.get("metadata") or "{}"),
                 rule, build)


def expected_amount(subject: dict, config: NoticesConfig, currency: str) -> tuple[int | None, str]:
    """What a period usually costs: the mean of the last three paid invoices, else the configured amount."""
    paid = subject.get("paid_amounts") or []
    if len(paid) >= 3:
        return sum(paid[:3]) // 3, "the mean of the last three paid invoices"
    if currency in config.usage.expected:
        return config.usage.expected[currency], "the configured expected amount"
    return None, "no three paid invoices and no usage.expected for " + currency


def projected_charge(preview: dict, at: datetime, min_elapsed: int) -> tuple[int, float | None]:
    """(the upcoming invoice's amount at the period's end if usage goes on at its pace so far, the share of the
    period elapsed). The metered lines are extrapolated linearly, the rest (the next period's fee) is as it is.
    Before `min_elapsed` % of the period, too early to tell a pace: the running amount itself."""
    amount = preview["amount_due"]
    start, end = from_iso(preview.get("period_start")), from_iso(preview.get("period_end"))
    if start is None or end is None or end <= start:
        return amount, None
    elapsed = min(1.0, max(0.0, (at - start) / (end - start)))
    if elapsed >= 1 or elapsed * 100 < min_elapsed:
        return amount, elapsed
    metered = sum(line.get("amount") or 0 for line in preview.get("lines") or [] if line.get("metered"))
    return amount + max(0, round(metered / elapsed) - metered), elapsed


def _usage(subject: dict, config: NoticesConfig, preview: dict, now: datetime) -> list[NoticePlan]:
    sub = subject["subscription"]
    currency = preview["currency"]
    expected, basis = expected_amount(subject, config, currency)
    if not expected:
        return []
    rule = config.usage
    running = preview["amount_due"]
    # The usual month's usage crosses 50/75/100% of itself every month: with `pace`, thresholds apply to the
    # charge projected to the period's end, so only usage running ahead of normal alerts.
    checked = from_iso(sub.get("usage_checked_at")) or now
    amount, elapsed = projected_charge(preview, checked, rule.min_elapsed) if rule.pace else (running, None)
    percent = amount * 100 / expected
    # Every threshold crossed is planned each time (the ledger keeps the first of each key), so one already sent or
    # waiting is never cancelled; of those crossed, only the highest is sent.
    crossed = [t for t in config.usage.thresholds if percent >= t]
    large = config.usage.large_charge
    large_charge = large.enabled and amount >= large.factor * expected
    if not crossed and not large_charge:
        return []       # most looks: nothing to build the notices' data for
    period = preview.get("period_end") or sub["current_period_end"]
    data = {"usage": {"amount": running, "projected": amount, "pace": rule.pace,
                      "elapsed": None if elapsed is None else round(elapsed, 4), "currency": currency,
                      "expected": expected, "basis": basis, "percent": round(percent),
                      "period_start": preview.get("period_start"), "period_end": period,
                      "lines": preview.get("lines") or []},
            "to": config.usage.to}
    plans = []
    if crossed:
        top = max(crossed)
        for threshold in crossed:
            offset = f"{threshold}%"
            threshold_data = {**data, "usage": {**data["usage"], "threshold": threshold}}
            if threshold == top:
                plans.append(NoticePlan(USAGE_ALERT, sub["id"], period, offset, now, threshold_data))
            else:
                plans.append(NoticePlan(USAGE_ALERT, sub["id"], period, offset, now, threshold_data, SKIPPED,
                                        f"usage jumped to {round(percent)}%: only the {top}% alert is sent"))
    if large_charge:
        plans.append(NoticePlan(LARGE_CHARGE, sub["id"], period, f"x{large.factor:g}", now,
                                {**data, "usage": {**data["usage"], "factor": large.factor}}))
    return plans


def still_useful_until(notice: dict) -> datetime | None:
    """The moment after which a notice no longer helps: the card's expiry, the renewal, the usage period's end."""
    data = json.loads(notice["data"]) if isinstance(notice.get("data"), str) else (notice.get("data") or {})
    if notice["kind"] == CARD_EXPIRING:
        return from_iso((data.get("card") or {}).get("expires_at"))
    if notice["kind"] == UPCOMING_RENEWAL:
        return from_iso(notice["period"])
    return from_iso((data.get("usage") or {}).get("period_end") or notice["period"])


def reopen_after_monitor(notices: list[dict], now: datetime) -> list[int]:
    """Monitor mode recorded these notices as `would` (nothing sent). Now live, which to send for real, once: of
    each (kind, object, period), the latest `would` whose moment has not passed, unless a later one of the group
    was already sent (or may have been). The others stay `would`: a customer never gets a burst of late notices."""
    groups: dict[tuple, list[dict]] = {}
    for notice in notices:
        groups.setdefault((notice["kind"], notice["object_id"], notice["period"]), []).append(notice)
    reopen = []
    for group in groups.values():
        would = [n for n in group if n["status"] == "would"]
        if not would:
            continue
        latest = max(would, key=lambda n: (n["due_at"], n["id"]))
        until = still_useful_until(latest)
        if until is None or until <= now:
            continue
        if any(n["status"] in ("done", "claimed", "unknown") and n["due_at"] >= latest["due_at"] for n in group):
            continue
        reopen.append(latest["id"])
    return sorted(reopen)
