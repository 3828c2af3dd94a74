"""A ledger older than the Stripe account (restored from last night's backup, or new on another machine) would
send again what was already sent: the account's own events show what dunctl did, and such a ledger is refused."""

import shutil
import sqlite3

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, starter


def test_a_ledger_restored_from_before_dunctls_last_actions_is_refused_until_adopted_knowingly(tmp_path,
                                                                                              fake_stripe):
    config = starter(tmp_path, **{"stripe.api_base": fake_stripe.url, "stripe.retries": "dunctl"})
    env = {"STRIPE_API_KEY": TEST_KEY}
    fake_stripe.set_now(T0)
    fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("10m"))
    assert cli(config, "tick", "--now", at("10m").isoformat(), env=env).exit_code == 0    # opens the case
    backup = tmp_path / "backup.db"
    with sqlite3.connect(tmp_path / "dunctl.db") as live, sqlite3.connect(backup) as copy:
        live.backup(copy)                                                                # last night's copy
    fake_stripe.set_now(at("2d1h"))
    assert cli(config, "tick", "--now", at("2d1h").isoformat(), env=env).exit_code == 0  # retry-1: a declined charge
    fake_stripe.set_now(at("2d2h"))
    assert cli(config, "tick", "--now", at("2d2h").isoformat(), env=env).exit_code == 0  # its events: known here
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"dunctl.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, tmp_path / "dunctl.db")                                      # restored
    fake_stripe.set_now(at("2d3h"))
    refused = cli(config, "tick", "--now", at("2d3h").isoformat(), env=env)
    assert refused.exit_code == 2, refused.output
    assert "older than the Stripe account" in refused.stderr and "--accept-stale-ledger" in refused.stderr
    assert "Traceback" not in refused.output
    adopted = cli(config, "tick", "--now", at("2d3h").isoformat(), "--accept-stale-ledger", env=env)
    assert adopted.exit_code == 0, adopted.output
    assert cli(config, "tick", "--now", at("2d4h").isoformat(), env=env).exit_code == 0  # adopted once, for good
