"""A notice as an effect of the tick's one executor (the `Effect` protocol of dunctl/effect.py): claimed in the
ledger's notices journal, re-checked right before it is sent (the card may have been replaced since it was
planned), prepared without side effects (so monitor mode and dry runs show recipient and subject), delivered,
recorded. A crash between claim and record leaves it `claimed`; the next tick settles it by the journal's one rule
(dunctl/ledger/journal.py): one in flight is `unknown` and never sent again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar
from zoneinfo import ZoneInfo

from dunctl.channels import EmailMessage
from dunctl.clock import from_iso
from dunctl.effect import Outcome, Prepared, skipped
from dunctl.ledger.journal import NOTICES_JOURNAL
from dunctl.messages import recipient_list
from dunctl.notices import CARD_EXPIRING, LARGE_CHARGE, UPCOMING_RENEWAL, USAGE_ALERT
from dunctl.notices.context import notice_context, renewal_entry
from dunctl.notices.planner import PENDING, plan_notices

if TYPE_CHECKING:
    from dunctl.tick.context import TickContext

NOTICE = "notice"

#: Notice kind -> (template config section, the config of its recipient)
def template_of(config, kind: str) -> str:
    notices = config.file.notices
    return {CARD_EXPIRING: notices.card_expiring.template, UPCOMING_RENEWAL: notices.upcoming_renewal.template,
            USAGE_ALERT: notices.usage.template, LARGE_CHARGE: notices.usage.large_charge.template}[kind]


def _column(name: str, doc: str | None = None) -> property:
    """A read-only attribute that is the `name` column of the effect's notices row."""
    return property(lambda effect: effect.notice[name], doc=doc)


@dataclass(frozen=True)
class NoticeEffect:
    notice: dict                     # the notices row, as claimed
    retry_at: datetime | None = None   # when it is tried again if sending fails (None: never)
    kind: str = NOTICE
    audience: str = "customer"
    channel: str = "email"
    step: None = None

    journal: ClassVar[str] = NOTICES_JOURNAL
    case_id: ClassVar[None] = None          # about a subscription or a card, not a case
    planned_for: ClassVar[None] = None      # planned by the notices planner, not by a case's plan
    needs_open_case: ClassVar[bool] = False
    action: ClassVar[str] = "email"         # every notice is an email

    # The Effect protocol's names for columns of the claimed notices row.
    notice_id = _column("id")
    name = _column("kind")
    key = _column("idempotency_key")
    invoice_id = _column("object_id", "What the notice is about (a card or a subscription): the executor's messages "
                                      "name it.")

    @property
    def due_at(self) -> datetime:
        return from_iso(self.notice["due_at"])

    @property
    def label(self) -> str:
        return f"notice:{self.notice['kind']}@{self.notice['offset']}"

    def together_key(self, grouping: bool) -> None:
        """Alone: one renewal reminder says it for the customer's others (`suppressed`)."""
        return None

    # -- the executor's three questions ----------------------------------------------------------------------

    def suppressed(self, ctx: TickContext) -> Outcome | None:
        """Re-plan the subscription from what the ledger knows now (the tick synced just before): a notice its
        facts no longer call for (card updated or replaced, subscription cancelled, dunning=off) is not sent."""
        if not self.notice.get("subscription_id"):
            return None
        subject = ctx.ledger.notices.subject(self.notice["subscription_id"])
        if subject is None:
            return Outcome("suppressed", "the subscription is gone")
        preview = ctx.ledger.notices.preview(subject)
        decision = plan_notices(subject, ctx.config.file.notices, ctx.now, preview)
        wanted = {p.key for p in decision.plans if p.status == PENDING}
        if self.key in wanted or self.notice["kind"] in (USAGE_ALERT, LARGE_CHARGE) and not decision.why_none:
            return _covered_by_another_reminder(ctx, self.notice)
        return Outcome("suppressed", decision.why_none or "no longer called for")

    def prepare(self, ctx: TickContext, together: list[NoticeEffect]) -> Prepared:
        customer = ctx.ledger.sync.customer(self.notice["customer_id"])
        rule = (_data(self.notice).get("to")) or "billing_contact"
        addresses = recipient_list(rule, customer, {})
        if not addresses:
            return skipped(f"no address for {rule}")
        template = template_of(ctx.config, self.notice["kind"])
        sender = ctx.config.file.sender
        renewing = _renewing_with(ctx, self.notice) if self.notice["kind"] == UPCOMING_RENEWAL else None
        context = notice_context(self.notice, customer, _link(ctx, self), sender.company, ctx.now,
                                 default_locale=sender.locale, renewing=renewing, timezone=sender.timezone)
        subject, text, html = ctx.templates.render_email(template, context)
        headers = {"X-Dunctl-Notice": self.key}
        to = ", ".join(addresses)     # as the ledger records it, for people to read

        def deliver() -> Outcome:
            delivery = ctx.channels.email(EmailMessage(addresses, subject, text, html, headers), self.key, ctx.now)
            return Outcome("done", f"email {template} to {to}: {delivery.detail}", recipient=to, subject=subject)

        return Prepared(f"email {template} to {to}: {subject}", deliver, recipient=to, subject=subject)

    def record(self, ctx: TickContext, outcome: Outcome) -> None:
        """Nothing beyond the journal's row."""


def notice_effect(ctx: TickContext, notice: dict) -> NoticeEffect:
    """A due notice as the executor's effect; a failed send is tried again after `dunning.action_retry_after`
    while tries are left."""
    tries_left = notice["tries"] + 1 < ctx.settings.max_action_tries
    return NoticeEffect(notice, ctx.now + ctx.settings.action_retry_after if tries_left else None)


def _zone(ctx: TickContext, customer_id: str) -> str:
    """Where the customer is (its metadata timezone), else the sender's zone: the days a notice names are theirs."""
    customer = ctx.ledger.sync.customer(customer_id) or {}
    return customer.get("timezone") or ctx.config.file.sender.timezone


def _local_day(moment, zone: str) -> str:
    try:
        return moment.astimezone(ZoneInfo(zone)).date().isoformat()
    except (ValueError, KeyError):    # an unknown zone: the UTC day
        return moment.date().isoformat()


def _renewal_of(notice: dict, zone: str) -> tuple[str, str] | None:
    """(renewal day where the customer is, currency) of an upcoming_renewal notice: what one reminder covers for
    one customer."""
    renewal = _data(notice).get("renewal") or {}
    moment = from_iso(renewal.get("date"))
    return (_local_day(moment, zone), renewal.get("currency")) if moment else None


def _renewing_with(ctx: TickContext, notice: dict) -> list[dict]:
    """Every live subscription of the customer renewing on the notice's day in its currency, as renewal entries:
    the reminder states the whole charge, never the part one subscription makes."""
    zone = _zone(ctx, notice["customer_id"])
    day = _renewal_of(notice, zone)
    subs = [s for s in ctx.ledger.sync.customer_subscriptions(notice["customer_id"])
            if s["status"] in ("active", "trialing", "past_due") and not s.get("cancel_at_period_end")
            and from_iso(s.get("current_period_end")) is not None
            and (_local_day(from_iso(s["current_period_end"]), zone), s.get("currency")) == day]
    if not any(s["id"] == notice["subscription_id"] for s in subs):
        return []      # the ledger moved on since planning: the notice's own facts
    return [renewal_entry(s, ctx.now) for s in subs]


# Statuses of a renewal reminder that has gone, or will go, out: another one for the same day is not needed
# (a failed one only while it is tried again).
_SENDING = ("pending", "claimed", "done", "would", "unknown")


def _covered_by_another_reminder(ctx: TickContext, notice: dict) -> Outcome | None:
    """One renewal reminder per customer, day, currency and offset: the first due (then the lowest id) of the
    customer's reminders for that day says it for every subscription renewing; the others are not sent."""
    if notice["kind"] != UPCOMING_RENEWAL:
        return None
    zone = _zone(ctx, notice["customer_id"])
    day = _renewal_of(notice, zone)
    group = [n for n in ctx.ledger.notices.of_customer(notice["customer_id"])
             if n["kind"] == UPCOMING_RENEWAL and n["offset"] == notice["offset"] and _renewal_of(n, zone) == day
             and (n["status"] in _SENDING or n["status"] == "failed" and n["next_due_at"] or n["id"] == notice["id"])]
    first = min(group, key=lambda n: (n["due_at"], n["id"]))
    if first["id"] == notice["id"]:
        return None
    return Outcome("suppressed", f"covered by the renewal reminder for {first['object_id']}, which lists every "
                                 f"subscription renewing that day")


def _data(notice: dict) -> dict:
    return json.loads(notice["data"]) if isinstance(notice["data"], str) else notice["data"]


def _link(ctx: TickContext, effect: NoticeEffect) -> str:
    """The one-click update link: the configured static URL (the customer portal's login link). Never a portal
    session made at send time: it would expire before the customer clicks (dunctl/notices/config.py)."""
    return ctx.config.file.notices.update_url or ""
