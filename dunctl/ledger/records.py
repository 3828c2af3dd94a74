"""Typed records out of the ledger: times as datetimes, JSON decoded once, read-only.

The tick works on these, never on raw rows. `row` keeps the stored row for the two edges that want plain data:
templates (which index by column name) and `--json` output.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import itemgetter
from typing import Any

from dunctl.clock import from_iso

# Columns stored as text that the records hand out decoded.
_JSON = {"metadata", "lines", "decline", "data"}
_TIMES = {"first_failed_at", "failed_at", "paid_at", "voided_at", "uncollectible_at", "created_at",
          "next_payment_attempt", "opened_at", "closed_at", "recovered_at", "escalated_at", "disputed_at",
          "payment_method_changed_at", "next_due_at", "last_action_at", "due_at", "claimed_at", "finished_at",
          "canceled_at", "updated_at", "synced_at", "at"}
_EMPTY_JSON = {"{}": dict, "[]": list}


def _json_decoder(name: str):
    # an empty column decodes to a fresh container for every record (None for a missing decline)
    empty = (lambda: None) if name == "decline" else (dict if name in ("metadata", "data") else list)

    def decode(value: Any) -> Any:
        if value is None or value == "":
            return empty()
        if value in _EMPTY_JSON:     # most metadata: no parser call for it
            return _EMPTY_JSON[value]()
        return json.loads(value)
    return decode


def _decoder(name: str):
    """How a column's stored text becomes the record's value (None: as stored)."""
    if name in _TIMES:
        return from_iso
    if name in _JSON:
        return _json_decoder(name)
    return None


@dataclass(frozen=True)
class _Record:
    """Build a record from a row: every dataclass field from the column of the same name."""

    # The stored row itself (keyword-only, so each record's own fields keep their order and defaults).
    row: dict = field(repr=False, compare=False, default_factory=dict, kw_only=True)

    @classmethod
    def _columns(cls) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
        """(the fields kept as stored, (field, decoder) for the others), every field but `row`, worked out once
        per class: a tick builds thousands."""
        columns = cls.__dict__.get("_record_columns")
        if columns is None:
            named = [(f.name, _decoder(f.name)) for f in fields(cls) if f.name != "row"]
            columns = (tuple(name for name, decode in named if decode is None),
                       tuple((name, decode) for name, decode in named if decode is not None))
            type.__setattr__(cls, "_record_columns", columns)
        return columns

    @classmethod
    def reader(cls, names: tuple[str, ...]) -> Callable[[tuple], Any]:
        """What `from_row` does for rows of these columns, in this order, as they come from a cursor: each field's
        place in the row is found once for a query (the caller keeps it while the query's columns are the same),
        not looked up by name in a dict per row (a bundle's read builds three records a case)."""
        plain, decoded = cls._columns()
        at = {name: n for n, name in enumerate(names)}
        given = tuple(name for name in plain if name in at)
        missing = {name: None for name in plain if name not in at}
        take = itemgetter(*(at[name] for name in given)) if len(given) > 1 else None
        decode_at = tuple((name, at.get(name), decode) for name, decode in decoded)

        def build(values: tuple):
            record = object.__new__(cls)
            kept = record.__dict__
            if take is not None:
                kept.update(zip(given, take(values)))
            else:
                kept.update({name: values[at[name]] for name in given})
            kept.update(missing)
            for name, n, decode in decode_at:
                kept[name] = decode(None if n is None else values[n])
            kept["row"] = dict(zip(names, values))
            return record
        return build

    @classmethod
    def from_row(cls, row: dict | None):
        if row is None:
            return None
        get = row.get
        record = object.__new__(cls)
        # Every field is given, so the generated __init__ (one object.__setattr__ per field, for a frozen
        # dataclass) is skipped: a tick builds thousands of these.
        plain, decoded = cls._columns()
        values = record.__dict__
        values.update({name: get(name) for name in plain})
        values.update({name: decode(get(name)) for name, decode in decoded})
        values["row"] = row
        return record


@dataclass(frozen=True)
class InvoiceRecord(_Record):
    id: str
    customer_id: str
    subscription_id: str | None
    number: str | None
    currency: str
    amount_due: int
    amount_paid: int
    amount_remaining: int
    status: str
    billing_reason: str | None
    attempt_count: int
    next_payment_attempt: datetime | None
    hosted_invoice_url: str | None
    payment_method_id: str | None
    payment_method_type: str | None
    metadata: dict
    lines: list
    created_at: datetime | None
    first_failed_at: datetime | None
    failed_at: datetime | None
    decline: dict | None
    failure_type: str | None
    paid_at: datetime | None
    livemode: int

    @property
    def collection_method(self) -> str:
        return self.row.get("collection_method") or "charge_automatically"

    @property
    def due_date(self) -> datetime | None:
        """A net-terms invoice's due date (dunctl/receivables); None for a card invoice."""
        return from_iso(self.row.get("due_date"))


@dataclass(frozen=True)
class CustomerRecord(_Record):
    id: str
    name: str | None
    email: str | None
    phone: str | None
    metadata: dict
    preferred_locale: str | None
    timezone: str | None

    @property
    def dunning_off(self) -> bool:
        return str(self.metadata.get("dunning", "")).strip().lower() == "off"


@dataclass(frozen=True)
class SubscriptionRecord(_Record):
    id: str
    customer_id: str
    status: str
    metadata: dict
    usage_based: int


@dataclass(frozen=True)
class CaseRecord(_Record):
    id: int
    invoice_id: str
    customer_id: str
    subscription_id: str | None
    currency: str
    amount_due: int
    amount_paid_at_open: int
    amount_remaining: int
    segment: str
    sequence: str
    sequence_hash: str
    failure_type: str
    decline_code: str | None
    attempts: int
    state: str
    with_person: int
    first_failed_at: datetime
    opened_at: datetime
    payment_method_changed_at: datetime | None
    next_due_at: datetime | None
    next_step: str | None
    arm: str | None = None      # the experiment arm the case was assigned when it opened ('holdout': no action)

    @property
    def is_open(self) -> bool:
        return self.state == "open"


@dataclass(frozen=True)
class ActionRecord(_Record):
    id: int
    case_id: int
    kind: str                 # step | system
    step_id: str
    action: str
    audience: str | None
    status: str
    due_at: datetime | None
    finished_at: datetime | None
    tries: int
    resends: int
    recipient: str | None


@dataclass(frozen=True)
class SignalRecord(_Record):
    id: int
    kind: str
    at: datetime
    invoice_id: str | None
    customer_id: str | None
    detail: str | None
    subscription_id: str | None = None
    payment_method_id: str | None = None
    data: dict | None = None


@dataclass(frozen=True)
class CaseBundle:
    """Everything the tick needs to decide and act on one case, loaded once."""

    case: CaseRecord
    invoice: InvoiceRecord
    customer: CustomerRecord | None
    subscription: SubscriptionRecord | None
    actions: list[ActionRecord]
    contacts: tuple[datetime, ...] = ()   # customer messages to this customer lately, across its cases

    def steps(self) -> dict[str, ActionRecord]:
        return {a.step_id: a for a in self.actions if a.kind == "step"}

    def system(self) -> dict[str, ActionRecord]:
        return {a.step_id: a for a in self.actions if a.kind == "system"}
