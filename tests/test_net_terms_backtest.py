"""Backtests (`simulate --from-ledger`) on a ledger with net-terms invoices (issue #26, item 7): the net-terms
invoices are replayed as invoices with payment terms, never as failed card payments, and the candidates' reminder
cadences are compared on them as card sequences are."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from dunctl.backtest import load_history, run_backtest
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.simulation.assumptions import PRESETS
from dunctl.simulation.demo import DEFAULT_START, RecordingChannels, prepare_demo, simulate_config

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "net-terms-cadences"
# Few customers, many failures, as many net-terms customers as card ones.
WORLD = dataclasses.replace(PRESETS["median"], net_terms_share=1.0, invoice_failure_rate=0.6)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A small simulated ledger: card cases and net-terms cases, and the clock of its last tick."""
    config = load_config(prepare_demo(tmp_path_factory.mktemp("net-terms") / "run"))
    with Ledger.open(config.ledger_path) as ledger:
        _, driver = simulate_config(config, ledger, RecordingChannels(config, {}), name="history", customers=5,
                                    seed=11, start=DEFAULT_START, billing_days=12, follow_up_days=8,
                                    assumptions=WORLD, tick_every=timedelta(hours=6))
        kinds = {row["failure_type"] for row in ledger.rows("SELECT failure_type FROM cases")}
    assert "net_terms" in kinds and len(kinds) > 1
    return config, driver.last_tick


def test_a_backtest_never_replays_a_net_terms_invoice_as_a_failed_payment(history):
    config, _ = history
    with Ledger.open_existing(config.ledger_path) as ledger:
        replayed = load_history(ledger)
        cards = {row["invoice_id"] for row in ledger.rows("SELECT invoice_id FROM cases WHERE failure_type != 'net_terms'")}
    assert replayed and {h.invoice_id for h in replayed} == cards


def test_a_backtest_compares_net_terms_cadences_on_the_ledgers_own_invoices(history, tmp_path):
    config, now = history
    result = run_backtest(config, [EXAMPLES / "after-due-only"], tmp_path, now, tick_every=timedelta(hours=6))
    observed, baseline, candidate = result.observed.net_terms, result.baseline.net_terms, result.candidates[0].net_terms
    assert observed and baseline and candidate
    assert observed.invoices == baseline.invoices == candidate.invoices       # the ledger's own invoices
    assert baseline.watched == candidate.watched > 0
    # the card figures are the card cases' alone, as on the ledger
    assert result.baseline.failed_invoices == result.observed.failed_invoices == result.cases
