"""The simulated account and its book of customers: realistic, deterministic, and responsive to what dunctl does."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from dunctl.failures import classify
from dunctl.simulation import assumptions
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.population import build_book
from tests.gateway_contract import T0, sync_all

DAYS = timedelta(days=1)
ROOT = Path(__file__).resolve().parent.parent


def _world(customers: int = 400, seed: int = 3, **kwargs) -> SimulatedAccount:
    return SimulatedAccount(build_book(customers, seed), seed=seed, start=T0, **kwargs)


def _failed(account: SimulatedAccount, days: int = 40):
    synced = sync_all(account, None, T0 + days * DAYS)
    return synced, [i for i in synced.invoices.values() if i.first_failed_at]


# -- the book ---------------------------------------------------------------------------------------------------


def test_the_book_has_the_mix_the_issue_asks_for():
    book = build_book(1000, seed=1)
    assert {c.kind for c in book} == {"b2b", "b2c"}
    assert {c.interval for c in book} == {"month", "year"}
    assert {c.usage_based for c in book} == {True, False}
    assert {c.currency for c in book} == {"usd", "eur", "gbp", "jpy"}
    assert {c.method_type for c in book} == {"card", "us_bank_account"}
    assert any(c.tier == "enterprise" for c in book)
    assert all(c.method_type == "card" for c in book if c.currency != "usd")     # ACH is a US rail
    b2b = [c for c in book if c.kind == "b2b"]
    assert all(c.billing_email and c.billing_email != c.email for c in b2b)
    amounts = sorted(c.base_amount for c in book if c.currency == "usd")
    assert amounts[0] < 5000 and amounts[-1] > 1_000_000          # a spread of account values, in cents
    assert all(isinstance(c.base_amount, int) and c.base_amount > 0 for c in book)


def test_the_book_is_the_same_for_the_same_seed():
    assert build_book(200, seed=9) == build_book(200, seed=9)
    assert build_book(200, seed=9) != build_book(200, seed=10)


# -- failures -----------------------------------------------------------------------------------------------------


def test_invoices_fail_at_a_realistic_rate_with_a_realistic_mix_of_declines():
    account = _world(1500, seed=5)      # 182 failures, every kind of decline among them (3,000: twice the CPU)
    synced, failed = _failed(account, 45)
    rate = account.stats.failed / account.stats.invoices
    assert 0.04 < rate < 0.12, rate                     # 7.2% a month (Recurly), more for usage spikes
    types = Counter(classify(i.decline) for i in failed)
    assert {"card_soft", "card_hard", "card_update", "action_required", "bank_soft", "bank_hard"} <= set(types)
    assert types["card_soft"] == max(types.values())   # soft declines are the bulk
    for invoice in failed:
        assert invoice.status in ("open", "paid") and invoice.attempt_count >= 1   # some pay unprompted
        assert invoice.failed_at >= invoice.first_failed_at > invoice.created
        assert invoice.subscription_id and invoice.customer_id in synced.customers
        assert invoice.amount_due == sum(line.amount for line in invoice.lines)
        if invoice.payment_method_type == "us_bank_account":
            assert invoice.decline.failure_code.startswith("R")
            # ACH returns surface business days after the debit, not the same hour
            assert invoice.first_failed_at - invoice.created >= 3 * DAYS


def test_ach_returns_and_disputes_appear():
    account = _world(2000, seed=2)      # (3 disputes; 4,000 had 4)
    synced, failed = _failed(account, 45)
    assert any(i.payment_method_type == "us_bank_account" for i in failed)
    assert any(s.kind == "dispute" for s in synced.signals) or account.stats.disputes == 0
    assert account.stats.disputes >= 1


# -- determinism --------------------------------------------------------------------------------------------------


def _history(seed: int) -> list:
    account = _world(300, seed=seed)
    out = []
    for day in range(1, 40):
        synced = sync_all(account, {"seq": 0} if day == 1 else out[-1][0], T0 + day * DAYS)
        for invoice_id in sorted(synced.invoices):
            invoice = synced.invoices[invoice_id]
            if invoice.status == "open" and invoice.first_failed_at and day % 3 == 0:
                account.pay_invoice(invoice_id, f"k-{invoice_id}-{day}")
                account.message_delivered(invoice_id, "email", T0 + day * DAYS, personalised=True)
        out.append((synced.cursor, sorted((i.id, i.status, i.attempt_count) for i in synced.invoices.values()),
                    [dataclasses.astuple(s) for s in synced.signals]))
    return out


def test_same_seed_same_world():
    assert _history(4) == _history(4)
    assert _history(4) != _history(5)


def test_no_global_random_and_no_wall_clock(monkeypatch):
    import random
    import time

    def refuse(*args, **kwargs):
        raise AssertionError("the simulation must not use the global random generator or the wall clock")

    for name in ("random", "randint", "uniform", "choice", "gauss", "expovariate", "shuffle"):
        monkeypatch.setattr(random, name, refuse)
    monkeypatch.setattr(time, "time", refuse)
    _history(1)


# -- customers respond --------------------------------------------------------------------------------------------


def _soft_failures(account: SimulatedAccount) -> list[str]:
    _, failed = _failed(account, 30)
    return [i.id for i in failed if classify(i.decline) == "card_soft" and i.status == "open"]


def _retry_all(account: SimulatedAccount, invoice_ids: list[str], days: list[float]) -> int:
    """Retry every invoice at the given days after its failure; how many got paid."""
    paid = set()
    schedule = sorted((account.invoice_state(i).first_failed_at + d * DAYS, i, n) for i in invoice_ids
                      for n, d in enumerate(days))
    for at, invoice_id, n in schedule:
        account.advance_to(at)
        if invoice_id not in paid and account.invoice_state(invoice_id).status == "open":
            if account.pay_invoice(invoice_id, f"retry-{invoice_id}-{n}").succeeded:
                paid.add(invoice_id)
    return len(paid)


def test_spaced_retries_beat_a_burst():
    # "Three retries spread across 7 to 14 days outperform six retries in 48 hours"
    calm = dataclasses.replace(assumptions.DEFAULT, organic_daily_rate=1e-9, dispute_rate={"flat": 0, "usage": 0})
    spaced = _world(4000, seed=8, assumptions=calm)
    burst = _world(4000, seed=8, assumptions=calm)
    soft = _soft_failures(spaced)
    assert soft == _soft_failures(burst) and len(soft) > 50
    assert _retry_all(spaced, soft, [2, 6, 11]) > _retry_all(burst, soft, [0.2, 0.5, 0.9, 1.2, 1.5, 1.9])


def test_hard_declines_recover_only_after_the_card_is_replaced():
    account = _world(4000, seed=6)
    _, failed = _failed(account, 30)
    hard = [i.id for i in failed if classify(i.decline) == "card_hard" and i.status == "open"]
    assert hard
    for n, invoice_id in enumerate(hard):
        for attempt in range(4):
            outcome = account.pay_invoice(invoice_id, f"hard-{n}-{attempt}")
            assert not outcome.succeeded or account._customers[
                account.invoice_state(invoice_id).customer_id].method_changed_at is not None


def test_a_message_prompts_payments_and_personalisation_helps():
    def paid_after(personalised: bool) -> int:
        calm = dataclasses.replace(assumptions.DEFAULT, organic_daily_rate=1e-9)
        account = _world(4000, seed=7, assumptions=calm)
        synced, failed = _failed(account, 20)
        at = T0 + 20 * DAYS
        for invoice in failed:
            if invoice.status == "open":
                account.message_delivered(invoice.id, "email", at, personalised=personalised)
        account.advance_to(at + 3 * DAYS)
        return account.stats.responses["email"]

    generic, personal = paid_after(False), paid_after(True)
    assert 0 < generic < personal


def test_a_card_update_is_a_signal_and_unblocks_retries():
    eager = dataclasses.replace(assumptions.DEFAULT, email_response=1.0, retry_success_after_update=1.0,
                                organic_daily_rate=1e-9)
    account = SimulatedAccount([], seed=0, start=T0, assumptions=eager)
    invoice_id = account.script_failure(5000, "usd", "expired_card", "card", T0, "x@example.com")
    first = sync_all(account, None, T0 + DAYS)
    assert not account.pay_invoice(invoice_id, "k1").succeeded          # the expired card stays expired
    # the email carried a billing-portal link: the customer replaces the card there; the invoice waits
    account.update_link(first.invoices[invoice_id], "billing_portal", None, "link-1")
    account.message_delivered(invoice_id, "email", T0 + DAYS, personalised=True)
    later = sync_all(account, first.cursor, T0 + 10 * DAYS)
    assert [s.kind for s in later.signals] == ["payment_method_updated"]
    assert account.invoice_state(invoice_id).status == "open"
    assert account.pay_invoice(invoice_id, "k2").succeeded             # a retry on the new card works
    assert sync_all(account, later.cursor, T0 + 11 * DAYS).invoices[invoice_id].status == "paid"


def test_with_a_hosted_invoice_link_the_customer_pays_directly():
    eager = dataclasses.replace(assumptions.DEFAULT, email_response=1.0, organic_daily_rate=1e-9)
    account = SimulatedAccount([], seed=0, start=T0, assumptions=eager)
    invoice_id = account.script_failure(5000, "usd", "stolen_card", "card", T0, "x@example.com")
    first = sync_all(account, None, T0 + DAYS)
    account.message_delivered(invoice_id, "email", T0 + DAYS, personalised=True)
    later = sync_all(account, first.cursor, T0 + 10 * DAYS)
    assert later.invoices[invoice_id].status == "paid"
    assert later.invoices[invoice_id].paid_at > T0 + DAYS
    assert any(s.kind == "payment_method_updated" for s in later.signals)


# -- assumptions are written down in one place, and in the docs ---------------------------------------------------


def test_every_assumption_has_a_source_and_a_meaning():
    for row in assumptions.rows():
        assert row["source"] in assumptions.SOURCES, row["name"]
        assert row["meaning"], row["name"]
        if row["source"] == assumptions.GUIDE:
            assert row["quote"], f"{row['name']} cites the guide but quotes nothing"


def test_published_figures_name_where_they_were_published():
    """Figures from outside the guide (net-terms: Atradius, Xero) quote their source with its address."""
    published = [row for row in assumptions.rows() if row["source"] == assumptions.PUBLISHED]
    assert published
    for row in published:
        assert "http" in row["quote"] and "\"" in row["quote"], row["name"]


def test_guide_quotes_are_in_the_guide():
    """The assumptions quote the guide word for word; the repository carries the guide (docs/), so this runs
    everywhere. Beside the team's shared folder, the copy must be the guide itself."""
    guide = ROOT / "docs" / "dunning-guide.txt"
    shared = ROOT.parent / "shared" / "seed" / "dunning-guide.txt"
    if shared.exists():
        assert guide.read_text() == shared.read_text(), "docs/dunning-guide.txt differs from the shared guide"
    text = " ".join(guide.read_text().split())
    for row in assumptions.rows():
        if row["quote"] and row["source"] == assumptions.GUIDE:
            quoted = row["quote"].split(" (")[0].split("...")[0].strip()
            assert quoted[:40] in text, f"{row['name']}: '{quoted[:40]}' is not in the guide"


def test_docs_carry_the_same_table_as_the_code():
    docs = (ROOT / "docs" / "simulation.md").read_text()
    assert assumptions.markdown_table() in docs, "regenerate: python -m dunctl.simulation.assumptions"


def test_the_median_preset_is_documented_with_its_anchors():
    docs = (ROOT / "docs" / "simulation.md").read_text()
    assert assumptions.median_table() in docs, "regenerate: python -m dunctl.simulation.assumptions"
    assert set(assumptions.PRESETS) == {"top", "median"} and assumptions.DEFAULT_PRESET == "median"
    median = assumptions.PRESETS["median"]
    for name, (value, anchor) in assumptions.MEDIAN_CHANGES.items():
        assert getattr(median, name) == value and anchor, name
        assert getattr(assumptions.DEFAULT, name) != value, f"{name}: the median preset changes nothing"
    anchors = ROOT.parent / "shared" / "anchor-figures.md"
    if anchors.exists():
        text = anchors.read_text()
        for quoted in ("15% on average", "21% on average", "median customer reaching 50% overall recovery"):
            assert quoted in text


def test_pre_dunning_notices_prevent_expired_card_failures_on_the_same_customers(tmp_path):
    """`simulate` with notices on vs off: the same customers, the same luck; expiry notices get some cards updated
    before they expire, so fewer renewals fail (the account's own counts, not the report's)."""
    from dunctl.scaffold import write_starter
    from dunctl.simulation.demo import run_simulation

    for name, enabled in (("on", "true"), ("off", "false")):
        write_starter(tmp_path / name)
        config = tmp_path / name / "dunctl.yaml"
        config.write_text(config.read_text().replace("notices:\n  enabled: true", f"notices:\n  enabled: {enabled}"))
    result = run_simulation([tmp_path / "on" / "dunctl.yaml", tmp_path / "off" / "dunctl.yaml"], tmp_path / "work",
                            customers=100, days=45, follow_up_days=0, seed=7)   # 300 showed it no better
    on, off = result.outcomes
    assert on.notices_sent > 0 and off.notices_sent == 0
    assert on.cards_updated_after_notice > 0
    assert on.failed_invoices < off.failed_invoices


def test_grouping_sends_fewer_messages_per_recovered_invoice_at_no_loss_of_recovery(tmp_path):
    """`simulate` with dunning.group_messages on vs off, on a small book where many customers have add-on
    subscriptions (billed with the main plan, so both invoices fail together and their emails fall due together):
    grouped, the customers receive fewer messages per recovered invoice, and no fewer invoices are recovered."""
    from dunctl.scaffold import write_starter
    from dunctl.simulation.demo import run_simulation

    for name, grouped in (("grouped", "true"), ("separate", "false")):
        write_starter(tmp_path / name)
        config = tmp_path / name / "dunctl.yaml"
        text = config.read_text().replace("group_messages: true", f"group_messages: {grouped}")
        config.write_text(text.replace("notices:\n  enabled: true", "notices:\n  enabled: false"))   # faster
    world = dataclasses.replace(assumptions.preset_assumptions("median"),
                                several_subscriptions_share={"b2c": 0.6, "b2b": 0.6})
    result = run_simulation([tmp_path / "grouped" / "dunctl.yaml", tmp_path / "separate" / "dunctl.yaml"],
                            tmp_path / "work", customers=150, days=20, follow_up_days=15, seed=7, assumptions=world)
    # (150 customers: 25 failures each, 5.7 messages per recovered invoice against 9.1; 120 gave only 16 failures)
    grouped, separate = result.outcomes
    assert grouped.failed_invoices == separate.failed_invoices > 20       # the same failures: the same book
    assert grouped.messages_per_recovered < 0.85 * separate.messages_per_recovered
    assert grouped.recovered_of_failed >= separate.recovered_of_failed - 0.03


def test_what_the_account_hands_out_is_a_copy_dunctl_cannot_change_the_account_through():
    """The account copies its objects field by field (not dataclasses.replace: issue #25), which is right only
    while dunctl.model's dataclasses have no __post_init__ and no slots."""
    from dunctl import model

    for cls in (model.Customer, model.PaymentMethod, model.Subscription, model.Invoice, model.InvoiceLine):
        assert not hasattr(cls, "__post_init__") and not hasattr(cls, "__slots__"), cls
    account = _world(3)
    batch = next(account.sync(None, T0 + 40 * DAYS))
    invoice, customer = batch.invoices[0], batch.customers[0]
    invoice.metadata["x"], invoice.lines[0].amount, customer.metadata["y"] = "1", -1, "2"
    again = next(account.sync(None, T0 + 40 * DAYS))
    assert again.invoices[0].id == invoice.id and "x" not in again.invoices[0].metadata
    assert again.invoices[0].lines[0].amount != -1 and "y" not in again.customers[0].metadata
