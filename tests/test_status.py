"""`dunctl status` and `dunctl case ...`: what a finance person sees, and how a person takes a case over."""

import json

import pytest

from dunctl.model import Customer
from tests.helpers import at, cli, customer, failed_invoice, open_engine_ledger, pay, seed, starter


@pytest.fixture
def book(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_usd", amount=4900), failed_invoice("in_eur", customer_id="cus_2", amount=12000,
                                                                      currency="eur"),
         failed_invoice("in_jpy", customer_id="cus_3", amount=5000, currency="jpy", decline_code="expired_card"),
         customers=[customer("cus_1"), customer("cus_2", email="b@example.com"), customer("cus_3", email="c@x.jp")])
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    return config, ledger


STATUS_KEYS = {"invoice_id", "customer_id", "customer_email", "amount_remaining", "currency", "failure_type",
               "decline_code", "segment", "sequence", "state", "opened_at", "next_step", "next_due_at"}


def test_status_json_lists_open_cases_with_the_documented_keys(book):
    config, _ = book
    data = json.loads(cli(config, "status", "--json", "--now", at("1d").isoformat()).stdout)
    cases = {c["invoice_id"]: c for c in data["cases"]}
    assert set(cases) == {"in_usd", "in_eur", "in_jpy"}
    assert all(STATUS_KEYS <= set(c) for c in cases.values())
    assert cases["in_jpy"]["failure_type"] == "card_update" and cases["in_jpy"]["segment"] == "update-payment-method"
    assert cases["in_usd"]["next_step"] == "retry-1" and cases["in_usd"]["next_due_at"] == "2026-11-04T14:00:00Z"
    assert data["revenue_at_risk"] == {"eur": 12000, "jpy": 5000, "usd": 4900}


def test_status_table_shows_revenue_at_risk_per_currency_never_summed(book):
    config, _ = book
    result = cli(config, "status", "--now", at("1d").isoformat())
    assert result.exit_code == 0
    assert "revenue at risk: €120.00, ¥5,000, $49.00" in result.stdout
    assert "in_jpy" in result.stdout and "card_update" in result.stdout and "expired_card" in result.stdout


def test_paid_cases_leave_status_but_show_with_all(book):
    config, ledger = book
    pay(ledger, failed_invoice("in_usd", amount=4900), at("1d"))
    cli(config, "tick", "--no-sync", "--now", at("1d1h").isoformat())
    open_ids = [c["invoice_id"] for c in json.loads(cli(config, "status", "--json").stdout)["cases"]]
    assert "in_usd" not in open_ids
    every = {c["invoice_id"]: c["state"] for c in json.loads(cli(config, "status", "--all", "--json").stdout)["cases"]}
    assert every["in_usd"] == "recovered"


def test_case_show_gives_the_timeline_with_reasons(book):
    config, _ = book
    result = cli(config, "case", "show", "in_usd")
    assert result.exit_code == 0
    for text in ("payment failed: insufficient_funds (card_soft)", "case opened: segment default, sequence standard",
                 "notice (email) done: email payment-failed to ada@example.com"):
        assert text in result.stdout
    data = json.loads(cli(config, "case", "show", "in_usd", "--json").stdout)
    assert [a["step_id"] for a in data["actions"]] == ["notice"]


def test_pause_stops_the_sequence_and_resume_hands_it_back(book, tmp_path):
    config, ledger = book
    assert cli(config, "case", "pause", "in_usd", "--reason", "customer called, paying by wire",
               "--now", at("1d").isoformat()).exit_code == 0
    for offset in ("2d", "3d1h"):
        cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
    case_id = ledger.cases.for_invoice("in_usd")["id"]
    assert [a["step_id"] for a in ledger.actions(case_id)] == ["notice"]
    assert cli(config, "case", "resume", "in_usd", "--reason", "wire never came",
               "--now", at("3d2h").isoformat()).exit_code == 0
    cli(config, "tick", "--no-sync", "--now", at("3d3h").isoformat())
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(case_id)}
    # retry-1 fell due during the pause: an overdue retry still runs (the attempt budget allows); the reminder,
    # the latest customer message, runs once
    assert statuses == {"notice": "done", "retry-1": "done", "reminder": "done"}
    summaries = [t["summary"] for t in ledger.cases.timeline(case_id)]
    assert "paused by a person: customer called, paying by wire" in summaries


def test_pause_and_resume_refuse_a_case_in_the_wrong_state(book):
    config, _ = book
    resumed = cli(config, "case", "resume", "in_usd", "--reason", "not paused yet")
    assert resumed.exit_code == 2 and "case in_usd is open, not paused" in resumed.stderr
    assert cli(config, "case", "pause", "in_usd", "--reason", "on the phone").exit_code == 0
    again = cli(config, "case", "pause", "in_usd", "--reason", "twice")
    assert again.exit_code == 2 and "is paused, not open; only an open case can be paused" in again.stderr


def test_close_by_a_person_ends_the_case(book):
    config, ledger = book
    result = cli(config, "case", "close", "in_eur", "--reason", "settled offline", "--json")
    assert json.loads(result.stdout)["state"] == "closed"
    assert ledger.cases.for_invoice("in_eur")["close_reason"] == "settled offline"
    again = cli(config, "case", "close", "in_eur", "--reason", "twice")
    assert again.exit_code == 2 and "already ended" in again.stderr


def test_unknown_invoice_is_a_clear_error(book):
    config, _ = book
    result = cli(config, "case", "show", "in_nope")
    assert result.exit_code == 2 and "no case for invoice in_nope" in result.stderr


def test_the_ledger_file_is_private(book):
    config, ledger = book
    assert (ledger.path.stat().st_mode & 0o777) == 0o600


def test_a_customer_name_is_data_in_case_show_never_markup_or_terminal_control(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    hostile = customer("cus_1")
    hostile.name = "[/bold] x [link=https://evil.test]click[/link] \x1b[31mred\x1b]8;;https://evil.test\x07"
    seed(ledger, failed_invoice("in_1"), customers=[hostile])
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    shown = cli(config, "case", "show", "in_1")
    assert shown.exit_code == 0, shown.output
    assert "[/bold] x [link=https://evil.test]click[/link]" in shown.stdout
    assert "\x1b" not in shown.stdout


# -- a page that fits, filters, streaming, hostile names -----------------------------------------------------------


def test_most_revenue_at_risk_comes_first_and_limit_pages(book):
    config, _ = book
    data = json.loads(cli(config, "status", "--json", "--now", at("1d").isoformat()).stdout)
    # no exchange rates: ranked within each currency (each is its currency's first), ties by currency code
    assert [c["invoice_id"] for c in data["cases"]] == ["in_eur", "in_jpy", "in_usd"] and data["total"] == 3
    result = cli(config, "status", "--limit", "1", "--now", at("1d").isoformat())
    assert result.exit_code == 0
    assert "in_eur" in result.stdout and "in_jpy" not in result.stdout and "in_usd" not in result.stdout
    assert "showing 1 of 3" in result.stdout
    assert "revenue at risk: €120.00, ¥5,000, $49.00" in result.stdout      # the totals are not the page's


def test_filters_narrow_the_list_and_the_revenue_at_risk(book):
    config, _ = book
    def ids(*args):
        data = json.loads(cli(config, "status", "--json", *args).stdout)
        return [c["invoice_id"] for c in data["cases"]], data["revenue_at_risk"]
    assert ids("--failure-type", "card_update") == (["in_jpy"], {"jpy": 5000})
    assert ids("--segment", "default") == (["in_eur", "in_usd"], {"eur": 12000, "usd": 4900})
    assert ids("--state", "paused") == ([], {})
    assert cli(config, "case", "pause", "in_usd", "--reason", "on the phone").exit_code == 0
    assert ids("--state", "paused") == (["in_usd"], {"usd": 4900})
    bad = cli(config, "status", "--state", "sleeping")
    assert bad.exit_code == 2 and "unknown state 'sleeping'" in bad.stderr and "open, paused" in bad.stderr
    bad = cli(config, "status", "--failure-type", "card_sad")
    assert bad.exit_code == 2 and "card_soft" in bad.stderr


def test_the_case_list_comes_before_the_headline(book):
    config, _ = book
    out = cli(config, "status", "--now", at("1d").isoformat()).stdout
    assert out.index("in_usd") < out.index("Recovery (all cases)") < out.index("Failed invoices")


HOSTILE = {"cus_1": "[/bold] x", "cus_2": "[link=https://evil.test]pay here[/link]",
           "cus_3": "Mal\x1b[2J\x1b]8;;https://evil.test\x07lory\x1b]8;;\x07 \x07\x08Ltd"}


@pytest.mark.parametrize("columns", ["80", "200"])
def test_customer_names_are_shown_as_text_never_as_markup_or_escape_codes(tmp_path, columns):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"), failed_invoice("in_2", customer_id="cus_2", amount=9000),
         failed_invoice("in_3", customer_id="cus_3", amount=8000),
         customers=[Customer(id=cid, name=name, email=f"{cid}@example.com") for cid, name in HOSTILE.items()])
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    result = cli(config, "status", "--now", at("1d").isoformat(), env={"COLUMNS": columns})
    assert result.exit_code == 0, result.output
    assert "[/bold] x" in result.stdout
    assert "[link=https://evil.test]pay" in result.stdout
    assert "Mallory Ltd" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout and "\x08" not in result.stdout
    # --json keeps the data as it is (JSON escapes it)
    assert json.loads(cli(config, "status", "--json").stdout)["cases"]


def test_json_is_streamed_one_case_per_line_and_lists_every_case(book):
    config, _ = book
    text = cli(config, "status", "--json", "--now", at("1d").isoformat()).stdout
    lines = text.splitlines()
    case_lines = [line for line in lines if line.lstrip().startswith('{"invoice_id"')]
    assert len(case_lines) == 3                    # written as they are read, not built as one string
    assert json.loads(text)["total"] == 3


def _four_cases(config):
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_usd", amount=3399), failed_invoice("in_usd_small", customer_id="cus_2", amount=1000),
         failed_invoice("in_jpy", customer_id="cus_3", amount=3800, currency="jpy"),
         failed_invoice("in_jpy_small", customer_id="cus_4", amount=100, currency="jpy"),
         customers=[customer(f"cus_{i}") for i in range(1, 5)])
    assert cli(config, "tick", "--no-sync", "--now", at("31m").isoformat()).exit_code == 0
    data = json.loads(cli(config, "status", "--json", "--now", at("1d").isoformat()).stdout)
    return [c["invoice_id"] for c in data["cases"]], data["ranking"]


def test_status_ranks_across_currencies_only_through_configured_rates(tmp_path):
    """Issue 24: ¥3,800 (about $25) never outranks $33.99 by raw minor units. With report.fx the cases are ranked
    in the base currency; without it, within each currency, each currency's largest first."""
    ranked, ranking = _four_cases(starter(tmp_path / "fx", report={"fx": {"base": "usd", "rates": {"jpy": 0.0067}}}))
    assert ranked == ["in_usd", "in_jpy", "in_usd_small", "in_jpy_small"]
    assert "USD at the rates in report.fx" in ranking
    ranked, ranking = _four_cases(starter(tmp_path / "none"))
    assert ranked == ["in_jpy", "in_usd", "in_jpy_small", "in_usd_small"]       # rank 1 of each, then rank 2
    assert ranking.startswith("within each currency")
    shown = cli(tmp_path / "none" / "dunctl.yaml", "status", "--now", at("1d").isoformat())
    assert "ranked within each currency" in shown.stdout and "report.fx" in shown.stdout
