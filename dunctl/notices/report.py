"""The report's pre-dunning section: what notices were sent in the period and what followed them.

Renewals paid on the first attempt after a reminder are shown beside renewals without one: a comparison between
groups that differ in more than the reminder (which plans get one is configured), not a measure of its effect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dunctl.clock import iso
from dunctl.ledger import Ledger
from dunctl.ledger.views import notices as views
from dunctl.ledger.views.period import Period
from dunctl.notices import KINDS

COMPARISON_NOTE = ("a comparison, not a causal claim: reminded renewals are the plans `upcoming_renewal.when` "
                   "selects (yearly, large), which differ from the others in more than the reminder")
RENEWAL_WINDOW_DAYS = 3   # a renewal invoice belongs to the period that ended within this many days of its creation


@dataclass
class PreDunning:
    since: str | None = None                 # notices sent at or after this (UTC), None: from the start
    until: str | None = None                 # ... and before this, None: up to now
    sent_by_kind: dict[str, int] = field(default_factory=dict)
    expiry_notices: int = 0                  # cards sent at least one expiry notice
    cards_updated_before_expiry: int = 0     # ... then updated or replaced after the notice, before the expiry
    renewals_reminded: int = 0
    renewals_reminded_paid_first_attempt: int = 0
    renewals_not_reminded: int = 0
    renewals_not_reminded_paid_first_attempt: int = 0
    usage_alerts: int = 0
    large_charge_heads_ups: int = 0
    large_charge_invoices_failed: int = 0
    comparison_note: str = COMPARISON_NOTE

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def anything(self) -> bool:
        """Whether the human formats show the section: a notice was sent or a renewal reminded in the period."""
        return bool(self.sent_by_kind) or bool(self.renewals_reminded)

    def period_text(self) -> str:
        if not self.since and not self.until:
            return "all notices in the ledger"
        return f"notices sent from {self.since or 'the start'} to before {self.until or 'now'}"

    def metrics(self) -> list[tuple[str, int]]:
        """(name, count) for machine formats: every kind (0 when none was sent), then every figure."""
        rows = [(f"sent_{kind}", self.sent_by_kind.get(kind, 0)) for kind in KINDS]
        rows += [(name, getattr(self, name)) for name in (
            "expiry_notices", "cards_updated_before_expiry", "renewals_reminded",
            "renewals_reminded_paid_first_attempt", "renewals_not_reminded",
            "renewals_not_reminded_paid_first_attempt", "usage_alerts", "large_charge_heads_ups",
            "large_charge_invoices_failed")]
        return rows

    def rows(self) -> list[tuple[str, str]]:
        def share(part: int, whole: int) -> str:
            # "1,653 of 2,018" never breaks inside (a phone's narrow column); it may before the percentage.
            return f"{part:,}\u00a0of\u00a0{whole:,} ({part / whole:.0%})" if whole else "-"

        rows = [(f"notices sent: {kind}", f"{n:,}") for kind, n in sorted(self.sent_by_kind.items())]
        rows += [("cards updated before expiry, after a notice",
                  share(self.cards_updated_before_expiry, self.expiry_notices)),
                 ("renewals paid at first attempt, after a reminder",
                  share(self.renewals_reminded_paid_first_attempt, self.renewals_reminded)),
                 ("renewals paid at first attempt, no reminder (comparison)",
                  share(self.renewals_not_reminded_paid_first_attempt, self.renewals_not_reminded)),
                 ("usage alerts sent", f"{self.usage_alerts:,}"),
                 ("large-charge heads-ups sent", f"{self.large_charge_heads_ups:,}"),
                 ("  of those, invoices that then failed",
                  share(self.large_charge_invoices_failed, self.large_charge_heads_ups))]
        return rows


def predunning_section(ledger: Ledger, since=None, until=None) -> PreDunning:
    """Notices sent in [since, until) and what followed them."""
    conn = ledger.conn
    period = Period(iso(since), iso(until))
    result = PreDunning(since=iso(since) if since else None, until=iso(until) if until else None)
    result.sent_by_kind.update(views.sent_by_kind(conn, period))
    result.usage_alerts = result.sent_by_kind.get("usage_alert", 0)
    result.large_charge_heads_ups = result.sent_by_kind.get("large_charge", 0)
    # A card counts once however many offsets it was sent; updated = a payment-method change the provider reported
    # for the customer (card updater, edited card, new default) after the first notice and before the expiry.
    cards = views.expiry_notices(conn, period)
    result.expiry_notices = len(cards)
    result.cards_updated_before_expiry = sum(1 for card in cards if views.card_updated_between(
        conn, card["customer_id"], card["first_sent"], card["expires_at"]))
    for r in views.renewals(conn, period, RENEWAL_WINDOW_DAYS):
        first = r["status"] == "paid" and not r["failed"] and (r["attempt_count"] or 0) <= 1
        if r["reminded"]:
            result.renewals_reminded += 1
            result.renewals_reminded_paid_first_attempt += first
        else:
            result.renewals_not_reminded += 1
            result.renewals_not_reminded_paid_first_attempt += first
    result.large_charge_invoices_failed = sum(
        1 for n in views.large_charge_notices(conn, period)
        if views.failed_after(conn, n["subscription_id"], n["period"], RENEWAL_WINDOW_DAYS))
    return result
