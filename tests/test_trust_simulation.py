"""The trust simulation (bench/trust_sim.py) on a small book: monitor -> live, cron down for 3, 10 and 30 days, a
SIGTERM and a kill -9 mid-tick, a machine clock a week ahead. Nothing irreversible reaches a customer not told in
time, no message goes twice or after a payment, every interruption leaves at most one `unknown`, and no paid
case stays paused."""

import pytest

from bench import trust_sim


@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    return trust_sim.run(tmp_path_factory.mktemp("trust") / "sim", customers=100, seed=1)


def test_the_trust_simulation_breaks_no_rule(counts):
    assert counts.interruptions == 2 and counts.stopped_by_signal == 1 and counts.clock_refusals == 1
    assert counts.irreversible >= 5 and counts.messages >= 100          # the rules were tested, not idle
    assert (counts.irreversible_untold, counts.duplicate_messages, counts.after_payment,
            counts.paused_after_payment) == (0, 0, 0, 0), counts.examples
    assert counts.unknown <= counts.interruptions


def test_its_counters_see_a_breach(counts, tmp_path, monkeypatch):
    """The counters are not blind: with the notice period cut to nothing in the rule, they count the breaches."""
    from datetime import timedelta

    from dunctl import irreversible

    real = irreversible.earned

    def careless(step, case, sequence, records, settings, now):
        import dataclasses

        return real(step, case, sequence, records,
                    dataclasses.replace(settings, notice_before_suspension=timedelta(0)), now)

    monkeypatch.setattr(irreversible, "earned", careless)
    # 40 customers are enough to see it (7 untold of 12 irreversible actions), at 1.0 s of CPU against 100's 2.6 s
    broken = trust_sim.run(tmp_path / "sim", customers=40, seed=1)
    assert broken.irreversible_untold > 0
