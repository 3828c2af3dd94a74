"""The report's pre-dunning section: what notices were sent in the period and what followed them.

Renewals paid on the first attempt after a reminder are shown beside renewals without one: a comparison between
groups that differ in more than the reminder (which plans get one is configured), not a measure of its effect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from dunctl.clock import iso
from dunctl.ledger import Ledger
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


def _between(column: str, since, until) -> tuple[str, list]:
    parts, params = [], []
    if since:
        parts.append(f"{column} >= ?")
        params.append(iso(since))
    if until:
        parts.append(f"{column} < ?")
        params.append(iso(until))
    return " AND ".join(parts) or "1", params


def predunning_section(ledger: Ledger, since=None, until=None) -> PreDunning:
    """Notices sent in [since, until) and what followed them."""
    db = ledger.db
    where, params = _between("n.finished_at", since, until)
    result = PreDunning(since=iso(since) if since else None, until=iso(until) if until else None)
    for kind, count in db.execute(f"SELECT kind, count(*) FROM notices n WHERE status = 'done' AND {where} "
                                  "GROUP BY kind", params):
        result.sent_by_kind[kind] = count
    result.usage_alerts = result.sent_by_kind.get("usage_alert", 0)
    result.large_charge_heads_ups = result.sent_by_kind.get("large_charge", 0)
    # A card counts once however many offsets it was sent; updated = a payment-method change the provider reported
    # for the customer (card updater, edited card, new default) after the first notice and before the expiry.
    cards = list(db.query(
        f"""SELECT n.object_id, n.period, n.customer_id, min(n.finished_at) AS first_sent,
                   json_extract(n.data, '$.card.expires_at') AS expires_at
            FROM notices n WHERE n.kind = 'card_expiring' AND n.status = 'done' AND {where}
            GROUP BY n.object_id, n.period""", params))
    result.expiry_notices = len(cards)
    result.cards_updated_before_expiry = sum(1 for card in cards if db.execute(
        "SELECT 1 FROM signals WHERE kind = 'payment_method_updated' AND customer_id = ? AND at > ? AND at < ? "
        "LIMIT 1", [card["customer_id"], card["first_sent"], card["expires_at"]]).fetchone())
    renewal_where, renewal_params = _between("i.created_at", since, until)
    window = f"'+{RENEWAL_WINDOW_DAYS} days'"
    renewals = list(db.query(
        f"""SELECT i.id, i.status, i.attempt_count,
                   (SELECT count(*) FROM cases c WHERE c.invoice_id = i.id) AS failed,
                   EXISTS (SELECT 1 FROM notices n WHERE n.kind = 'upcoming_renewal' AND n.status = 'done'
                           AND n.subscription_id = i.subscription_id
                           AND datetime(i.created_at) BETWEEN datetime(n.period, '-{RENEWAL_WINDOW_DAYS} days')
                                                        AND datetime(n.period, {window})) AS reminded
            FROM invoices i WHERE i.billing_reason = 'subscription_cycle' AND i.subscription_id IS NOT NULL
              AND {renewal_where}""", renewal_params))
    for r in renewals:
        first = r["status"] == "paid" and not r["failed"] and (r["attempt_count"] or 0) <= 1
        if r["reminded"]:
            result.renewals_reminded += 1
            result.renewals_reminded_paid_first_attempt += first
        else:
            result.renewals_not_reminded += 1
            result.renewals_not_reminded_paid_first_attempt += first
    large = list(db.query(f"""SELECT n.subscription_id, n.period FROM notices n
                              WHERE n.kind = 'large_charge' AND n.status = 'done' AND {where}""", params))
    result.large_charge_invoices_failed = sum(1 for n in large if db.execute(
        f"""SELECT 1 FROM cases c JOIN invoices i ON i.id = c.invoice_id WHERE i.subscription_id = ?
            AND datetime(i.created_at) BETWEEN datetime(?, '-{RENEWAL_WINDOW_DAYS} days') AND datetime(?, {window})
            LIMIT 1""", [n["subscription_id"], n["period"], n["period"]]).fetchone())
    return result
