"""Promises to pay and disputed invoices: a person records that the customer promised to pay by a date, or
disputes the invoice; that invoice's automated messages wait (the customer's other invoices go on), and the hold
ends by itself:

- the invoice is paid (in full, or the promised amount by the date): the promise was kept;
- the date passes unpaid: the promise was broken; a person is told and the sequence resumes where it was (what
  fell due meanwhile follows the catch-up policy: only the latest customer message still true goes out).

A dispute without a date holds the invoice until a person resumes the case (`dunctl case resume`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from dunctl.cases import find_case
from dunctl.clock import from_iso
from dunctl.errors import UsageError
from dunctl.ledger import ENDED_STATES, Ledger
from dunctl.ledger import receivables as store
from dunctl.ledger.records import CaseRecord, InvoiceRecord
from dunctl.model import Signal, SyncBatch
from dunctl.money import decimals, format_amount
from dunctl.tick import changes as case_changes, reconcile
from dunctl.tick.changes import Applied, Change, Note, NotifyPerson, Resume

PROMISE, DISPUTE = "promise", "dispute"
HELD = "held for the customer's "         # how held_because starts for a hold of this module


def shown_day(until: datetime | str) -> str:
    """The day a hold runs to, as a person said it: a hold until the end of Nov 10 ends at Nov 11 00:00 UTC."""
    moment = from_iso(until) if isinstance(until, str) else until
    return f"{moment - timedelta(seconds=1):%Y-%m-%d}"


def amount_in_minor(text: str | None, currency: str) -> int | None:
    """'1500' or '1500.50' (the invoice's currency, major units) -> minor units; None when not given."""
    if text is None:
        return None
    try:
        value = Decimal(text.strip()) * (10 ** decimals(currency))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value <= 0 or value != value.to_integral_value():
        raise UsageError(f"--amount {text!r} is not an amount of {currency.upper()}",
                         "give it in the invoice's currency, e.g. --amount 1500 or --amount 1500.50")
    return int(value)


def _holdable(ledger: Ledger, invoice_id: str) -> dict:
    case = find_case(ledger, invoice_id)
    held_by_us = case["state"] == "paused" and (case.get("held_because") or "").startswith(HELD)
    if case["state"] != "open" and not held_by_us:
        raise UsageError(f"case {invoice_id} is {case['state']}; a promise or dispute needs an open case",
                         "a case a person paused is theirs: `dunctl case resume` it first")
    return case


def promise(ledger: Ledger, invoice_id: str, until: datetime, amount: str | None, now: datetime,
            by: str = "cli") -> dict:
    """The customer promised to pay (`amount`, else in full) by the end of `until`."""
    case = _holdable(ledger, invoice_id)
    if until <= now:
        raise UsageError(f"--until {shown_day(until)} is not in the future", "give the date the customer promised")
    invoice = ledger.sync.invoice(invoice_id)
    minor = amount_in_minor(amount, case["currency"])
    left = format_amount(invoice["amount_remaining"], case["currency"])
    if minor is not None and minor > invoice["amount_remaining"]:
        raise UsageError(f"--amount {amount} is more than the {left} left on {invoice_id}",
                         "leave --amount out for the whole amount")
    what = format_amount(minor, case["currency"]) if minor else f"the full {left}"
    return _hold(ledger, case, invoice, PROMISE, until, minor, f"{HELD}promise to pay {what} by {shown_day(until)}",
                 None, now, by)


def dispute(ledger: Ledger, invoice_id: str, reason: str, until: datetime | None, now: datetime,
            by: str = "cli") -> dict:
    """The customer disputes the invoice (`reason`): hold it until `until`, or until a person resumes it."""
    case = _holdable(ledger, invoice_id)
    if until is not None and until <= now:
        raise UsageError(f"--until {shown_day(until)} is not in the future", "leave it out to hold until resumed")
    invoice = ledger.sync.invoice(invoice_id)
    until_text = f" until {shown_day(until)}" if until else " until a person resumes the case"
    return _hold(ledger, case, invoice, DISPUTE, until, None, f"{HELD}dispute of the invoice ({reason}){until_text}",
                 reason, now, by)


def _hold(ledger: Ledger, case: dict, invoice: dict, kind: str, until, amount, because: str, reason, now, by):
    with ledger.transaction():
        previous = store.open_hold(ledger.conn, case["id"])
        if previous:
            store.end_hold(ledger.conn, previous["id"], "replaced", now)
        store.add_hold(ledger.conn, case_id=case["id"], invoice_id=case["invoice_id"], kind=kind, until=until,
                       amount=amount, currency=case["currency"], reason=reason, paid=invoice["amount_paid"],
                       now=now, by=by)
        ledger.cases.hold(case["id"], because)
        ledger.cases.add_timeline(case["id"], now, kind, because + ": automated messages on this invoice wait")
    return ledger.cases.get(case["id"])


# -- ending by themselves (each tick) --------------------------------------------------------------------------


def signal_ended_holds(ledger: Ledger, now: datetime) -> None:
    """Every hold whose date passed or whose case ended becomes a `hold_ended` signal, which reconciling applies
    to its case like any other (`hold_ended` below), in the same tick."""
    ended = store.holds_to_end(ledger.conn, now, ENDED_STATES)
    if ended:
        ledger.sync.apply_batch(SyncBatch(signals=[Signal("hold_ended", now, invoice_id=h["invoice_id"],
                                                     source_id=f"hold-ended:{h['id']}", data=h) for h in ended]),
                           now)


@dataclass(frozen=True)
class HoldEnded:
    case_id: int
    hold_id: int
    outcome: str        # kept | broken | ended (a dispute's date passed) | the case's end state
    at: datetime


def hold_ended(signal, hold: dict, case: CaseRecord, invoice: InvoiceRecord, now: datetime) -> list[Change]:
    """What a hold's end means for its case: kept (paid), or broken (the sequence resumes, a person is told)."""
    paid_since = invoice.amount_paid - (hold.get("paid_at_start") or 0)
    kept = invoice.status == "paid" or bool(hold.get("amount")) and paid_since >= hold["amount"]
    changes: list[Change] = []
    if hold["kind"] == PROMISE and kept:
        changes += [HoldEnded(case.id, hold["id"], "kept", now),
                    Note(case.id, now, "promise", f"promise kept: {format_amount(paid_since, invoice.currency)} "
                                                  "paid")]
    elif case.state in ENDED_STATES or invoice.status != "open":
        return [HoldEnded(case.id, hold["id"], case.state, now)]
    elif case.state == "open":         # a person resumed the case: the hold is lifted, nothing more to do
        return [HoldEnded(case.id, hold["id"], "lifted", now)]
    elif hold["kind"] == PROMISE:
        text = (f"Promise broken: {invoice.number or invoice.id} was promised by {shown_day(hold['until'])}; "
                f"{format_amount(invoice.amount_remaining, invoice.currency)} still open")
        changes += [HoldEnded(case.id, hold["id"], "broken", now), Note(case.id, now, "promise", text.lower()
                                                                        + ": back to the sequence"),
                    NotifyPerson(case.id, f"promise-broken-{hold['id']}", text)]
    else:
        changes += [HoldEnded(case.id, hold["id"], "ended", now),
                    Note(case.id, now, "dispute", f"dispute hold ended on {shown_day(hold['until'])}: back to the "
                                                  "sequence")]
    if case.state == "paused" and (case.row.get("held_because") or "").startswith(HELD) and invoice.status == "open":
        changes.append(Resume(case.id))
    return changes


def _ended(ledger: Ledger, c: HoldEnded, now: datetime, applied: Applied) -> None:
    store.end_hold(ledger.conn, c.hold_id, c.outcome, c.at)


case_changes._APPLY[HoldEnded] = _ended


def _register() -> None:
    reconcile._SIGNALS["hold_ended"] = hold_ended   # applied like a provider signal, to its invoice's case


_register()
