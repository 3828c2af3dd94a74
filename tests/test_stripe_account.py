"""A ledger follows one Stripe account; Connect platforms pick the connected account with `stripe.account`.
Everything goes through the CLI, the stripe SDK and HTTP to the fake Stripe server."""

from __future__ import annotations

import yaml

from dunctl.account_binding import STATE
from dunctl.ledger import Ledger
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, starter

OTHER_KEY = "sk_test_other_account_0000000000000"


def config_for(tmp_path, fake, **settings):
    return starter(tmp_path, **{"stripe.api_base": fake.url, **settings})


def state(tmp_path, name):
    ledger = Ledger.open(tmp_path / "dunctl.db")
    try:
        return ledger.get_state(name)
    finally:
        ledger.close()


def test_the_first_sync_binds_the_ledger_and_a_key_for_another_account_is_refused(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    fake_stripe.key_accounts[OTHER_KEY] = "acct_1OtherBusiness"
    fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    first = cli(config, "sync", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert first.exit_code == 0, first.output
    bound = state(tmp_path, STATE)
    assert (bound["id"], bound["livemode"]) == ("acct_1FakeDunctlTest", False)
    assert TEST_KEY not in (tmp_path / "dunctl.db").read_bytes().decode("latin-1")   # a fingerprint, not the key
    cursor = state(tmp_path, "cursor")

    fake_stripe.reset_counts()
    refused = cli(config, "tick", "--now", at("2h").isoformat(), env={"STRIPE_API_KEY": OTHER_KEY})
    assert refused.exit_code == 2
    message = refused.stderr.strip().splitlines()[0]
    assert "acct_1FakeDunctlTest" in message and "acct_1OtherBusiness" in message
    assert "Traceback" not in refused.output and OTHER_KEY not in refused.output
    assert fake_stripe.count() == 1 and fake_stripe.count("GET /v1/account") == 1   # the check, nothing else
    assert state(tmp_path, "cursor") == cursor


def test_the_same_key_again_costs_no_account_request(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    env = {"STRIPE_API_KEY": TEST_KEY}
    assert cli(config, "sync", "--now", at("1h").isoformat(), env=env).exit_code == 0
    fake_stripe.reset_counts()
    assert cli(config, "sync", "--now", at("2h").isoformat(), env=env).exit_code == 0
    assert fake_stripe.count("GET /v1/account") == 0 and fake_stripe.count() == 1


def test_a_demo_ledger_refuses_a_real_key_without_a_single_request(tmp_path, fake_stripe):
    demo = tmp_path / "demo"
    # (no follow-up: the demo ledger's clock stays behind the machine's, so the refusal is about the key)
    made = cli(tmp_path / "none.yaml", "demo", str(demo), "--customers", "5", "--days", "2", "--follow-up", "0")
    assert made.exit_code == 0, made.output
    config = demo / "dunctl.yaml"
    data = yaml.safe_load(config.read_text())
    data["stripe"]["api_base"] = fake_stripe.url
    config.write_text(yaml.safe_dump(data))
    before = (demo / "dunctl.db").read_bytes()
    for command in (["tick"], ["sync"]):
        result = cli(config, *command, env={"STRIPE_API_KEY": TEST_KEY})
        assert result.exit_code == 2, result.output
        assert "simulated" in result.stderr and "STRIPE_API_KEY" in result.stderr
    assert fake_stripe.count() == 0
    assert (demo / "dunctl.db").read_bytes() == before


def test_connect_sends_the_stripe_account_header_and_binds_the_connected_account(tmp_path, fake_stripe):
    connected = "acct_1ConnectedGym"
    fake_stripe.connected_accounts.add(connected)
    config = config_for(tmp_path, fake_stripe, **{"stripe.account": connected})
    failed = fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    result = cli(config, "tick", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert result.exit_code == 0, result.output
    assert fake_stripe.account_headers and set(fake_stripe.account_headers) == {connected}
    assert state(tmp_path, STATE)["id"] == connected
    assert failed in cli(config, "status", "--json").stdout

    # the same ledger with another connected account in the config is refused
    other = "acct_1AnotherGym"
    fake_stripe.connected_accounts.add(other)
    data = yaml.safe_load(config.read_text())
    data["stripe"]["account"] = other
    config.write_text(yaml.safe_dump(data))
    refused = cli(config, "sync", "--now", at("2h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert refused.exit_code == 2
    assert connected in refused.stderr and other in refused.stderr


def test_a_connected_account_the_platform_cannot_reach_is_a_clear_error(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe, **{"stripe.account": "acct_1NotConnected"})
    result = cli(config, "sync", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "acct_1NotConnected" in result.stderr and TEST_KEY not in result.output


def test_a_dry_run_first_checks_the_account_without_waiting_on_its_own_transaction(tmp_path, fake_stripe):
    import time

    config = config_for(tmp_path, fake_stripe)
    fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    started = time.monotonic()
    dry = cli(config, "tick", "--dry-run", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert dry.exit_code == 0, dry.output
    assert time.monotonic() - started < 5 and "Traceback" not in dry.output
    real = cli(config, "tick", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert real.exit_code == 0, real.output
    assert state(tmp_path, STATE)["id"] == "acct_1FakeDunctlTest"


def test_a_dry_run_on_a_new_directory_creates_no_ledger_even_with_a_key(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    (tmp_path / "dunctl.db").unlink()  # a directory with a config and no ledger yet
    fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    dry = cli(config, "tick", "--dry-run", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": TEST_KEY})
    assert dry.exit_code == 0, dry.output
    assert not (tmp_path / "dunctl.db").exists()
