"""Aging buckets and countback DSO per currency against hand-computed values on a fixed ledger, in every
`report` format."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest

from dunctl.model import Invoice
from tests.helpers import T0, cli, customer, failed_invoice, open_engine_ledger, seed, starter

NOW = T0 + timedelta(days=200)
DAY = timedelta(days=1)


def net_terms(invoice_id: str, amount: int, created_days_ago: int, *, currency: str = "usd", remaining=None,
              status: str = "open", term: int = 30) -> Invoice:
    created = NOW - created_days_ago * DAY
    return Invoice(id=invoice_id, customer_id="cus_b2b", currency=currency, amount_due=amount,
                   amount_paid=amount - (amount if remaining is None else remaining) if status == "open" else amount,
                   amount_remaining=(amount if remaining is None else remaining) if status == "open" else 0,
                   status=status, created=created, number=f"INV-{invoice_id}", collection_method="send_invoice",
                   due_date=created + term * DAY, hosted_invoice_url=f"https://invoice.stripe.test/{invoice_id}")


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    """A fixed ledger. USD, days past due as of NOW: A not yet due (current), B 10 and H 28 (1-30), C 45 with
    $1,500 of $3,000 left and a card case that failed 35 days ago (31-60), D 70 (61-90), E 110 (90+); F paid.
    EUR: G not yet due. Net-terms sales by 30-day period back from NOW, USD: A + F = 5,000; B + H = 2,100;
    C = 3,000; D = 500; E = 700. Open net-terms USD balance: 1,000 + 2,000 + 100 + 1,500 + 500 + 700 = 5,800.
    Countback: 5,800 > 5,000 -> 30 days, 800 left; 800 / 2,100 of 30 days = 11.43 -> DSO 41.4 days.
    EUR: 900 open, 900 issued in the latest period -> 30 days."""
    directory = tmp_path_factory.mktemp("aging")
    config = starter(directory)
    ledger = open_engine_ledger(config)
    card_failed = NOW - 35 * DAY
    seed(ledger, failed_invoice("in_card", customer_id="cus_card", amount=30000, failed_at=card_failed),
         customers=[customer("cus_card")], now=card_failed)
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", (card_failed + timedelta(minutes=1)).isoformat()).exit_code == 0
    ledger = open_engine_ledger(config)
    seed(ledger, net_terms("A", 100000, 10), net_terms("B", 200000, 40), net_terms("H", 10000, 58),
         net_terms("C", 300000, 75, remaining=150000), net_terms("D", 50000, 100), net_terms("E", 70000, 140),
         net_terms("F", 400000, 20, status="paid"), net_terms("G", 90000, 5, currency="eur"),
         customers=[customer("cus_b2b")], now=NOW)
    ledger.close()
    return config


EXPECTED_AGING = [("usd", "current", 1, 100000), ("usd", "1-30", 2, 210000), ("usd", "31-60", 2, 180000),
                  ("usd", "61-90", 1, 50000), ("usd", "90+", 1, 70000),
                  ("eur", "current", 1, 90000), ("eur", "1-30", 0, 0), ("eur", "31-60", 0, 0),
                  ("eur", "61-90", 0, 0), ("eur", "90+", 0, 0)]


def test_aging_and_dso_in_json_equal_the_hand_computed_values(books):
    result = cli(books, "report", "--json", "--now", NOW.isoformat())
    assert result.exit_code == 0, result.output
    section = json.loads(result.stdout)["receivables"]
    assert sorted((r["currency"], r["bucket"], r["count"], r["amount"]) for r in section["aging"]) == \
        sorted(EXPECTED_AGING)
    assert [(d["currency"], d["days"], d["receivables"], d["periods"]) for d in section["dso"]] == \
        [("eur", 30.0, 90000, 1), ("usd", 41.4, 580000, 2)]


def test_aging_and_dso_in_csv_markdown_html_and_the_terminal(books):
    rows = list(csv.DictReader(io.StringIO(cli(books, "report", "--format", "csv", "--now", NOW.isoformat()).stdout)))
    aging = {(r["currency"], r["key"]): (r["cases"], r["value"]) for r in rows if r["dimension"] == "aging"}
    assert aging[("usd", "31-60")] == ("2", "1800.00") and aging[("eur", "current")] == ("1", "900.00")
    assert {r["key"]: r["value"] for r in rows if r["dimension"] == "dso"} == {"eur": "30.0", "usd": "41.4"}
    markdown = cli(books, "report", "--format", "md", "--now", NOW.isoformat()).stdout
    assert "| 31-60 | USD | 2 | $1,800.00 |" in markdown and "| USD | 41.4 | $5,800.00 | 2 |" in markdown
    html = cli(books, "report", "--format", "html", "--now", NOW.isoformat()).stdout
    assert "Aging: open amounts by days past the due date" in html and "41.4" in html
    table = cli(books, "report", "--now", NOW.isoformat()).stdout
    assert "DSO (days sales outstanding, countback)" in table and "41.4" in table


def test_a_statement_of_account_lists_every_open_invoice_with_a_total_per_currency(books):
    found = json.loads(cli(books, "customer", "statement", "cus_b2b", "--json", "--now", NOW.isoformat()).stdout)
    usd, eur = sorted(found["currencies"], key=lambda c: c["currency"] != "usd")
    assert [(line["number"], line["days_overdue"], line["amount_remaining"]) for line in usd["lines"]] == \
        [("INV-E", 110, 70000), ("INV-D", 70, 50000), ("INV-C", 45, 150000), ("INV-H", 28, 10000),
         ("INV-B", 10, 200000), ("INV-A", -20, 100000)]
    assert (usd["total"], usd["overdue"], eur["total"], eur["overdue"]) == (580000, 480000, 90000, 0)
    text = cli(books, "customer", "statement", "cus_b2b", "--now", NOW.isoformat()).stdout
    assert "  INV-C  issued 2027-03-07  due 2027-04-06  45 days overdue  $1,500.00\n" in text
    assert "Total open in USD: $5,800.00 (of which overdue: $4,800.00)" in text
    assert "Total open in EUR: €900.00 (of which overdue: €0.00)" in text     # never added to the dollars
    page = cli(books, "customer", "statement", "cus_b2b", "--format", "html", "--now", NOW.isoformat()).stdout
    assert "<td>INV-A</td>" in page and "due in 20 days" in page and "$5,800.00" in page
