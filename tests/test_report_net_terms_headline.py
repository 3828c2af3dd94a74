"""The report's headline divides by card failures and net-terms invoices together when the cohort has both: its
lines say so (a net-terms invoice never failed a payment, so "failed invoices" would misname the denominator)."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.helpers import T0, cli, customer, failed_invoice, open_engine_ledger, seed, starter
from tests.test_receivables_aging import net_terms

NOW = T0 + timedelta(days=200)


def test_a_headline_with_net_terms_cases_names_both_kinds_in_its_denominator(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    failed_at = NOW - timedelta(days=3)
    seed(ledger, failed_invoice("in_card", customer_id="cus_card", amount=30000, failed_at=failed_at),
         customers=[customer("cus_card")], now=failed_at)
    seed(ledger, net_terms("in_late", 50000, 40), customers=[customer("cus_b2b")], now=NOW)
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", NOW.isoformat()).exit_code == 0

    headline = json.loads(cli(config, "report", "--json", "--now", NOW.isoformat()).stdout)["headline"]
    assert (headline["failed_invoices"], headline["net_terms_cases"]) == (2, 1)
    table = cli(config, "report", "--now", NOW.isoformat()).stdout
    assert "Recovered of all cases" in table and "2 (1 failed payment, 1 net-terms invoice)" in table
    assert "Recovered of failed invoices" not in table
    markdown = cli(config, "report", "--format", "md", "--now", NOW.isoformat()).stdout
    assert "| Cases | 2 (1 failed payment, 1 net-terms invoice) |" in markdown


def test_a_headline_of_card_failures_alone_keeps_the_published_definition(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_card", customer_id="cus_card", failed_at=NOW), customers=[customer("cus_card")],
         now=NOW)
    ledger.close()
    assert cli(config, "tick", "--no-sync", "--now", NOW.isoformat()).exit_code == 0
    table = cli(config, "report", "--now", NOW.isoformat()).stdout
    assert "Recovered of failed invoices" in table and "Cases" not in table.split("Open")[0]
