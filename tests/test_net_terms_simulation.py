"""Net-30 business customers in the simulated account, the demo and `simulate` (issue #26, item 7): their invoices
come through the account's sync like Stripe's, open net-terms cases that remind before the due date, some are paid
late, the demo prints aging and DSO, and `simulate` compares reminder cadences."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

from typer.testing import CliRunner

from dunctl.cli.app import app
from dunctl.clock import from_iso
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.assumptions import PRESETS
from dunctl.simulation.demo import DEFAULT_START, RecordingChannels, prepare_demo, run_simulation, simulate_config
from dunctl.simulation.net_terms import build_net_terms_book
from dunctl.simulation.population import build_book

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "net-terms-cadences"
# A book of few card customers and (for these tests) as many net-terms ones.
NET = dataclasses.replace(PRESETS["median"], net_terms_share=1.0)
# Customers who pay late unless reminded before the due date, and always when reminded then: what the cadences
# do shows in a handful of invoices.
EAGER = dataclasses.replace(NET, net_terms_late_share=0.98, net_terms_never_pays=0.02, net_terms_reminder_before=1.0)
# Customers who mostly pay late whatever they are told: some late payments even in a handful of invoices.
LATE = dataclasses.replace(NET, net_terms_late_share=0.9, net_terms_reminder_before=0.0)


def test_net_terms_customers_join_the_book_without_changing_the_card_customers_luck():
    book = build_book(30, seed=5)
    plain = SimulatedAccount(book, seed=5, start=DEFAULT_START)
    joined = SimulatedAccount(book, seed=5, start=DEFAULT_START, net_terms=build_net_terms_book(30, 5, NET))
    for account in (plain, joined):
        account.advance_to(DEFAULT_START + timedelta(days=45))
    cards = {i: (v.status, v.paid_at, v.attempt_count) for i, v in plain._invoices.items()}
    assert cards and {i: (v.status, v.paid_at, v.attempt_count) for i, v in joined._invoices.items()
                      if i in cards} == cards
    net = [v for v in joined._invoices.values() if v.collection_method == "send_invoice"]
    assert len({v.customer_id for v in net}) == 30
    # Stripe's shape: sent for the customer to pay, due 30 days after it was issued, with a PDF and a page to pay on
    assert all(v.due_date == v.created + timedelta(days=30) and v.invoice_pdf and v.hosted_invoice_url
               and v.payment_method_id is None for v in net)
    assert joined.stats.invoices == plain.stats.invoices        # the card counters are the card book's


def test_a_small_book_opens_net_terms_cases_that_remind_before_the_due_date_and_some_pay_late(tmp_path):
    config = load_config(prepare_demo(tmp_path / "run"))
    ledger = Ledger.open(config.ledger_path)
    try:
        outcome, driver = simulate_config(config, ledger, RecordingChannels(config, {}), name="small", customers=5,
                                          seed=3, start=DEFAULT_START, billing_days=15, follow_up_days=15,
                                          assumptions=LATE, tick_every=timedelta(hours=6))
        cases = [c for c in ledger.cases.listed(include_ended=True) if c["failure_type"] == "net_terms"]
        before_due = [a for c in cases for a in ledger.actions(c["id"])
                      if a["step_id"] in ("due-in-7d", "due-in-1d") and a["status"] == "done"
                      and from_iso(a["finished_at"]) < from_iso(c["first_failed_at"])]
        invoices = list(ledger.rows("SELECT due_date, paid_at FROM invoices WHERE collection_method = 'send_invoice'"))
    finally:
        ledger.close()
    assert cases and before_due
    assert any(i["paid_at"] and i["paid_at"] > i["due_date"] for i in invoices)       # some paid late
    n = outcome.net_terms
    assert n.customers == 5 and n.watched and n.collected <= n.watched and n.reminders
    assert n.dso and sum(n.collected_by.values()) == sum(1 for i in invoices if i["paid_at"])
    assert outcome.failed_invoices == sum(1 for c in ledger_cases(config) if c["failure_type"] != "net_terms")


def ledger_cases(config) -> list[dict]:
    with Ledger.open_existing(config.ledger_path) as ledger:
        return ledger.cases.listed(include_ended=True)


def test_the_demo_prints_its_net_terms_invoices_aging_and_dso_in_80_columns(tmp_path):
    # COLUMNS as every CLI test has it: the output console is made once per process, at the first one's width
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo"), "--customers", "100", "--days", "5",
                                      "--follow-up", "0", "--seed", "1"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Net-terms invoices (net 30, sent to 1 business customer): " in out
    assert "Aging: open amounts" in out and "current · " in out
    assert "DSO (days sales outstanding, countback)" in out
    # the same tables on an 80-column terminal: nothing wider
    from rich.console import Console

    from dunctl.cli.net_terms import print_receivables
    from dunctl.receivables.aging import receivables_section

    with Ledger.open_existing(tmp_path / "demo" / "dunctl.db") as ledger:
        section = receivables_section(ledger, from_iso(ledger.get_state("simulation")["last_tick"]))
    console = Console(width=80, record=True)
    print_receivables(section, console)
    text = console.export_text()
    assert "current · " in text and "countback" in text.lower()
    assert max(len(line) for line in text.splitlines()) <= 80


def test_simulate_compares_net_terms_reminder_cadences_with_intervals(tmp_path):
    result = run_simulation([EXAMPLES / "before-and-after", EXAMPLES / "after-due-only"], tmp_path, customers=4,
                            days=15, follow_up_days=15, seed=2, assumptions=EAGER, tick_every=timedelta(hours=8))
    before, after = (o.net_terms for o in result.outcomes)
    assert before.watched == after.watched > 0          # the same invoices, the same luck
    # reminders before the due date bring the payments forward (these customers pay late unless reminded then)
    assert before.paid_by_due == before.watched and after.paid_by_due == 0
    assert after.days_late_mean > 0 and not before.days_late_mean
    from dunctl.cli.demo import outcome_table
    from rich.console import Console

    console = Console(width=400, record=True)
    console.print(outcome_table(result.outcomes))
    text = console.export_text()
    assert "net-terms: paid by the due date" in text and "95% CI" in text
    assert "net-terms: paid within 14 days past due vs before-and-after (95% CI)" in text


def test_a_directory_with_only_a_net_terms_sequence_runs_with_the_shipped_card_sequences(tmp_path):
    from dunctl.simulation.demo import variant_config

    name, config = variant_config(EXAMPLES / "after-due-only", tmp_path)
    assert name == "after-due-only"
    assert [s.at.minutes for s in config.sequences["net-terms"].steps][0] > 0
    assert "standard" in config.sequences                  # the card sequences as shipped



def test_the_simulated_net_terms_invoice_has_the_shape_the_stripe_sync_gives_one():
    """What the account's sync serves for a net-terms invoice is what `dunctl.stripe.convert` makes of Stripe's own
    (fixtures3.json's invoice, sent with terms: `collection_method: send_invoice`, `days_until_due: 30`)."""
    import json

    from dunctl.stripe.convert import invoice_from

    fixtures = Path(__file__).resolve().parent / "fakestripe_fixtures.json"
    stripe_invoice = json.loads(fixtures.read_text())["resources"]["invoice"]
    account = SimulatedAccount([], seed=1, start=DEFAULT_START, net_terms=build_net_terms_book(100, 1))
    ours = next(iter(account.sync(None, DEFAULT_START))).invoices[0]
    created = int(ours.created.timestamp())
    theirs = invoice_from({**stripe_invoice, "id": ours.id, "customer": ours.customer_id, "status": "open",
                           "collection_method": "send_invoice", "days_until_due": 30, "created": created,
                           "due_date": created + 30 * 86400, "amount_due": ours.amount_due, "amount_paid": 0,
                           "amount_remaining": ours.amount_due, "attempt_count": 0, "attempted": False,
                           "hosted_invoice_url": ours.hosted_invoice_url, "invoice_pdf": ours.invoice_pdf,
                           "currency": ours.currency, "default_payment_method": None})
    for name in ("collection_method", "due_date", "status", "amount_remaining", "attempt_count", "payment_method_id",
                 "first_failed_at", "decline", "hosted_invoice_url", "invoice_pdf"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert not ours.has_failed and not theirs.has_failed
