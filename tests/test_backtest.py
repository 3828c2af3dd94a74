"""`simulate --from-ledger`: the customer model is fitted to a ledger channel by channel (retries, messages,
escalation, suspension, unprompted, timing), each from the recoveries it rests on; checked on held-out cases with
a fresh seed; the replay of the ledger under its own config reproduces what it saw, ranks a worse config below
it, and every projected rate carries its interval (issue 24)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from typer.testing import CliRunner

from dunctl.backtest import run_backtest
from dunctl.backtest_model import MIN_RECOVERIES, CaseRecord, apply, credit, fit_model, validate
from dunctl.cli.app import app
from dunctl.config import load_config
from dunctl.simulation.assumptions import preset_assumptions
from dunctl.simulation.calibration import write_sequences
from dunctl.simulation.demo import run_demo
from tests.backtest_world import play

runner = CliRunner()
SINCE = "2026-11-17"          # the demo's last days


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    # 20 days of a dense book: every replay ticks hourly over the ledger's days, so days cost, not customers. 600
    # customers (27 failed invoices) replay their ledger as exactly as 900 did (35), at 0.6x the demo's CPU.
    result = run_demo(root / "demo", customers=600, days=20, seed=8)
    emptied = write_sequences(root / "emptied", lambda i, s: False)
    return result, emptied, root


@pytest.fixture(scope="module")
def backtest(demo):
    result, emptied, root = demo
    return run_backtest(load_config(result.config_path), [emptied], root / "work", result.last_tick, seed=8)


def test_the_baseline_recovers_the_demos_own_numbers(demo, backtest):
    result, _, _ = demo
    o = result.outcome
    assert backtest.cases == o.failed_invoices
    base = backtest.baseline
    assert base.failed_invoices == o.failed_invoices
    assert abs(base.recovered_of_failed - o.recovered_of_failed) <= 0.05
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
        assert abs(check["ledger"]["rate"] - check["replay"]["rate"]) <= 0.05
    gap = backtest.baseline_gap
    assert gap["low"] <= gap["gap"] <= gap["high"] and gap["low"] < 0 < gap["high"]
    assert not any(w.startswith("baseline:") for w in backtest.warnings)


def test_an_emptied_sequence_ranks_below_the_baseline(backtest):
    emptied = backtest.candidates[0]
    assert emptied.messages_sent == 0
    assert emptied.retries_used <= 2          # only on a new card (stripe.retry_on_update), never a step
    assert emptied.recovered_of_failed < backtest.baseline.recovered_of_failed - 0.15
    verdict = backtest.comparisons[0]
    assert verdict.distinguishable and verdict.difference < 0
    assert verdict.verdict.startswith("emptied recovers") and "fewer than the baseline" in verdict.verdict


def test_every_channel_is_fitted_from_its_recoveries_or_named_as_not(backtest):
    """The threshold counts recoveries, not cases: the demo ledger retried dozens of cases and collected a few,
    and the fit says so instead of fitting retries from them (issue 24)."""
    fits = {f.quantity: f for f in backtest.fits}
    assert set(fits) == {"retries", "messages", "escalation", "suspension", "unprompted", "timing"}
    retries = fits["retries"]
    assert 0 < retries.recoveries < MIN_RECOVERIES and not retries.fitted
    for fit in fits.values():
        assert fit.fitted == (fit.recoveries >= MIN_RECOVERIES)
        if not fit.fitted:
            assert fit.scale == 1.0 and f"{fit.recoveries} recoveries on the ledger, fewer than 30" in fit.why
            assert any(w.startswith(f"{fit.quantity} ({', '.join(fit.parameters)}) not fitted") for w in
                       backtest.warnings), fit.quantity
        if fit.observed is not None and fit.quantity != "timing":
            assert fit.observed_low <= fit.observed <= fit.observed_high


def test_it_validates_on_held_out_cases_with_a_fresh_seed_and_every_projection_has_an_interval(backtest):
    v = backtest.validation
    assert v.fitted_on + v.held_out == backtest.cases and 0 < v.held_out < v.fitted_on
    assert v.seed != backtest.seed
    # too few held-out cases to check the model: refused by name, not passed silently
    assert v.gap is None and v.verdict.startswith(f"not validated: {v.held_out} held-out case(s)")
    assert any(w.startswith("validation: not validated") for w in backtest.warnings)
    assert set(backtest.projected) == {"ledger (observed)", "baseline", *(o.name for o in backtest.candidates)}
    for rates in backtest.projected.values():
        for p in rates.values():
            if p["rate"] is None:            # no case ended (the emptied sequence ends none): no rate to bound
                assert p == {"rate": None, "low": None, "high": None}
                continue
            assert p["low"] <= p["rate"] <= p["high"] and p["high"] - p["low"] > 0.05     # 35 cases: wide
    baseline = backtest.projected["baseline"]["recovered_of_failed"]
    assert baseline["rate"] == round(backtest.baseline.recovered / backtest.baseline.failed_invoices, 4)
    for check in backtest.check.values():
        for column in ("ledger", "preset", "replay"):
            assert check[column]["low"] <= check[column]["rate"] <= check[column]["high"]


def test_a_gap_beyond_its_interval_is_a_named_miss():
    t0 = datetime(2026, 11, 2, tzinfo=timezone.utc)

    def cases(recovered: int, n: int) -> list[CaseRecord]:
        return [CaseRecord(f"in_{i}", t0, t0 + timedelta(days=3) if i < recovered else None, True, True, False, ())
                for i in range(n)]

    missed = validate(cases(15, 60), cases(36, 60), fitted_on=120, seed=9)
    assert missed.misses and missed.gap == 0.35 and 0 < missed.gap_low < missed.gap_high
    assert "misses this ledger beyond its interval" in missed.verdict and "+35.0 points" in missed.verdict
    close = validate(cases(15, 60), cases(19, 60), fitted_on=120, seed=9)
    assert not close.misses and close.gap_low < 0 < close.gap_high and "within the interval" in close.verdict


def test_a_payment_after_lost_service_is_the_suspensions_not_the_message_between_nor_unprompted():
    t0 = datetime(2026, 11, 2, tzinfo=timezone.utc)
    prompts = ((t0, "messages"), (t0 + timedelta(days=21), "suspension"), (t0 + timedelta(days=26), "messages"))
    paid = CaseRecord("in_1", t0, t0 + timedelta(days=26, hours=5), False, False, False, prompts)
    assert credit(paid)[0] == "suspension"
    # ... and long after every prompt's effect, it is unprompted
    late = CaseRecord("in_2", t0, t0 + timedelta(days=40), False, False, False, prompts)
    assert credit(late) == ("unprompted", None)


def test_the_fit_recovers_known_parameters():
    """Ledgers played from known parameters (800 cases on the simulated account, worked like the standard
    sequence): fitted from the top preset, every channel and the timing come back within 25% of the truth,
    and suspension-driven payments are not credited to unprompted (issue 24: a `top`-world ledger fitted
    unprompted x2.6)."""
    top = preset_assumptions("top")
    truth = {"retries": 0.7, "messages": 1.6, "escalation": 1.5, "suspension": 0.5}
    timing = 1.5
    ledger = play(apply(top, truth, timing), seed=5, cases=800)
    fitted = fit_model(ledger, lambda model, n: play(model, seed=42, cases=800), top, "top")
    fits = {f.quantity: f for f in fitted.fits}
    for name, scale in (*truth.items(), ("timing", timing)):
        assert fits[name].fitted, fits[name].why
        assert abs(math.log(fits[name].scale / scale)) <= math.log(1.25), (name, fits[name].scale, scale)
    assert not fits["unprompted"].fitted and fits["unprompted"].recoveries < MIN_RECOVERIES
    assert fitted.model.response_delay_scale == pytest.approx(top.response_delay_scale * fits["timing"].scale,
                                                              rel=1e-3)


def test_cli_side_by_side_and_json(demo, tmp_path):
    """Through the CLI, on the last days of the ledger (a short replay): the same config as a candidate is the
    baseline again (same invoices, same luck), an emptied one ranks below; a history too short to fit keeps
    the preset's values and says so."""
    result, emptied, _ = demo
    config = str(result.config_path)
    shown = runner.invoke(app, ["-c", config, "simulate", "--from-ledger", config, str(emptied), "--since", SINCE],
                          env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.stdout.splitlines() if "baseline" in line and "emptied" in line)
    assert header.index("ledger (observed)") < header.index("baseline") < header.index("demo") < header.index(
        "emptied")
    # (row labels may wrap in the table: only their first words are looked for)
    for text in ("recovered of failed vs", "recovered of failed invoices", "demo: not yet distinguishable",
                 "suspension (suspension_response, cancellation_winback):", "Validation, on the",
                 "Baseline against the ledger, every case: recovered of failed"):
        assert text in shown.stdout, text
    assert "warning: escalation (escalation_response) not fitted" in shown.stderr
    data = json.loads(runner.invoke(app, ["-c", config, "simulate", "--from-ledger", config, "--json",
                                          "--since", SINCE]).stdout)
    assert data["since"] == f"{SINCE}T00:00:00Z" and data["baseline"]["name"] == "baseline"
    assert data["cases"] == data["baseline"]["failed_invoices"] < result.outcome.failed_invoices
    same = data["candidates"][0]
    assert (same["recovered"], same["messages_sent"], same["retries_dunctl"]) == (
        data["baseline"]["recovered"], data["baseline"]["messages_sent"], data["baseline"]["retries_dunctl"])
    assert data["comparisons"][0]["difference"] == 0
    assert data["validation"]["held_out"] + data["validation"]["fitted_on"] == data["cases"]
    # the baseline is set against the same cohort of the ledger, not the whole ledger (--since)
    gap = data["baseline_gap"]
    assert gap["replay"] == data["baseline"]["recovered_of_failed"]
    assert gap["gap"] == pytest.approx(gap["replay"] - gap["ledger"], abs=1e-4)
    # (the observed column reads the whole ledger; its last days' cases have had less time to be paid)
    assert gap["ledger"] < data["observed"]["recovered_of_failed"]
    assert set(data["projected"]) == {"ledger (observed)", "baseline", "demo"}
    assert 0 < data["cases"] < MIN_RECOVERIES and not any(f["fitted"] for f in data["fits"])
    assert any(w.startswith(f"only {data['cases']} failed invoices") for w in data["warnings"])
    no_ledger = tmp_path / "fresh"
    no_ledger.mkdir()
    (no_ledger / "dunctl.yaml").write_text(yaml.safe_dump(
        {**yaml.safe_load(result.config_path.read_text()), "ledger": {"path": "none.db"},
         "sequences": {"dir": str(result.directory / "sequences")},
         "templates": {"dir": str(result.directory / "templates")}}))
    missing = runner.invoke(app, ["-c", str(no_ledger / "dunctl.yaml"), "simulate", "--from-ledger"])
    assert missing.exit_code == 2 and "no ledger at" in missing.output
