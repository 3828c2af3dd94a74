"""The report as JSON, CSV, Markdown and HTML. Knows nothing of the terminal: the Rich table lives in the CLI,
built from the same `tables()` so every human format shows the same cells."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from dunctl.money import format_amount, to_major
from dunctl.receivables.report import csv_rows as receivables_rows, tables as receivables_tables
from dunctl.report import CASE_COLUMNS, Headline, Report

DASH = "—"
TITLES = {"segment": "By segment", "failure_type": "By failure type (at first failure)", "sequence": "By sequence",
          "channel": "Recovery by channel (last touch before payment)", "attempt": "Retry success by attempt",
          "currency": "By currency", "cohort": "By cohort month of first failure"}
KEY_NAMES = {"segment": "Segment", "failure_type": "Failure type", "sequence": "Sequence", "channel": "Channel",
             "currency": "Currency", "cohort": "Cohort"}


def churn_cell(churn) -> str:
    """The churn line, per month in customers (Recurly's definition): the pooled rate of the whole months, else
    the latest month's (saying it is partial), else what cannot be computed and how to give it."""
    churned = sum(m.churned_customers for m in churn.months)
    whole = [m for m in churn.months if not m.partial and m.active_customers is not None]
    if churn.monthly_rate is not None:
        return (f"{percent(churn.monthly_rate)} of customers per month ({sum(m.churned_customers for m in whole):,}"
                f" of {sum(m.active_customers for m in whole):,} customer-months, {len(whole)} whole month"
                f"{'s' if len(whole) != 1 else ''})")
    known = [m for m in churn.months if m.rate is not None]
    if known:
        m = known[-1]
        return (f"{percent(m.rate)} of customers in {m.month} so far ({m.churned_customers:,} of "
                f"{m.active_customers:,}; partial month, {m.since[:10]} to {m.until[:10]})")
    return f"not computed ({churned:,} customers churned): pass --active-customers N"


def churn_note(churn) -> str:
    return (f"Involuntary churn: customers whose subscription ended by exhausted dunning in a UTC month / customers "
            f"active at its start ({churn.customer_denominator}); a customer with add-ons counts once.")


def churn_table(churn) -> Table:
    return Table("churn", "Involuntary churn by month (customers)",
                 ["Month", "Window (UTC)", "Churned customers", "Active at start", "Rate"],
                 [[m.month + (" (partial)" if m.partial else ""), f"{m.since[:10]} to {m.until[:10]}",
                   count(m.churned_customers), count(m.active_customers), percent(m.rate)] for m in churn.months],
                 churn_note(churn))


# -- cells ---------------------------------------------------------------------------------------------------------


def percent(rate: float | None) -> str:
    return DASH if rate is None else f"{rate * 100:.1f}%"


def days(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f} d"


def censored_days(value: float | None, d) -> str:
    """Days to recovery, saying when open cases may still recover later: then it is a lower bound, not known."""
    if value is None or not d.censored:
        return days(value)
    return f"at least {days(value)} (not yet known: {d.still_open:,} cases still open)"


def money(amount: int | None, currency: str) -> str:
    return DASH if amount is None else format_amount(amount, currency)


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def period_text(h: Headline) -> str:
    if not h.since and not h.until:
        return "all cases in the ledger"
    return f"cases first failed from {h.since or 'the start'} to before {h.until or 'now'}"


# -- tables shared by the table, md and html formats ----------------------------------------------------------------


@dataclass
class Table:
    name: str                     # stable id: headline, currencies, segment, ..., attempt, recovery_curve
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str | None = None


def rate_of(rate: float | None, numerator: int | None, denominator: int | None) -> str:
    """A rate with the counts it is made of, so its denominator is on the page: '33.3% (3 of 9)'."""
    if rate is None:
        return DASH
    return f"{percent(rate)} ({numerator:,} of {denominator:,})"


def headline_rows(h: Headline) -> list[list[str]]:
    """Metric / value lines of the headline, money per currency, for `status` and every human format. The first
    line is recovered of failed invoices: the anchors' definition (Recurly, Baremetrics, Churn Buster), the one a
    board deck can quote; recovered of ended cases sits under it, named as what it is."""
    rows = [["Recovered of failed invoices", rate_of(h.recovered_of_failed, h.recovered, h.failed_invoices)],
            ["Recovered of ended cases", rate_of(h.recovered_of_ended, h.recovered, h.ended)],
            ["Failed invoices", count(h.failed_invoices)],
            ["Open (incl. paused)", count(h.open)],
            ["Ended", count(h.ended)],
            ["Recovered", count(h.recovered)]]
    for c in h.currencies:
        code = c.currency.upper()
        rows += [[f"Recovered amount ({code})", money(c.amount_recovered, c.currency)],
                 [f"Recovered of failed amount ({code})",
                  _amount_rate(c.amount_recovered_of_failed, c.amount_recovered, c.amount_failed, c.currency)],
                 [f"Recovered of ended amount ({code})",
                  _amount_rate(c.amount_recovered_of_ended, c.amount_recovered, c.amount_at_stake, c.currency)]]
    rows += [[f"Revenue at risk now ({c.currency.upper()})", money(c.revenue_at_risk, c.currency)]
             for c in h.currencies]
    d = h.days_to_recovery
    rows += [["Days to recovery, median", censored_days(d.median, d)],
             ["Days to recovery, mean", censored_days(d.mean, d)],
             ["Days to recovery, p90", censored_days(d.p90, d)],
             ["Involuntary churn", churn_cell(h.churn)],
             ["Cases with a person", count(h.with_person)],
             ["Closed by a person", count(h.closed_by_person)]]
    if h.planned:
        rows.append(["Planned in monitor mode, not sent", ", ".join(f"{n:,} {a}" for a, n in h.planned.items())])
    return rows


def _amount_rate(rate: float | None, numerator: int, denominator: int, currency: str) -> str:
    if rate is None:
        return DASH
    return f"{percent(rate)} ({money(numerator, currency)} of {money(denominator, currency)})"


# The columns of a breakdown row and of the money-by-currency table, after the key and the currency.
RATE_COLUMNS = ["Recovered of failed", "Recovered of ended", "Failed amount", "At stake (ended)",
                "Recovered amount", "Amount recovered of failed", "Amount recovered of ended"]


def rate_cells(r) -> list[str]:
    """The cells of RATE_COLUMNS for a breakdown row or a currency's figures."""
    return [percent(r.recovered_of_failed), percent(r.recovered_of_ended), money(r.amount_failed, r.currency),
            money(r.amount_at_stake, r.currency), money(r.amount_recovered, r.currency),
            percent(r.amount_recovered_of_failed), percent(r.amount_recovered_of_ended)]


AMOUNT_COLUMNS = {"Failed amount", "At stake (ended)", "Recovered amount", "Revenue at risk"}


def with_currency_headers(table: Table) -> Table:
    """Every amount header names its currency (issue 24): the one currency of all the rows ('Recovered amount
    (EUR)'), or 'each row's currency' where rows differ, never a bare header over mixed currencies."""
    if "Currency" not in table.columns:
        return table
    at = table.columns.index("Currency")
    codes = {row[at] for row in table.rows}
    unit = codes.pop() if len(codes) == 1 else "each row's currency"
    columns = [f"{c} ({unit})" if c in AMOUNT_COLUMNS else c for c in table.columns]
    return Table(table.name, table.title, columns, table.rows, table.note)


def tables(report: Report) -> list[Table]:
    return [with_currency_headers(t) for t in _tables(report)]


def _tables(report: Report) -> list[Table]:
    h = report.headline
    result = [
        Table("headline", "Headline", ["Metric", "Value"], headline_rows(h),
              f"Cohort: {period_text(h)}. {churn_note(h.churn)}"),
        Table("currencies", "Money by currency (never added across currencies)",
              ["Currency", "Cases", "Ended", "Recovered", *RATE_COLUMNS, "Revenue at risk"],
              [[c.currency.upper(), count(c.cases), count(c.ended), count(c.recovered), *rate_cells(c),
                money(c.revenue_at_risk, c.currency)] for c in h.currencies]),
    ]
    for dimension in report.dimensions:
        if dimension == "attempt":
            result.append(Table(
                "attempt", TITLES["attempt"], ["Attempt", "Reached", "Recovered at it", "Success rate"],
                [[str(r.attempt), count(r.reached), count(r.recovered), percent(r.success_rate)]
                 for r in report.retry_success],
                "Attempt 1 is the payment that failed; reached = cases whose furthest attempt is n or later."))
        elif dimension == "channel":
            result.append(Table(
                "channel", TITLES["channel"],
                ["Channel", "Currency", "Recovered", "Share of recovered", "Recovered amount", "With a person"],
                [[r.key, r.currency.upper(), count(r.recovered), percent(r.share_of_recovered),
                  money(r.amount_recovered, r.currency), count(r.with_person)]
                 for r in report.breakdowns.get("channel", [])],
                f"Last email, SMS, retry or escalation done within "
                f"{report.attribution_window_seconds / 86400:g} days before payment."))
        else:
            result.append(Table(
                dimension, TITLES[dimension],
                [KEY_NAMES[dimension], "Currency", "Cases", "Ended", "Recovered", *RATE_COLUMNS,
                 "Revenue at risk", "With a person"],
                [[r.key, r.currency.upper(), count(r.cases), count(r.ended), count(r.recovered), *rate_cells(r),
                  money(r.revenue_at_risk, r.currency), count(r.with_person)]
                 for r in report.breakdowns.get(dimension, [])]))
    result.append(churn_table(h.churn))
    result.append(Table(
        "recovery_curve", "Recovery curve", ["Day", "Recovered (cumulative)", "Share of failed invoices"],
        [[str(p.day), count(p.recovered), percent(p.share)] for p in report.recovery_curve],
        "Day d: recovered less than d + 1 days after the first failure, over all the cohort's cases."))
    pre = report.predunning
    if pre is not None and pre.anything:     # pre-dunning notices (dunctl/notices/report.py)
        result.append(Table("predunning", "Pre-dunning: notices before a payment failed", ["Metric", "Value"],
                            [list(row) for row in pre.rows()],
                            f"Period: {pre.period_text()} (by when the notice was sent, not the cohort). "
                            f"Renewals: {pre.comparison_note}."))

    return result + [Table(*table) for table in receivables_tables(report.receivables)]


# -- json ----------------------------------------------------------------------------------------------------------


def to_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2, sort_keys=False) + "\n"


# -- csv -----------------------------------------------------------------------------------------------------------

CSV_COLUMNS = ["dimension", "key", "currency", "cases", "ended", "recovered", "recovered_of_failed",
               "recovered_of_ended", "amount_failed", "amount_at_stake", "amount_recovered",
               "amount_recovered_of_failed", "amount_recovered_of_ended", "revenue_at_risk", "with_person",
               "share_of_recovered", "success_rate", "share", "customers_active", "customers_churned", "value", "filter"]


def _csv_value(value) -> str:
    return "" if value is None else str(value)


def csv_rows(report: Report) -> Iterator[dict]:
    """One dict per CSV line: amounts in major units next to their currency, rates as fractions."""
    h = report.headline

    def amount(value, currency):
        return "" if value is None else to_major(value, currency)

    def figures(r) -> dict:
        return {"cases": r.cases, "ended": r.ended, "recovered": r.recovered,
                "recovered_of_failed": r.recovered_of_failed, "recovered_of_ended": r.recovered_of_ended,
                **{k: amount(getattr(r, k), r.currency) for k in ("amount_failed", "amount_at_stake",
                                                                  "amount_recovered", "revenue_at_risk")},
                "amount_recovered_of_failed": r.amount_recovered_of_failed,
                "amount_recovered_of_ended": r.amount_recovered_of_ended}

    yield {"dimension": "total", "key": "all", "cases": h.failed_invoices, "ended": h.ended,
           "recovered": h.recovered, "recovered_of_failed": h.recovered_of_failed,
           "recovered_of_ended": h.recovered_of_ended, "with_person": h.with_person, "filter": h.filter}
    for c in h.currencies:
        yield {"dimension": "total", "key": "all", "currency": c.currency, **figures(c),
               "filter": {**h.filter, "currency": c.currency}}
    d = h.days_to_recovery
    metrics = [("open", h.open), ("closed_by_person", h.closed_by_person),
               *((f"ended_{state}", n) for state, n in h.ended_by_state.items()),
               ("days_to_recovery_median", d.median), ("days_to_recovery_mean", d.mean),
               ("days_to_recovery_p90", d.p90), ("days_to_recovery_censored_by_open_cases", d.still_open
                                                  if d.censored else 0), ("churned_subscriptions", h.churn.churned_subscriptions),
               ("active_subscriptions", h.churn.active_subscriptions), ("involuntary_churn_rate", h.churn.rate),
               ("involuntary_churn_denominator", h.churn.denominator or h.churn.unknown),
               ("involuntary_churn_customers_per_month", h.churn.monthly_rate),
               ("involuntary_churn_customers_denominator", h.churn.customer_denominator),
               ("attribution_window_seconds", report.attribution_window_seconds)]
    for name, value in metrics:
        yield {"dimension": "headline", "key": name, "value": value,
               "filter": h.churn.filter if "churn" in name or "subscriptions" in name else h.filter}
    for dimension in report.dimensions:
        if dimension == "attempt":
            for r in report.retry_success:
                yield {"dimension": "attempt", "key": r.attempt, "cases": r.reached, "recovered": r.recovered,
                       "success_rate": r.success_rate, "filter": r.filter}
            continue
        for r in report.breakdowns.get(dimension, []):
            yield {"dimension": dimension, "key": r.key, "currency": r.currency, **figures(r),
                   "with_person": r.with_person, "share_of_recovered": r.share_of_recovered, "filter": r.filter}
    for m in h.churn.months:
        yield {"dimension": "churn_month", "key": m.month, "customers_active": m.active_customers,
               "customers_churned": m.churned_customers, "value": m.rate,
               "filter": {"churned": 1, "closed_at": {"gte": m.since, "lt": m.until}}}
    for p in report.recovery_curve:
        yield {"dimension": "recovery_curve", "key": p.day, "cases": h.failed_invoices, "recovered": p.recovered,
               "share": p.share, "filter": h.filter}
    if report.predunning is not None:        # counts of notices, not of cases: no filter
        for name, value in report.predunning.metrics():
            yield {"dimension": "predunning", "key": name, "value": value}

    yield from receivables_rows(report.receivables)


def to_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(report):
        row = {k: json.dumps(v, sort_keys=True) if k == "filter" else _csv_value(v) for k, v in row.items()}
        writer.writerow(row)
    return out.getvalue()


# -- markdown ------------------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(report: Report) -> str:
    h = report.headline
    lines = ["# Recovery report", "", f"Cohort: {period_text(h)}. Generated {h.generated_at}.", ""]
    for table in tables(report):
        lines += [f"## {table.title}", ""]
        if not table.rows:
            lines += ["_No rows._", ""]
        else:
            lines.append("| " + " | ".join(table.columns) + " |")
            lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|")
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        if table.note:
            lines += [table.note, ""]
    lines += ["Definitions: see docs/metrics.md in the dunctl repository.", ""]
    return "\n".join(lines)


# -- html ----------------------------------------------------------------------------------------------------------

# The recovery curve is drawn in a 1000 x 1000 box stretched to its container; every text on it is HTML laid over
# the plot at percentages, so labels keep their CSS size (>= 12 px) at any width, from a phone to a desktop.
CURVE_MARKS = (14, 30)            # days whose recovered share is marked on the curve
CURVE_MIN_DAYS = 30               # the x axis reaches at least day 30, so both marks are on it


def _x_ticks(last: int) -> list[int]:
    ticks = {0, 7, 14, 30, last} | set(range(60, last + 1, 30))
    return sorted(t for t in ticks if t <= last and (t == last or last - t >= last / 12))


def _curve_chart(report: Report) -> dict | None:
    points = report.recovery_curve
    if not points:
        return None
    last = max(points[-1].day, CURVE_MIN_DAYS)

    def x(day: float) -> float:
        return round(100 * day / last, 2)

    def share_at(day: int) -> float:
        return points[min(day, points[-1].day)].share

    line = [(p.day, p.share) for p in points]
    if points[-1].day < last:          # cumulative: flat after the last recovery
        line.append((last, points[-1].share))
    marks = []
    for day in CURVE_MARKS:
        share = share_at(day)
        marks.append({"day": day, "x": x(day), "y": round(100 * (1 - share), 2), "share": percent(share),
                      "anchor": "end" if x(day) > 80 else "middle"})
    return {"points": " ".join(f"{round(10 * x(d), 1)},{round(1000 * (1 - s), 1)}" for d, s in line),
            "y_ticks": [{"value": v, "y": 100 - v} for v in (0, 25, 50, 75, 100)],
            "x_ticks": [{"day": d, "x": x(d)} for d in _x_ticks(last)],
            "marks": marks, "last": last,
            "summary": "; ".join(f"day {m['day']}: {m['share']}" for m in marks)}


def _bars(items: list[tuple[str, float, str]]) -> list[dict] | None:
    """Horizontal bars on a 0-100% scale, one per (label, fraction 0..1, text)."""
    if not items:
        return None
    return [{"label": label, "percent": round(100 * max(0.0, min(value, 1.0)), 2), "text": text}
            for label, value, text in items]


def html_tables(report: Report) -> list[Table]:
    """The tables as the page shows them: a breakdown's currency folded into its first column ('default · USD'),
    since every amount already carries its currency."""
    result = []
    for table in tables(report):
        if len(table.columns) > 2 and table.columns[1] == "Currency":
            table = Table(table.name, table.title, [table.columns[0]] + table.columns[2:],
                          [[f"{row[0]} · {row[1]}"] + row[2:] for row in table.rows], table.note)
        # A value ('CHF 12.00', '1,234.500 KWD') never breaks; a phrase ('0.2% (1 of 500 subscriptions)') may.
        rows = [[row[0], *(cell if "(" in cell else cell.replace(" ", "\u00a0") for cell in row[1:])]
                for row in table.rows]
        result.append(Table(table.name, table.title, table.columns, rows, table.note))
    return result


def html_context(report: Report) -> dict:
    channel_totals: dict[str, int] = {}
    for r in report.breakdowns.get("channel", []):
        channel_totals[r.key] = channel_totals.get(r.key, 0) + r.recovered
    recovered = report.headline.recovered or 1
    return {
        "report": report, "h": report.headline, "period": period_text(report.headline),
        "tables": html_tables(report),
        "curve": _curve_chart(report),
        "retry_bars": _bars([(f"attempt {r.attempt}", r.success_rate or 0.0,
                              f"{percent(r.success_rate)} ({r.recovered:,}/{r.reached:,})")
                             for r in report.retry_success]),
        "channel_bars": _bars([(name, n / recovered, f"{n:,} ({percent(n / recovered)})")
                               for name, n in sorted(channel_totals.items(), key=lambda kv: -kv[1])]),
    }


def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape   # lazy: see dunctl/lazy.py

    return Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                       autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def to_html(report: Report) -> str:
    return _environment().get_template("report.html.j2").render(**html_context(report))


RENDERERS = {"json": to_json, "csv": to_csv, "md": to_markdown, "html": to_html}


# -- the case listing ----------------------------------------------------------------------------------------------


def cases_csv(rows: Iterable[dict], out: io.TextIOBase) -> None:
    """The case listing as CSV, amounts in major units (the columns of CASE_COLUMNS)."""
    writer = csv.DictWriter(out, CASE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (to_major(v, row["currency"]) if k.startswith(("amount_", "revenue_")) and v is not None
                             else _csv_value(v)) for k, v in row.items()})


def cases_json(rows: Iterable[dict], out: io.TextIOBase) -> None:
    """The case listing as JSON lines, one case per line, amounts in minor units."""
    for row in rows:
        out.write(json.dumps(row, sort_keys=False) + "\n")


def cases_markdown(rows: Iterable[dict], out: io.TextIOBase) -> None:
    columns = ["case_id", "invoice_id", "state", "segment", "failure_type", "currency", "first_failed_at",
               "days_to_recovery", "channel", "reached_attempt", "amount_at_stake", "amount_recovered",
               "revenue_at_risk", "in_cohort"]
    out.write("| " + " | ".join(columns) + " |\n|" + "|".join("---" for _ in columns) + "|\n")
    for row in rows:
        cells = [money(row[c], row["currency"]) if c.startswith(("amount_", "revenue_")) and row[c] is not None
                 else _csv_value(row[c]) for c in columns]
        out.write("| " + " | ".join(_md_cell(c) for c in cells) + " |\n")


CASE_RENDERERS = {"csv": cases_csv, "json": cases_json, "md": cases_markdown}
