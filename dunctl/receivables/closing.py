"""A person closes a case and says how it ended: collected (the collections agency, or the customer outside Stripe,
paid what was left), settled (an agreed lesser amount came in; the rest is written off) or written off (nothing
more will come). The outcome is stored on the case (`closed_as`, `settled_amount`), shown by `case show` and
`status --all`, counted by `report`, and booked by the month-end journal (dunctl/receivables/journal.py), so the
journal's sums still equal the report's recovered amounts.

Nothing is changed in Stripe: the person records there what their books need (mark the invoice paid out of band,
or uncollectible); a sync that later sees it finds the case already ended."""

from __future__ import annotations

from datetime import datetime

from dunctl import cases
from dunctl.errors import UsageError
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.money import format_amount
from dunctl.receivables.holds import amount_in_minor

# what a person types -> what the ledger stores
OUTCOMES = {"collected": "collected", "settled": "settled", "written-off": "written_off"}


def _amount(outcome: str, text: str | None, left: int, currency: str) -> int:
    """What came in when the case was closed, in minor units."""
    if outcome == "written_off":
        if text is not None:
            raise UsageError("--amount goes with --as settled, not a write-off",
                             "a write-off is the whole amount left; use --as settled --amount N if some came in")
        return 0
    if outcome == "collected":
        if text is not None:
            raise UsageError("--as collected is the whole amount left; --amount is for a settlement",
                             "leave --amount out, or use --as settled --amount N for a lesser amount")
        return left
    if text is None:
        raise UsageError("--as settled needs the amount agreed", "add --amount N (the invoice's currency)")
    minor = amount_in_minor(text, currency)
    if minor > left:
        raise UsageError(f"--amount {text} is more than the {format_amount(left, currency)} left",
                         "use --as collected when the whole amount came in")
    return minor


def _words(outcome: str, received: int, left: int, currency: str) -> str:
    if outcome == "collected":
        return f"collected: {format_amount(received, currency)} received"
    if outcome == "written_off":
        return f"written off: {format_amount(left, currency)}"
    return (f"settled: {format_amount(received, currency)} received, {format_amount(left - received, currency)} "
            "written off")


def close(ledger: Ledger, invoice_id: str, reason: str, now: datetime, outcome: str | None = None,
          amount: str | None = None) -> dict:
    """End a case by hand; with `outcome` (collected, settled, written-off) also how it ended, in money."""
    if outcome is None:
        if amount is not None:
            raise UsageError("--amount needs --as settled", 'dunctl case close INVOICE -r "..." --as settled '
                                                           "--amount 600")
        return cases.close(ledger, invoice_id, reason, now)
    if outcome not in OUTCOMES:
        raise UsageError(f"--as {outcome!r} is not an outcome", "use one of: " + ", ".join(OUTCOMES))
    case = cases.find_case(ledger, invoice_id)
    if case["state"] in ENDED_STATES:
        raise UsageError(f"case {invoice_id} already ended ({case['state']})")
    stored, left, currency = OUTCOMES[outcome], case["amount_remaining"], case["currency"]
    received = _amount(stored, amount, left, currency)
    invoice = ledger.sync.invoice(invoice_id)
    words = _words(stored, received, left, currency)
    with ledger.transaction():
        ledger.cases.end(case["id"], "closed", f"{words}: {reason}", now, closed_as=stored, settled_amount=received,
                         amount_recovered=max(0, invoice["amount_paid"] - case["amount_paid_at_open"]) + received)
        ledger.cases.add_timeline(case["id"], now, "closed", f"closed by a person as {words}: {reason}")
    return ledger.cases.get(case["id"])
