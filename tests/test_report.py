"""`dunctl report`: every metric computed by hand on small ledgers built for the purpose, then compared with the
report in every format (json, csv, md, html, the Rich table) and traced back to the cases behind it."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest

from dunctl.ledger import Ledger
from dunctl.report import Period, build_report, case_listing, headline
from tests.helpers import cli, open_engine_ledger, starter

NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
WIDE = {"COLUMNS": "250"}


# -- building ledgers --------------------------------------------------------------------------------------------


class Book:
    """Writes cases, actions and subscriptions straight into a ledger, as the engine leaves them."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.ids: dict[str, int] = {}

    def case(self, name: str, *, state: str, first_failed_at: str, currency: str = "usd", amount_due: int = 1000,
             paid_at_open: int = 0, amount_recovered: int = 0, recovered_at: str | None = None,
             closed_at: str | None = None, segment: str = "default", sequence: str = "standard",
             failure_type: str = "card_soft", attempts: int = 1, recovered_attempt: int | None = None,
             with_person: int = 0, churned: int = 0, subscription_id: str | None = None) -> int:
        db = self.ledger.db
        invoice_id = f"in_{name}"
        remaining = amount_due - paid_at_open if state in ("open", "paused") else 0
        db.execute("""INSERT INTO invoices(id, customer_id, subscription_id, currency, amount_due, amount_paid,
                        amount_remaining, status, created_at, synced_at, pending)
                      VALUES (?, 'cus_1', ?, ?, ?, 0, ?, 'open', ?, ?, 0)""",
                   [invoice_id, subscription_id, currency, amount_due, remaining, first_failed_at, first_failed_at])
        if closed_at is None and state not in ("open", "paused"):
            closed_at = recovered_at
        cursor = db.execute(
            """INSERT INTO cases(invoice_id, customer_id, subscription_id, currency, amount_due, amount_paid_at_open,
                 amount_remaining, amount_recovered, segment, sequence, sequence_hash, sequence_def, failure_type,
                 first_failure_type, attempts, state, with_person, first_failed_at, opened_at, closed_at,
                 recovered_at, recovered_attempt, recovered_by, churned)
               VALUES (?, 'cus_1', ?, ?, ?, ?, ?, ?, ?, ?, 'h', '{}', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [invoice_id, subscription_id, currency, amount_due, paid_at_open, remaining, amount_recovered, segment,
             sequence, failure_type, failure_type, attempts, state, with_person, first_failed_at, first_failed_at,
             closed_at, recovered_at, recovered_attempt,
             ("retry" if recovered_attempt else "customer") if state == "recovered" else None, churned])
        self.ids[name] = cursor.lastrowid
        return cursor.lastrowid

    def action(self, name: str, step: str, action: str, finished_at: str, status: str = "done") -> None:
        self.ledger.db.execute(
            """INSERT INTO actions(case_id, step_id, action, channel, status, due_at, finished_at, idempotency_key)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [self.ids[name], step, action, action, status, finished_at, finished_at, f"{name}:{step}"])

    def every_subscription_synced(self) -> None:
        """What a sync with pre-dunning on records: it listed every active subscription (and events keep them)."""
        self.ledger.set_state("cursor", {"phase": "events", "since": 1767225600})
        self.ledger.set_state("billing_backfill_done", 1767225600)

    def subscription(self, sub_id: str, canceled_at: str | None = None) -> None:
        self.ledger.db.execute(
            "INSERT INTO subscriptions(id, customer_id, status, canceled_at) VALUES (?, 'cus_1', ?, ?)",
            [sub_id, "canceled" if canceled_at else "active", canceled_at])


@pytest.fixture
def config(tmp_path):
    return starter(tmp_path)


@pytest.fixture
def book(config):
    """Nine cases in two currencies and two cohort months; every figure below is worked out by hand."""
    b = Book(open_engine_ledger(config))
    # Recovered on day 0 (5 hours) by the second attempt; its last touch is the retry at the moment of payment.
    b.case("c1", state="recovered", first_failed_at="2026-03-01T10:00:00Z", recovered_at="2026-03-01T15:00:00Z",
           amount_due=10000, amount_recovered=10000, attempts=2, recovered_attempt=2)
    b.action("c1", "notice", "email", "2026-03-01T11:00:00Z")
    b.action("c1", "retry-1", "retry", "2026-03-01T15:00:00Z")
    # Partly paid before dunctl opened it (stake 4000); the customer paid 3.5 days in; escalated to a person.
    b.case("c2", state="recovered", first_failed_at="2026-03-02T00:00:00Z", recovered_at="2026-03-05T12:00:00Z",
           amount_due=5000, paid_at_open=1000, amount_recovered=4000, attempts=3, segment="enterprise",
           sequence="high-value", failure_type="card_update", with_person=1)
    b.action("c2", "escalate", "escalate", "2026-03-02T06:00:00Z")          # 3.25 days before payment: too early
    b.action("c2", "reminder", "email", "2026-03-03T00:00:00Z")             # 2.5 days before: the last touch
    b.action("c2", "sms", "sms", "2026-03-05T00:00:00Z", status="failed")   # not done: no touch
    b.action("c2", "pause", "pause_subscription", "2026-03-05T06:00:00Z")   # not a touch
    b.action("c2", "late", "email", "2026-03-05T13:00:00Z")                 # after payment
    # Written off after a partial payment: 3000 recovered, but not a recovered case.
    b.case("c3", state="written_off", first_failed_at="2026-03-10T00:00:00Z", closed_at="2026-04-09T00:00:00Z",
           amount_due=8000, amount_recovered=3000, attempts=4)
    # Dunning exhausted and cancelled the subscription.
    b.case("c4", state="exhausted", first_failed_at="2026-04-01T00:00:00Z", closed_at="2026-04-29T00:00:00Z",
           amount_due=2000, attempts=4, churned=1, subscription_id="sub_4")
    # Closed by a person.
    b.case("c5", state="closed", first_failed_at="2026-04-02T00:00:00Z", closed_at="2026-04-10T00:00:00Z",
           amount_due=3000, segment="enterprise", sequence="high-value", failure_type="card_update", with_person=1)
    b.case("c6", state="open", first_failed_at="2026-04-05T00:00:00Z", amount_due=7000, attempts=2)
    # Euro: recovered on day 10 by attempt 4, with no touch in the 3 days before.
    b.case("c7", state="recovered", first_failed_at="2026-04-01T00:00:00Z", recovered_at="2026-04-11T06:00:00Z",
           currency="eur", amount_due=20000, amount_recovered=20000, attempts=4, recovered_attempt=4)
    b.action("c7", "notice", "email", "2026-04-02T00:00:00Z")
    b.case("c8", state="paused", first_failed_at="2026-04-03T00:00:00Z", currency="eur", amount_due=6000,
           with_person=1)
    b.case("c9", state="voided", first_failed_at="2026-04-04T00:00:00Z", closed_at="2026-04-06T00:00:00Z",
           amount_due=1500)
    for sub in ("sub_1", "sub_2", "sub_3", "sub_4"):
        b.subscription(sub)
    b.subscription("sub_5", canceled_at="2026-01-15T00:00:00Z")
    return b


# -- parsing every format --------------------------------------------------------------------------------------


def run(config, *args) -> str:
    result = cli(config, "report", "--now", "2026-06-01T00:00:00Z", *args, env=WIDE)
    assert result.exit_code == 0, result.output
    return result.stdout


def md_tables(text: str) -> dict[str, list[list[str]]]:
    """'## Title' -> rows (header first) of the pipe table under it."""
    tables, title = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
            tables[title] = []
        elif line.startswith("|") and title and not re.fullmatch(r"\|(-+:?\|)+", line):
            tables[title].append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return tables


class _HtmlTables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current = self.row = self.cell = None
        self.figures: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs:
                self.external.append(attrs[name])
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)
        if tag == "figure":
            self.figures.append(attrs.get("id"))
        if tag == "table":
            self.current = self.tables.setdefault(attrs["data-table"], [])
        elif tag == "tr" and self.current is not None:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.replace("\xa0", " ").strip())     # no-break spaces read as spaces
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.current.append(self.row)
            self.row = None
        elif tag == "table":
            self.current = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def html_tables(text: str) -> _HtmlTables:
    parser = _HtmlTables()
    parser.feed(text)
    return parser


def terminal_has_row(text: str, cells: list[str]) -> bool:
    """A line holds these cells in order, separated only by blanks and table borders (the terminal folds the
    currency into the first column: 'default · USD')."""
    pattern = r"[\s│┃·]+".join(re.escape(c) for c in cells)
    return any(re.search(pattern, line) for line in text.splitlines())


def folded(cells: list[str]) -> list[str]:
    """A breakdown row as the HTML shows it: the currency folded into the first cell (every amount carries its
    currency, so the page has no separate currency column)."""
    return [f"{cells[0]} · {cells[1]}", *cells[2:]]


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def every_human_format(config, *args) -> dict:
    """The md and html tables keyed by table name, and the terminal text, for one report invocation."""
    md = md_tables(run(config, "--format", "md", *args))
    html = html_tables(run(config, "--format", "html", *args))
    return {"md": md, "html": html, "table": run(config, *args)}


# -- the headline ------------------------------------------------------------------------------------------------


def test_headline_matches_hand_computed_figures_in_json(config, book):
    data = json.loads(run(config, "--format", "json"))
    h = data["headline"]
    assert data["schema"] == "dunctl.report/2"
    assert (h["failed_invoices"], h["open"], h["ended"], h["recovered"]) == (9, 2, 7, 3)
    assert h["recovered_of_failed"] == round(3 / 9, 6) and h["recovered_of_ended"] == round(3 / 7, 6)
    assert h["ended_by_state"] == {"closed": 1, "exhausted": 1, "recovered": 3, "voided": 1, "written_off": 1}
    usd, eur = (next(c for c in h["currencies"] if c["currency"] == code) for code in ("usd", "eur"))
    # USD ended cases: 10000 + (5000 - 1000) + 8000 + 2000 + 3000 + 1500 at stake; 10000 + 4000 + 3000 back.
    assert (usd["cases"], usd["ended"], usd["recovered"]) == (7, 6, 2)
    assert (usd["amount_at_stake"], usd["amount_recovered"], usd["revenue_at_risk"]) == (28500, 17000, 7000)
    assert usd["amount_recovered_of_ended"] == round(17000 / 28500, 6)
    # The two open USD cases (7000 remaining) are in the amount failed, as not yet recovered.
    assert usd["amount_failed"] == 35500 and usd["amount_recovered_of_failed"] == round(17000 / 35500, 6)
    assert usd["recovered_of_failed"] == round(2 / 7, 6) and usd["recovered_of_ended"] == round(2 / 6, 6)
    assert (eur["amount_at_stake"], eur["amount_recovered"], eur["revenue_at_risk"]) == (20000, 20000, 6000)
    assert eur["amount_recovered_of_ended"] == 1.0
    # Durations 5 h, 3.5 d, 10.25 d: median the middle one, p90 at rank ceil(2.7) = 3.
    d = h["days_to_recovery"]
    assert d == {"recovered": 3, "median": 3.5, "mean": round((18000 + 302400 + 885600) / 3 / 86400, 4),
                 "p90": 10.25, "still_open": 2, "censored": True}
    # The ledger synced only the subscriptions of failed invoices: their count is not the account's, so no rate.
    assert h["churn"]["churned_subscriptions"] == 1 and h["churn"]["active_subscriptions"] is None
    assert h["churn"]["rate"] is None and "--active-subscriptions N" in h["churn"]["unknown"]
    assert (h["with_person"], h["closed_by_person"]) == (3, 1)


def test_headline_is_the_same_in_csv(config, book):
    rows = csv_rows(run(config, "--format", "csv"))
    total = next(r for r in rows if r["dimension"] == "total" and r["currency"] == "")
    assert (total["cases"], total["ended"], total["recovered"], total["with_person"]) == ("9", "7", "3", "3")
    assert float(total["recovered_of_ended"]) == pytest.approx(3 / 7, abs=1e-6)
    assert float(total["recovered_of_failed"]) == pytest.approx(3 / 9, abs=1e-6)
    usd = next(r for r in rows if r["dimension"] == "total" and r["currency"] == "usd")
    assert (usd["amount_at_stake"], usd["amount_recovered"], usd["revenue_at_risk"]) == ("285.00", "170.00", "70.00")
    assert float(usd["amount_recovered_of_ended"]) == pytest.approx(17000 / 28500, abs=1e-6)
    assert usd["amount_failed"] == "355.00"
    metrics = {r["key"]: r["value"] for r in rows if r["dimension"] == "headline"}
    assert metrics["days_to_recovery_median"] == "3.5" and metrics["days_to_recovery_p90"] == "10.25"
    assert metrics["days_to_recovery_mean"] == "4.6528"
    assert (metrics["churned_subscriptions"], metrics["active_subscriptions"]) == ("1", "")
    assert metrics["involuntary_churn_rate"] == "" and metrics["closed_by_person"] == "1"
    assert "--active-subscriptions N" in metrics["involuntary_churn_denominator"]
    assert metrics["open"] == "2"


HEADLINE_CELLS = [["Failed invoices", "9"], ["Recovered", "3"], ["Recovered amount (USD)", "$170.00"],
                  ["Recovered amount (EUR)", "€200.00"], ["Recovered of failed invoices", "33.3% (3 of 9)"],
                  ["Recovered of ended cases", "42.9% (3 of 7)"],
                  ["Recovered of failed amount (USD)", "47.9% ($170.00 of $355.00)"],
                  ["Recovered of ended amount (USD)", "59.6% ($170.00 of $285.00)"],
                  ["Recovered of ended amount (EUR)", "100.0% (€200.00 of €200.00)"],
                  ["Revenue at risk now (USD)", "$70.00"], ["Revenue at risk now (EUR)", "€60.00"],
                  # Two cases are still open and may recover later: the figures are lower bounds (issue 24).
                  ["Days to recovery, median", "at least 3.5 d (not yet known: 2 cases still open)"],
                  ["Days to recovery, mean", "at least 4.7 d (not yet known: 2 cases still open)"],
                  ["Days to recovery, p90", "at least 10.2 d (not yet known: 2 cases still open)"],
                  ["Involuntary churn", "not computed (1 customers churned): pass --active-customers N"],
                  ["Cases with a person", "3"], ["Closed by a person", "1"]]


def test_headline_is_the_same_in_md_html_and_the_terminal(config, book):
    formats = every_human_format(config)
    md_rows = formats["md"]["Headline"][1:]
    html_rows = formats["html"].tables["headline"][1:]
    # The headline leads with recovered of failed invoices, the anchors' definition (issue 24).
    assert md_rows[0] == html_rows[0] == ["Recovered of failed invoices", "33.3% (3 of 9)"]
    for cells in HEADLINE_CELLS:
        assert cells in md_rows, cells
        assert cells in html_rows, cells
        assert terminal_has_row(formats["table"], cells), cells


# -- breakdowns --------------------------------------------------------------------------------------------------

SEGMENTS = {  # (segment, currency): cases, ended, recovered, rate, at stake, recovered amount, at risk, person
    ("default", "usd"): (5, 4, 1, 0.25, 21500, 13000, 7000, 0),
    ("enterprise", "usd"): (2, 2, 1, 0.5, 7000, 4000, 0, 2),
    ("default", "eur"): (2, 1, 1, 1.0, 20000, 20000, 6000, 1),
}


def test_segment_breakdown_in_json_and_csv(config, book):
    rows = json.loads(run(config, "--format", "json", "--by", "segment"))["breakdowns"]["segment"]
    assert all(r["recovered_of_failed"] == round(r["recovered"] / r["cases"], 6) for r in rows)
    got = {(r["key"], r["currency"]): (r["cases"], r["ended"], r["recovered"], r["recovered_of_ended"],
                                       r["amount_at_stake"], r["amount_recovered"], r["revenue_at_risk"],
                                       r["with_person"]) for r in rows}
    assert got == SEGMENTS
    csv_got = {(r["key"], r["currency"]): (r["cases"], r["amount_at_stake"], r["amount_recovered"],
                                           r["revenue_at_risk"])
               for r in csv_rows(run(config, "--format", "csv", "--by", "segment")) if r["dimension"] == "segment"}
    assert csv_got == {("default", "usd"): ("5", "215.00", "130.00", "70.00"),
                       ("enterprise", "usd"): ("2", "70.00", "40.00", "0.00"),
                       ("default", "eur"): ("2", "200.00", "200.00", "60.00")}


def test_segment_breakdown_in_md_html_and_the_terminal(config, book):
    formats = every_human_format(config, "--by", "segment")
    # Most cases first; ties by key, then currency.
    # Both rates by count, then by amount, each named by its denominator (issue 24).
    expected = [["default", "USD", "5", "4", "1", "20.0%", "25.0%", "$285.00", "$215.00", "$130.00", "45.6%",
                 "60.5%", "$70.00", "0"],
                ["default", "EUR", "2", "1", "1", "50.0%", "100.0%", "€260.00", "€200.00", "€200.00", "76.9%",
                 "100.0%", "€60.00", "1"],
                ["enterprise", "USD", "2", "2", "1", "50.0%", "50.0%", "$70.00", "$70.00", "$40.00", "57.1%",
                 "57.1%", "$0.00", "2"]]
    assert formats["md"]["By segment"][1:] == expected
    header = formats["md"]["By segment"][0]
    assert header[5:7] == ["Recovered of failed", "Recovered of ended"]
    # Rows in dollars and euros: every amount header says so, never a bare 'Recovered $' (issue 24).
    assert "Recovered amount (each row's currency)" in header and "Revenue at risk (each row's currency)" in header
    assert formats["html"].tables["segment"][1:] == [folded(cells) for cells in expected]
    for cells in expected:
        assert terminal_has_row(formats["table"], cells), cells


def test_channel_credits_the_last_done_touch_within_the_window(config, book):
    rows = json.loads(run(config, "--format", "json", "--by", "channel"))["breakdowns"]["channel"]
    got = {(r["key"], r["currency"]): (r["recovered"], r["amount_recovered"], r["share_of_recovered"]) for r in rows}
    third = round(1 / 3, 6)
    assert got == {("retry", "usd"): (1, 10000, third), ("email", "usd"): (1, 4000, third),
                   ("no touch", "eur"): (1, 20000, third)}
    assert all(r["ended"] is None and r["recovered_of_ended"] is None and r["recovered_of_failed"] is None
               for r in rows)
    formats = every_human_format(config, "--by", "channel")
    for cells in (["retry", "USD", "1", "33.3%", "$100.00", "0"], ["email", "USD", "1", "33.3%", "$40.00", "1"],
                  ["no touch", "EUR", "1", "33.3%", "€200.00", "0"]):
        assert cells in formats["md"]["Recovery by channel (last touch before payment)"]
        assert folded(cells) in formats["html"].tables["channel"]
        assert terminal_has_row(formats["table"], cells)


def test_a_shorter_attribution_window_leaves_the_email_out(config, book):
    report = build_report(book.ledger, NOW, dimensions=["channel"], attribution_window=timedelta(days=2))
    got = {(r.key, r.currency): r.recovered for r in report.breakdowns["channel"]}
    assert got == {("retry", "usd"): 1, ("no touch", "usd"): 1, ("no touch", "eur"): 1}


def test_retry_success_by_attempt(config, book):
    # Furthest attempts: c1 2, c2 3, c3 4, c4 4, c5 1, c6 2, c7 4, c8 1, c9 1; recovered at 2 (c1) and 4 (c7).
    rows = json.loads(run(config, "--format", "json", "--by", "attempt"))["retry_success"]
    assert [(r["attempt"], r["reached"], r["recovered"], r["success_rate"]) for r in rows] == [
        (2, 6, 1, round(1 / 6, 6)), (3, 4, 0, 0.0), (4, 3, 1, round(1 / 3, 6))]
    csv_got = [(r["key"], r["cases"], r["recovered"], r["success_rate"])
               for r in csv_rows(run(config, "--format", "csv", "--by", "attempt")) if r["dimension"] == "attempt"]
    assert csv_got == [("2", "6", "1", str(round(1 / 6, 6))), ("3", "4", "0", "0.0"), ("4", "3", "1", "0.333333")]
    formats = every_human_format(config, "--by", "attempt")
    expected = [["2", "6", "1", "16.7%"], ["3", "4", "0", "0.0%"], ["4", "3", "1", "33.3%"]]
    assert formats["md"]["Retry success by attempt"][1:] == expected
    assert formats["html"].tables["attempt"][1:] == expected
    assert all(terminal_has_row(formats["table"], cells) for cells in expected)


def test_cohort_month_failure_type_sequence_and_currency(config, book):
    b = json.loads(run(config, "--format", "json"))["breakdowns"]
    cohort = {(r["key"], r["currency"]): (r["cases"], r["ended"], r["recovered"]) for r in b["cohort"]}
    assert cohort == {("2026-03", "usd"): (3, 3, 2), ("2026-04", "usd"): (4, 3, 0), ("2026-04", "eur"): (2, 1, 1)}
    ftype = {(r["key"], r["currency"]): r["cases"] for r in b["failure_type"]}
    assert ftype == {("card_soft", "usd"): 5, ("card_update", "usd"): 2, ("card_soft", "eur"): 2}
    sequence = {(r["key"], r["currency"]): r["recovered"] for r in b["sequence"]}
    assert sequence == {("standard", "usd"): 1, ("high-value", "usd"): 1, ("standard", "eur"): 1}
    currency = {r["key"]: (r["cases"], r["amount_recovered"]) for r in b["currency"]}
    assert currency == {"usd": (7, 17000), "eur": (2, 20000)}


def test_recovery_curve_counts_day_zero_and_every_day_after(config, book):
    data = json.loads(run(config, "--format", "json"))
    curve = [(p["day"], p["recovered"]) for p in data["recovery_curve"]]
    assert curve == [(0, 1), (1, 1), (2, 1), (3, 2)] + [(d, 2) for d in range(4, 10)] + [(10, 3)]
    assert data["recovery_curve"][0]["share"] == round(1 / 9, 6)
    assert data["recovery_curve"][-1]["share"] == round(3 / 9, 6)
    formats = every_human_format(config, "--by", "segment")
    assert ["0", "1", "11.1%"] in formats["md"]["Recovery curve"]
    assert ["10", "3", "33.3%"] in formats["html"].tables["recovery_curve"]
    assert terminal_has_row(formats["table"], ["3", "2", "22.2%"])
    curve_csv = [(r["key"], r["recovered"]) for r in csv_rows(run(config, "--format", "csv"))
                 if r["dimension"] == "recovery_curve"]
    assert curve_csv[0] == ("0", "1") and curve_csv[-1] == ("10", "3") and len(curve_csv) == 11


# -- periods, edge cases -----------------------------------------------------------------------------------------


def test_period_selects_the_cohort_by_first_failure_and_churn_by_when_it_happened(config, book):
    data = json.loads(run(config, "--format", "json", "--since", "2026-04-01", "--until", "2026-05-01"))
    h = data["headline"]
    assert (h["failed_invoices"], h["ended"], h["recovered"]) == (6, 4, 1)          # c4..c9
    assert h["since"] == "2026-04-01T00:00:00Z" and h["until"] == "2026-05-01T00:00:00Z"
    # Without a complete list of the account's subscriptions there is no rate; with one (pre-dunning's sync listed
    # every active subscription), sub_5, canceled before the period began, leaves four active in it.
    assert json.loads(run(config, "--format", "json", "--since", "2026-04-01"))["headline"]["churn"]["rate"] is None
    book.every_subscription_synced()
    data = json.loads(run(config, "--format", "json", "--since", "2026-04-01", "--until", "2026-05-01"))
    h = data["headline"]
    assert "every active subscription was synced" in h["churn"]["denominator"]
    assert (h["churn"]["churned_subscriptions"], h["churn"]["active_subscriptions"]) == (1, 4)
    assert h["churn"]["rate"] == 0.25
    march = json.loads(run(config, "--format", "json", "--since", "2026-03-01", "--until", "2026-04-01"))["headline"]
    assert march["churn"]["churned_subscriptions"] == 0     # c4 churned on 2026-04-29


def test_no_ended_cases_gives_null_rates_not_zero(config):
    b = Book(open_engine_ledger(config))
    b.case("o1", state="open", first_failed_at="2026-05-01T00:00:00Z", amount_due=4200)
    data = json.loads(run(config, "--format", "json"))
    h = data["headline"]
    assert h["recovered_of_ended"] is None and h["currencies"][0]["amount_recovered_of_ended"] is None
    assert h["days_to_recovery"] == {"recovered": 0, "median": None, "mean": None, "p90": None,
                                     "still_open": 1, "censored": False}
    assert h["churn"]["rate"] is None                       # no subscriptions at all
    assert data["recovery_curve"] == [{"day": 0, "recovered": 0, "share": 0.0}]
    total = next(r for r in csv_rows(run(config, "--format", "csv")) if r["dimension"] == "total")
    assert total["recovered_of_ended"] == ""
    formats = every_human_format(config)
    assert ["Recovered of ended cases", "—"] in formats["md"]["Headline"]
    assert ["Days to recovery, median", "—"] in formats["html"].tables["headline"]
    assert terminal_has_row(formats["table"], ["Revenue at risk now (USD)", "$42.00"])


def test_an_empty_ledger_reports_zeros_and_nulls(config):
    open_engine_ledger(config)
    data = json.loads(run(config, "--format", "json"))
    assert data["headline"]["failed_invoices"] == 0 and data["headline"]["recovered_of_failed"] is None
    assert data["recovery_curve"] == [] and data["retry_success"] == []
    assert "Recovery report" in run(config, "--format", "html")


def test_median_of_an_even_count_is_the_mean_of_the_two_middle_values(config):
    b = Book(open_engine_ledger(config))
    for i, hours in enumerate((1, 30, 50, 100)):
        b.case(f"r{i}", state="recovered", first_failed_at="2026-05-01T00:00:00Z",
               recovered_at=(datetime(2026, 5, 1, tzinfo=timezone.utc) + timedelta(hours=hours))
               .strftime("%Y-%m-%dT%H:%M:%SZ"), amount_recovered=1000)
    d = headline(b.ledger, NOW).days_to_recovery
    assert d.median == round(40 / 24, 4)          # (30 h + 50 h) / 2
    assert d.p90 == round(100 / 24, 4)            # rank ceil(3.6) = 4
    assert d.mean == round(181 / 4 / 24, 4)


def test_amounts_are_never_added_across_currencies(config, book):
    html = run(config, "--format", "html")
    assert "$370" not in html and "370.00" not in html       # 170 USD + 200 EUR must appear nowhere
    data = json.loads(run(config, "--format", "json"))
    assert {c["currency"] for c in data["headline"]["currencies"]} == {"usd", "eur"}


# -- traceability ------------------------------------------------------------------------------------------------


def _matches(case: dict, conditions: dict) -> bool:
    for column, wanted in conditions.items():
        value = case[column]
        if isinstance(wanted, dict):
            if "gte" in wanted and not (value is not None and value >= wanted["gte"]):
                return False
            if "lt" in wanted and not (value is not None and value < wanted["lt"]):
                return False
        elif value != wanted:
            return False
    return True


def test_every_breakdown_row_is_reproduced_by_filtering_the_case_listing(config, book):
    period = Period(since=datetime(2026, 3, 1, tzinfo=timezone.utc))
    report = build_report(book.ledger, NOW, period)
    listing = list(case_listing(book.ledger, period))
    assert len([c for c in listing if c["in_cohort"]]) == report.headline.failed_invoices == 9
    checked = 0
    for rows in report.breakdowns.values():
        for row in rows:
            cases = [c for c in listing if c["in_cohort"] and _matches(c, row.filter)]
            assert len(cases) == row.cases, row
            assert sum(c["state"] == "recovered" for c in cases) == row.recovered, row
            assert sum(c["amount_recovered"] or 0 for c in cases) == row.amount_recovered, row
            if row.revenue_at_risk is not None:
                assert sum(c["revenue_at_risk"] or 0 for c in cases) == row.revenue_at_risk, row
            checked += 1
    for row in report.retry_success:
        assert len([c for c in listing if _matches(c, row.filter)]) == row.reached
        assert len([c for c in listing if _matches(c, row.recovered_filter)]) == row.recovered
    churned = [c for c in listing if _matches(c, report.headline.churn.filter)]
    assert len(churned) == report.headline.churn.churned_subscriptions
    assert checked > 10


def test_cases_option_lists_the_cases_as_csv(config, book):
    rows = csv_rows(run(config, "--cases", "--format", "csv"))
    by_invoice = {r["invoice_id"]: r for r in rows}
    assert len(rows) == 9
    assert by_invoice["in_c2"]["channel"] == "email" and by_invoice["in_c2"]["days_to_recovery"] == "3.5"
    assert by_invoice["in_c2"]["amount_at_stake"] == "40.00" and by_invoice["in_c3"]["amount_recovered"] == "30.00"
    assert by_invoice["in_c6"]["revenue_at_risk"] == "70.00" and by_invoice["in_c6"]["amount_at_stake"] == ""


# -- the html file, the CLI --------------------------------------------------------------------------------------


def test_html_is_one_self_contained_file_with_three_charts(config, book, tmp_path):
    """(Its layout in a real browser: tests/test_report_browser.py.)"""
    target = tmp_path / "report.html"
    result = cli(config, "report", "--format", "html", "--output", str(target), env=WIDE)
    assert result.exit_code == 0 and result.stdout == ""
    text = target.read_text()
    parsed = html_tables(text)
    assert parsed.external == []                      # no scripts, stylesheets, images or links to fetch
    assert parsed.figures == ["chart-recovery-curve", "chart-retry-success", "chart-channel"]
    assert text.count("<svg") == 1 and '<meta name="viewport"' in text      # the curve; the bars are HTML
    assert "attempt 4: 33.3% (1/3)" in text and "no touch: 1 (33.3%)" in text
    assert ">day 14: 33.3%</span>" in text and ">day 30: 33.3%</span>" in text   # 3 of 9, the last on day 10
    assert parsed.tables["segment"][0][:2] == ["Segment", "Cases"]        # no repeated currency column


def test_unknown_breakdown_and_bad_dates_are_usage_errors(config, book):
    result = cli(config, "report", "--by", "planet", env=WIDE)
    assert result.exit_code == 2 and "unknown breakdown 'planet'" in result.stderr
    result = cli(config, "report", "--since", "yesterday", env=WIDE)
    assert result.exit_code == 2 and "--since" in result.stderr
    result = cli(config, "report", "--since", "2026-05-01", "--until", "2026-04-01", env=WIDE)
    assert result.exit_code == 2 and "is not before" in result.stderr


def test_status_shows_the_headline_at_the_top(config, book):
    result = cli(config, "status", "--now", "2026-06-01T00:00:00Z", env=WIDE)
    assert result.exit_code == 0, result.output
    assert terminal_has_row(result.stdout, ["Recovered of ended cases", "42.9%"])
    data = json.loads(cli(config, "status", "--json", "--now", "2026-06-01T00:00:00Z").stdout)
    assert data["headline"]["recovered"] == 3


def test_a_ledger_without_a_file_is_reported_on_one_connection(config, book):
    on_file = build_report(book.ledger, NOW)
    book.ledger.path = None               # as for an in-memory ledger: no second connection can be opened
    in_memory = build_report(book.ledger, NOW)
    assert in_memory == on_file


# -- counts of messages and retries: the one engine the demo, simulate and the backtest's observed column share ----


def test_messages_and_retries_are_counted_once_and_by_who_made_them(config):
    """Issue 24: a grouped email is one message; an email to an account manager is no customer message; dunctl's
    retry after a card update (a system action, `retry_now`) is dunctl's, not Stripe's."""
    from dunctl.ledger.views.report import messages_delivered, retries_made

    b = Book(open_engine_ledger(config))
    b.case("a", state="open", first_failed_at="2026-03-01T10:00:00Z", attempts=4)
    b.case("b", state="open", first_failed_at="2026-03-01T10:00:00Z", attempts=2)

    def action(name, step, action, audience=None, kind="step", ref=None):
        b.ledger.db.execute(
            """INSERT INTO actions(case_id, kind, step_id, action, channel, audience, status, due_at, finished_at,
                                   idempotency_key, message_ref) VALUES (?, ?, ?, ?, ?, ?, 'done', ?, ?, ?, ?)""",
            [b.ids[name], kind, step, action, action, audience, "2026-03-02T00:00:00Z", "2026-03-02T00:00:00Z",
             f"{name}:{step}", ref])

    action("a", "notice", "email", "customer", ref="msg-1")      # one email covering both cases
    action("b", "notice", "email", "customer", ref="msg-1")
    action("a", "reminder", "sms", "customer")
    action("a", "tell-am", "email", "internal")                  # to the account manager
    action("a", "retry-1", "retry")
    action("a", "retry-after-update-20260303T000000", "retry_now", kind="system")
    conn = b.ledger.conn
    assert messages_delivered(conn) == 2
    # Case a: three attempts after the failed one, two of them dunctl's; case b: one, Stripe's.
    assert retries_made(conn) == (2, 2)
    # The experiment report and the backtest's per-case counts use the same rule.
    from dunctl.ledger.views import history as history_queries
    from dunctl.ledger.views.experiments import arm_messages

    conn.execute("UPDATE cases SET experiment = 'e', arm = 'control'")
    assert arm_messages(b.ledger, "e") == {"control": 2}
    per_case = {r["id"]: r["messages"] for r in history_queries.outcomes(b.ledger, 3 * 86400)}
    assert per_case == {b.ids["a"]: 2, b.ids["b"]: 1}


def test_churn_is_per_month_in_customers_with_its_window(config, book):
    """Issue 24 (Recurly's definition): customers whose subscription dunning ended in a month / customers active at
    its start; a customer whose plan and add-on both ended counts once; each month states its window."""
    book.case("c10", state="exhausted", first_failed_at="2026-04-02T00:00:00Z", closed_at="2026-04-20T00:00:00Z",
              churned=1, subscription_id="sub_1")              # the same customer's other subscription
    data = json.loads(run(config, "--format", "json", "--active-customers", "40"))["headline"]["churn"]
    assert data["unit"] == "customers per month"
    assert [(m["month"], m["since"], m["until"], m["partial"], m["churned_customers"], m["active_customers"])
            for m in data["months"]] == [
        ("2026-03", "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", False, 0, 40),
        ("2026-04", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z", False, 1, 40),
        ("2026-05", "2026-05-01T00:00:00Z", "2026-06-01T00:00:00Z", False, 0, 40)]
    assert data["monthly_rate"] == round(1 / 120, 6) and data["churned_subscriptions"] == 2
    tables = md_tables(run(config, "--format", "md", "--active-customers", "40"))
    assert ["Involuntary churn", "0.8% of customers per month (1 of 120 customer-months, 3 whole months)"] in \
        tables["Headline"]
    assert tables["Involuntary churn by month (customers)"][2] == ["2026-04", "2026-04-01 to 2026-05-01", "1", "40",
                                                                   "2.5%"]
    # A period cut inside a month says so.
    partial = json.loads(run(config, "--format", "json", "--active-customers", "40", "--since", "2026-04-15",
                             "--until", "2026-05-01"))["headline"]["churn"]
    assert [(m["month"], m["partial"], m["churned_customers"]) for m in partial["months"]] == [("2026-04", True, 1)]
    assert partial["monthly_rate"] is None
