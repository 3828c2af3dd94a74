"""Aging and DSO in every `report` format: tables (terminal, markdown, HTML) and CSV rows. JSON is the section's
dataclass as it is (`receivables` in the report)."""

from __future__ import annotations

from collections.abc import Iterator

from dunctl.money import format_amount, to_major
from dunctl.receivables.aging import ReceivablesSection


def money(amount: int, currency: str) -> str:
    return format_amount(amount, currency)


def count(value: int) -> str:
    return f"{value:,}"


def tables(section: ReceivablesSection | None) -> list[tuple]:
    """(name, title, columns, rows, note) of each table: dunctl/report_render.py makes them its Tables (this module
    does not import it: the report imports this one)."""
    if section is None or not section.anything:
        return []
    aging = ("aging", "Aging: open amounts by days past the due date", ["Bucket", "Currency", "Invoices",
                                                                              "Amount"],
                  [[r.bucket, r.currency.upper(), count(r.count), money(r.amount, r.currency)] for r in section.aging],
                  f"As of {section.as_of}. Net-terms invoices from their due date; card invoices from their first "
                  "failed payment. Never added across currencies.")
    dso = ("dso", "DSO (days sales outstanding, countback)", ["Currency", "Days", "Open balance",
                                                                   "Periods walked back"],
                [[d.currency.upper(), "more than 360" if d.days is None else f"{d.days:g}",
                  money(d.receivables, d.currency), str(d.periods)] for d in section.dso],
                f"{section.dso[0].window}." if section.dso else None)
    holds = ("promises", "Promises to pay and disputed invoices", ["Kind", "Kept", "Broken", "Open", "Other"],
                  [[kind, *(count(counts.get(k, 0)) for k in ("kept", "broken", "open")),
                    count(sum(n for k, n in counts.items() if k not in ("kept", "broken", "open")))]
                   for kind, counts in (("promise", section.promises), ("dispute", section.disputes)) if counts],
                  "Ended in the report's period, by the day each ended; open: at the period's end. Kept: paid by "
                  "the date; broken: the date passed unpaid (a person was told); other: lifted by a person, or the "
                  "invoice was voided or written off.")
    closed = ("closed_as", "Closed by a person", ["Outcome", "Currency", "Cases", "Received", "Written off"],
              [[r.outcome.replace("_", " "), r.currency.upper(), count(r.count), money(r.received, r.currency),
                money(r.written_off, r.currency)] for r in section.closed_as],
              "Closed in the report's period. Collected: the whole amount came in; settled: an agreed lesser "
              "amount came in and the rest was written off; the month-end journal books each on the same day.")
    return [aging, dso] + [t for t in (holds, closed) if t[3]]


def csv_rows(section: ReceivablesSection | None) -> Iterator[dict]:
    """`aging` rows (key: the bucket; cases: invoices; value: the amount, major units) and `dso` rows (key: the
    currency; value: days, empty beyond the window), and `closed_as` rows (key: collected, settled or written_off;
    amount_recovered: what came in; value: what was written off; both major units)."""
    if section is None:
        return
    for r in section.aging:
        yield {"dimension": "aging", "key": r.bucket, "currency": r.currency, "cases": r.count,
               "value": to_major(r.amount, r.currency)}
    for d in section.dso:
        yield {"dimension": "dso", "key": d.currency, "currency": d.currency, "value": d.days,
               "revenue_at_risk": to_major(d.receivables, d.currency)}
    for kind, counts in (("promises", section.promises), ("disputes", section.disputes)):
        for outcome, n in sorted(counts.items()):
            yield {"dimension": kind, "key": outcome, "value": n}
    for r in section.closed_as:
        yield {"dimension": "closed_as", "key": r.outcome, "currency": r.currency, "cases": r.count,
               "amount_recovered": to_major(r.received, r.currency), "value": to_major(r.written_off, r.currency)}
