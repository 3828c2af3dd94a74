"""Issue 20, defects 3 and 9: a tick acts only on a clock it can trust. `--now` never goes back before the last
tick, a live key's `--now` never runs ahead of the machine's clock (unless --dry-run), and the machine's clock
is compared with Stripe's (the Date header of its answers) before any effect."""

import json
import sqlite3
from datetime import datetime, timedelta, timezone

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import at, cli, starter

LIVE_KEY = "sk_live_" + "fake_dunctl_clocks_0000"   # only ever sent to the fake Stripe on 127.0.0.1


def wall() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def config_for(tmp_path, fake):
    fake.set_now(wall())      # Stripe's clock is the real one: these tests tick by the machine's clock
    return starter(tmp_path, **{"stripe.api_base": fake.url})


def ticks(tmp_path) -> int:
    with sqlite3.connect(tmp_path / "dunctl.db") as db:
        return db.execute("SELECT count(*) FROM ticks").fetchone()[0]


def sent(tmp_path) -> int:
    return len(list((tmp_path / "outbox").glob("*.eml"))) if (tmp_path / "outbox").exists() else 0


def test_a_live_key_refuses_now_a_year_ahead_unless_dry_run(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    fake_stripe.fail_invoice(amount=4900, at=wall() - timedelta(days=1))
    typo = (wall() + timedelta(days=365)).isoformat()
    env = {"STRIPE_API_KEY": LIVE_KEY}

    refused = cli(config, "tick", "--now", typo, env=env)
    assert refused.exit_code == 2, refused.output
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused.output
    assert typo[:10] in lines[0] and wall().isoformat()[:10] in lines[0] and "--dry-run" in lines[0]
    assert fake_stripe.count() == 0 and ticks(tmp_path) == 0 and sent(tmp_path) == 0   # nothing asked, nothing kept

    rehearsal = cli(config, "tick", "--now", typo, "--dry-run", env=env)
    assert rehearsal.exit_code == 0, rehearsal.output
    assert ticks(tmp_path) == 0 and sent(tmp_path) == 0
    assert cli(config, "tick", "--now", (wall() + timedelta(minutes=2)).isoformat(), env=env).exit_code == 0


def test_a_test_key_keeps_a_free_now_ahead(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    fake_stripe.fail_invoice(amount=4900, at=wall() - timedelta(days=1))
    ahead = cli(config, "tick", "--now", (wall() + timedelta(days=365)).isoformat(),
                env={"STRIPE_API_KEY": TEST_KEY})
    assert ahead.exit_code == 0, ahead.output
    assert ticks(tmp_path) == 1


def test_now_before_the_last_tick_is_refused_naming_both_times(tmp_path):
    config = starter(tmp_path)
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat()).exit_code == 0
    back = cli(config, "tick", "--no-sync", "--now", at("1h").isoformat())
    assert back.exit_code == 2, back.output
    line, = back.stderr.strip().splitlines()
    assert "2026-11-02T15:00:00Z" in line and "2026-11-02T16:00:00Z" in line
    assert ticks(tmp_path) == 1
    # the same moment again is not going back
    assert cli(config, "tick", "--no-sync", "--now", at("2h").isoformat()).exit_code == 0


def test_a_system_clock_set_back_behind_the_last_tick_is_refused(tmp_path):
    config = starter(tmp_path)
    tomorrow = (wall() + timedelta(days=1)).isoformat()
    assert cli(config, "tick", "--no-sync", "--now", tomorrow).exit_code == 0
    back = cli(config, "tick", "--no-sync")
    assert back.exit_code == 2, back.output
    assert "the system clock" in back.stderr and tomorrow[:10] in back.stderr
    assert ticks(tmp_path) == 1


def test_a_machine_clock_stripe_disagrees_with_syncs_but_takes_no_action(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    env = {"STRIPE_API_KEY": TEST_KEY}
    failed = fake_stripe.fail_invoice(amount=4900, at=wall() - timedelta(hours=2))
    fake_stripe.date_skew = -40 * 86400        # the machine's clock is 40 days ahead of Stripe's

    refused = cli(config, "tick", "--json", env=env)
    assert refused.exit_code == 2, refused.output
    problem = json.loads(refused.stderr)["error"]
    assert "40.0 days ahead of Stripe's" in problem and wall().isoformat()[:10] in problem
    assert (wall() - timedelta(days=40)).isoformat()[:10] in problem
    assert sent(tmp_path) == 0 and fake_stripe.count("POST /v1/invoices/:id") == 0
    with sqlite3.connect(tmp_path / "dunctl.db") as db:    # synced and kept, but not a finished tick
        assert db.execute("SELECT count(*) FROM invoices WHERE id = ?", [failed]).fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM ticks WHERE finished = 1").fetchone()[0] == 0

    fake_stripe.date_skew = 0                  # NTP fixed the clock: the next tick acts
    fixed = cli(config, "tick", "--json", env=env)
    assert fixed.exit_code == 0, fixed.output
    steps = [a["step"] for a in json.loads(fixed.stdout)["actions"]]
    assert steps == ["notice", "mark-notice"] and sent(tmp_path) == 1     # the email, and its note on the invoice


def test_the_limits_as_a_table():
    """The edges of dunctl/tick/clocks.py, without a process: (given --now, last tick, key, dry run) -> refused?"""
    import pytest

    from dunctl.tick.clocks import ClockRefused, check_stripe_clock, check_tick_moment, is_live_key

    t = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    m = timedelta(minutes=1)
    cases = [  # given, last tick, live key, dry run, refused
        (None, t, False, False, False),          # the same moment as the last tick: not going back
        (None, t + m, False, False, True),       # the system clock behind the last tick
        (t - m, t - 2 * m, True, False, False),
        (t - 2 * m, t - m, False, True, True),   # back in time, even as a dry run
        (t + 5 * m, None, True, False, False),   # five minutes ahead with a live key: allowed
        (t + 6 * m, None, True, False, True),
        (t + 6 * m, None, True, True, False),    # a rehearsal
        (t + 365 * 1440 * m, None, False, False, False),   # a test key travels freely
    ]
    for given, last, live, dry, refused in cases:
        if refused:
            with pytest.raises(ClockRefused):
                check_tick_moment(given, t, last, live_key=live, dry_run=dry)
        else:
            assert check_tick_moment(given, t, last, live_key=live, dry_run=dry) == (given or t)
    assert is_live_key("rk_live_x") and is_live_key(" sk_live_x") and not is_live_key("sk_test_x")
    assert not is_live_key(None)
    check_stripe_clock(t, None)                  # no Stripe answer (the simulated account): nothing to compare
    check_stripe_clock(t, t - 5 * m)
    with pytest.raises(ClockRefused, match="behind Stripe's"):
        check_stripe_clock(t, t + 6 * m)
