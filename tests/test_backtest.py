"""`simulate --from-ledger`: replaying a ledger's own failed invoices reproduces what the ledger saw under its own
config, ranks a worse config below it, and says what it fitted from how many cases."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from dunctl.backtest import MIN_CASES, run_backtest
from dunctl.cli.app import app
from dunctl.clock import parse_instant
from dunctl.config import load_config
from dunctl.simulation.calibration import write_sequences
from dunctl.simulation.demo import run_demo

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    result = run_demo(root / "demo", customers=700, days=30, seed=8)
    emptied = write_sequences(root / "emptied", lambda i, s: False)
    return result, emptied, root


@pytest.fixture(scope="module")
def backtest(demo):
    result, emptied, root = demo
    return run_backtest(load_config(result.config_path), [result.config_path, emptied], root / "work",
                        result.last_tick, seed=8)


def test_the_baseline_recovers_the_demos_own_numbers(demo, backtest):
    result, _, _ = demo
    o = result.outcome
    assert backtest.cases == o.failed_invoices > MIN_CASES
    base = backtest.baseline
    assert base.failed_invoices == o.failed_invoices
    assert abs(base.recovered_of_all - o.recovered_of_all) <= 0.05
    assert abs(base.recovered_of_ended - o.recovered_of_ended) <= 0.08
    assert abs(base.messages_sent - o.messages_sent) <= 0.1 * o.messages_sent
    # the observed column is the ledger itself, as `dunctl report` reads it
    assert (backtest.observed.recovered, backtest.observed.failed_invoices) == (o.recovered, o.failed_invoices)
    # ... and its counts are the run's own, from the one engine: a grouped email once, dunctl's retry after a card
    # update as dunctl's (the simulated account knows who made every attempt), never Stripe's (issue 24)
    observed = backtest.observed
    assert o.retries_dunctl > 0 and o.messages_sent > 0
    assert (observed.messages_sent, observed.retries_dunctl, observed.retries_stripe) == (
        o.messages_sent, o.retries_dunctl, o.retries_stripe)
    for check in backtest.check.values():
        assert abs(check["ledger"] - check["replay"]) <= 0.05


def test_the_same_config_as_a_candidate_is_the_baseline_again(backtest):
    same = backtest.candidates[0]
    assert (same.recovered, same.messages_sent, same.retries_used) == (
        backtest.baseline.recovered, backtest.baseline.messages_sent, backtest.baseline.retries_used)
    assert backtest.comparisons[0].difference == 0


def test_an_emptied_sequence_ranks_below_the_baseline(backtest):
    emptied = backtest.candidates[1]
    assert emptied.messages_sent == 0
    assert emptied.retries_used <= 2          # only on a new card (stripe.retry_on_update), never a step
    assert emptied.recovered_of_all < backtest.baseline.recovered_of_all - 0.15
    verdict = backtest.comparisons[1]
    assert verdict.distinguishable and verdict.difference < 0
    assert verdict.verdict.startswith("emptied recovers") and "fewer than the baseline" in verdict.verdict


def test_it_says_what_it_fitted_and_from_how_many_cases(backtest):
    fits = {f.quantity: f for f in backtest.fits}
    assert set(fits) == {"retries", "messages", "unprompted", "timing"}
    for fit in fits.values():
        if fit.fitted:
            assert f"fitted from {fit.cases} cases" in fit.why and fit.cases >= MIN_CASES
        else:
            assert f"kept the median preset's value: {fit.cases} case(s)" in fit.why or "none" in fit.why
    # the demo ran in the median preset's world: fitting it back changes little
    assert all(0.6 <= f.scale <= 1.6 for f in fits.values() if f.quantity != "timing")
    assert 0.5 <= fits["timing"].scale <= 2           # one doubling or halving at most


def test_too_little_history_keeps_the_presets_values_and_warns(demo):
    result, _, root = demo
    late = parse_instant("2026-11-28T00:00:00Z")
    small = run_backtest(load_config(result.config_path), [], root / "small", result.last_tick, since=late, seed=8)
    assert 0 < small.cases < MIN_CASES
    assert not any(f.fitted for f in small.fits)
    assert any("only" in w and "failed invoices" in w for w in small.warnings)


def test_cli_side_by_side_and_json(demo, tmp_path):
    result, emptied, _ = demo
    config = str(result.config_path)
    shown = runner.invoke(app, ["-c", config, "simulate", "--from-ledger", str(emptied)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.stdout.splitlines() if "baseline" in line and "emptied" in line)
    assert header.index("ledger (observed)") < header.index("baseline") < header.index("emptied")
    assert "recovered of all vs baseline (95% CI)" in shown.stdout and "retries (retry_recoverable):" in shown.stdout
    data = json.loads(runner.invoke(app, ["-c", config, "simulate", "--from-ledger", "--json",
                                          "--since", "2026-11-10"]).stdout)
    assert data["since"] == "2026-11-10T00:00:00Z" and data["baseline"]["name"] == "baseline"
    assert data["cases"] == data["baseline"]["failed_invoices"] < result.outcome.failed_invoices
    no_ledger = tmp_path / "fresh"
    no_ledger.mkdir()
    (no_ledger / "dunctl.yaml").write_text(yaml.safe_dump(
        {**yaml.safe_load(result.config_path.read_text()), "ledger": {"path": "none.db"},
         "sequences": {"dir": str(result.directory / "sequences")},
         "templates": {"dir": str(result.directory / "templates")}}))
    missing = runner.invoke(app, ["-c", str(no_ledger / "dunctl.yaml"), "simulate", "--from-ledger"])
    assert missing.exit_code == 2 and "no ledger at" in missing.output


def test_a_ledger_whose_customers_pay_late_fits_a_slower_timing(tmp_path):
    """A ledger built in a world where customers take twelve times as long to act: the backtest fits slower
    response delays than the preset's, and its replay's share recovered by day 7 and 14 comes closer to the
    ledger's than the unfitted preset's does."""
    import dataclasses

    from dunctl.ledger import Ledger
    from dunctl.simulation.assumptions import preset_assumptions
    from dunctl.simulation.demo import DEFAULT_START, RecordingChannels, prepare_demo, simulate_config

    config_path = prepare_demo(tmp_path / "late")
    # Pre-dunning notices off (they do not change when customers pay, and cost time); the top preset's customers,
    # who respond more, so a small book has enough recoveries to fit from.
    config_path.write_text(config_path.read_text().replace("notices:\n  enabled: true", "notices:\n  enabled: false"))
    config = load_config(config_path)
    slow = dataclasses.replace(preset_assumptions("top"), response_delay_scale=12.0)
    ledger = Ledger.open(config.ledger_path)
    try:
        _, driver = simulate_config(config, ledger, RecordingChannels(config, {}), name="late", customers=2000,
                                    seed=5, start=DEFAULT_START, billing_days=25, follow_up_days=10,
                                    assumptions=slow)
    finally:
        ledger.close()
    result = run_backtest(config, [], tmp_path / "work", driver.last_tick, seed=5, preset="top")
    timing = next(f for f in result.fits if f.quantity == "timing")
    assert timing.fitted and timing.scale > 1, timing.why
    assert f"fitted from {timing.cases} cases recovered" in timing.why
    checks = [result.check[f"recovered within {days} days"] for days in (7, 14)]

    def distance(column: str) -> float:    # what the fit minimises: the by-day shares' squared differences
        return sum((check[column] - check["ledger"]) ** 2 for check in checks)

    assert distance("replay") < distance("preset"), checks
