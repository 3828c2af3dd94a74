"""The ledger's SQL for backtests (`simulate --from-ledger`): the failed invoices to replay, and what happened
to them, so the simulation's customer model can be fitted to this ledger's own outcomes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dunctl.ledger.views.period import Period
from dunctl.ledger.views.report import customer_message

if TYPE_CHECKING:
    from dunctl.ledger import Ledger

# Touches a customer notices; the last one within the attribution window before payment gets the credit.
MESSAGES = ("email", "sms")


def failed_invoices(ledger: Ledger, since: str | None = None, until: str | None = None) -> list[dict]:
    """Every case first failed in [since, until), with its invoice, customer, subscription and the codes of
    its first failure (from the case timeline, else the invoice's latest), oldest first."""
    where, params = Period(since, until).where("c.first_failed_at")
    return list(ledger.rows(
        f"""SELECT c.id AS case_id, c.invoice_id, c.customer_id, c.subscription_id, c.currency, c.amount_due,
                   c.first_failure_type, c.first_failed_at, c.state, c.recovered_at, c.recovered_by,
                   i.created_at, i.lines, i.billing_reason, i.payment_method_id, i.payment_method_type,
                   i.decline AS latest_decline,
                   (SELECT t.data FROM timeline t WHERE t.case_id = c.id AND t.kind = 'failed'
                    ORDER BY t.id LIMIT 1) AS first_decline,
                   cu.name, cu.email, cu.phone, cu.metadata AS customer_metadata, cu.preferred_locale,
                   cu.timezone, coalesce(s.usage_based, 0) AS usage_based
            FROM cases c JOIN invoices i ON i.id = c.invoice_id
            LEFT JOIN customers cu ON cu.id = c.customer_id
            LEFT JOIN subscriptions s ON s.id = c.subscription_id
            WHERE {where}
            ORDER BY c.first_failed_at, c.id""", params))


def outcomes(ledger: Ledger, window_seconds: int, since: str | None = None, until: str | None = None) -> list[dict]:
    """Per case: its first failure type, state, who collected, days from failure to payment (or to `until`
    of the data: the case's end, else the last tick), payment attempts, messages sent, and whether the last
    touch before payment (within the attribution window) was a message, a retry, or nothing."""
    where, params = Period(since, until).where("c.first_failed_at")
    kinds = ", ".join(f"'{k}'" for k in (*MESSAGES, "retry", "escalate"))
    return list(ledger.rows(
        f"""SELECT c.id, c.first_failure_type AS failure_type, c.state, c.recovered_by, c.first_failed_at,
                   c.recovered_at, c.closed_at, max(c.attempts, coalesce(c.recovered_attempt, 0)) AS attempts,
                   (SELECT count(*) FROM actions a WHERE a.case_id = c.id AND {customer_message("a")}) AS messages,
                   (SELECT count(*) FROM actions a WHERE a.case_id = c.id AND a.status = 'done'
                      AND a.action = 'retry' AND a.kind = 'step') AS retries,
                   CASE WHEN c.state = 'recovered' THEN coalesce(
                     (SELECT a.action FROM actions a WHERE a.case_id = c.id AND a.status = 'done'
                        AND a.action IN ({kinds}) AND a.kind = 'step'
                        AND a.finished_at <= c.recovered_at
                        AND a.finished_at >= strftime('%Y-%m-%dT%H:%M:%SZ', c.recovered_at, ?)
                      ORDER BY a.finished_at DESC, a.id DESC LIMIT 1), 'none') END AS last_touch
            FROM cases c WHERE {where} ORDER BY c.id""",
        [f"-{int(window_seconds)} seconds", *params]))


# What can prompt a customer to pay: a message to them, a person (an escalation, or an email to the account
# manager), lost service (a pause), a cancellation. Retry steps are not here: a retry collects by itself.
PROMPTS = ("email", "sms", "escalate", "pause_subscription", "cancel_subscription")


def case_touches(ledger: Ledger, since: str | None = None, until: str | None = None) -> list[dict]:
    """Per case first failed in [since, until): its invoice, first failure type, state, who collected, when it
    failed and was paid, payment attempts, and every prompt done on it as a JSON list of [finished_at, action,
    audience], for the backtest to credit each recovery to the channel that caused it (dunctl.backtest_model)."""
    where, params = Period(since, until).where("c.first_failed_at")
    kinds = ", ".join(f"'{k}'" for k in PROMPTS)
    return list(ledger.rows(
        f"""SELECT c.id, c.invoice_id, c.first_failure_type AS failure_type, c.state, c.recovered_by,
                   c.first_failed_at, c.recovered_at, max(c.attempts, coalesce(c.recovered_attempt, 0)) AS attempts,
                   (SELECT json_group_array(json_array(a.finished_at, a.action, coalesce(a.audience, 'customer')))
                      FROM actions a WHERE a.case_id = c.id AND a.status = 'done' AND a.kind = 'step'
                        AND a.action IN ({kinds})) AS touches
            FROM cases c WHERE {where} ORDER BY c.id""", params))
