"""The commands a person runs, against the fake Stripe server over HTTP with the key from the environment."""

import json

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, starter


def config_for(tmp_path, fake):
    return starter(tmp_path, **{"stripe.api_base": fake.url, "stripe.recheck_before_action": True})


def test_sync_then_tick_then_status_against_stripe(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    env = {"STRIPE_API_KEY": TEST_KEY}
    fake_stripe.set_now(T0)
    failed = fake_stripe.fail_invoice(amount=4900, at=T0)
    fake_stripe.set_now(at("1h"))

    synced = cli(config, "sync", "--now", at("1h").isoformat(), env=env)
    assert synced.exit_code == 0, synced.output
    assert "invoices: 1 new" in synced.stdout and "cases: 1 opened" in synced.stdout

    ticked = cli(config, "tick", "--now", at("1h").isoformat(), "--json", env=env)
    assert ticked.exit_code == 0, ticked.output
    # the notice, and its note on the Stripe invoice (dunctl/adoption.py)
    assert [a["step"] for a in json.loads(ticked.stdout)["actions"]] == ["notice", "mark-notice"]

    fake_stripe.reset_counts()
    idle = cli(config, "tick", "--now", at("2h").isoformat(), env=env)
    assert idle.exit_code == 0 and idle.stdout == ""
    assert fake_stripe.count() == 1  # steady state: one events request, nothing else

    status = json.loads(cli(config, "status", "--json", "--now", at("2h").isoformat()).stdout)
    assert status["account_mode"] == "test"
    assert [c["invoice_id"] for c in status["cases"]] == [failed]

    fake_stripe.customer_pays(failed, at=at("3h"))
    fake_stripe.set_now(at("3h"))
    assert cli(config, "tick", "--now", at("3h").isoformat(), env=env).exit_code == 0
    every = json.loads(cli(config, "status", "--all", "--json").stdout)["cases"]
    assert [(c["invoice_id"], c["state"]) for c in every] == [(failed, "recovered")]


def test_a_missing_key_is_a_clear_error_that_names_the_variable(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    result = cli(config, "tick", "--now", at("1h").isoformat())
    assert result.exit_code == 2  # the operator's setup, like a config error (issue 11)
    assert "STRIPE_API_KEY" in result.stderr
    assert "Traceback" not in result.output


def test_a_rejected_key_stops_the_tick_and_is_never_printed(tmp_path, fake_stripe):
    config = config_for(tmp_path, fake_stripe)
    bad = "sk_test_wrong_key_123456789"
    fake_stripe.reject_key(bad)
    result = cli(config, "tick", "--now", at("1h").isoformat(), env={"STRIPE_API_KEY": bad})
    assert result.exit_code == 1
    assert bad not in result.output and "Error:" in result.stderr


def test_a_retry_whose_request_the_budget_left_no_time_for_stays_due_and_is_not_a_failed_try(tmp_path, fake_stripe):
    """CI, a loaded machine: the gateway's budget ran out while the tick still had time, so the tick started the
    due retry, its request was refused before it left ("ran out before trying"), and the retry was recorded
    `failed`: a try that never happened, which moves a sequence on. Nothing left dunctl: the claim is given back,
    the retry stays due, and the next tick charges it."""
    from dunctl.config import load_config
    from dunctl.ledger import Ledger
    from dunctl.stripe.gateway import StripeGateway
    from dunctl.tick.channels import build_channels
    from dunctl.tick.run import run_tick

    path = starter(tmp_path, **{"stripe.api_base": fake_stripe.url, "stripe.retries": "dunctl"})
    config = load_config(path)
    invoice = fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    ledger = Ledger.open(config.ledger_path)
    try:
        run_tick(ledger, config, StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda s: None),
                 build_channels(config, {}), at("1h"))
        fake_stripe.next_payment_succeeds(invoice, True)
        fake_stripe.set_now(at("2d1h"))
        seconds = [0.0]
        late = StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda s: None, clock=lambda: seconds[0],
                             budget=10.0)
        seconds[0] = 12.0       # 10 s and its 2.5 s margin: half a second left, less than a request is given
        before = len(fake_stripe.log)
        result = run_tick(ledger, config, late, build_channels(config, {}), at("2d1h"), sync=False)
        assert len(fake_stripe.log) == before                    # nothing was sent
        assert "retry-1" not in {a.step for a in result.actions} and result.deferred == 1
        case = ledger.cases.for_invoice(invoice)["id"]
        assert "retry-1" not in {a["step_id"] for a in ledger.actions(case)}
        result = run_tick(ledger, config, StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=lambda s: None),
                          build_channels(config, {}), at("2d2h"))
        assert {a["step_id"]: a["status"] for a in ledger.actions(case)}["retry-1"] == "done"
        assert [c["status"] for c in fake_stripe.charges_of(invoice)][-1] == "succeeded"
    finally:
        ledger.close()


def test_a_stripe_that_never_answers_costs_a_tick_its_budget_not_minutes(tmp_path, fake_stripe):
    """Issue 21, defect 8: with a 20 s budget a tick against a Stripe that accepts and never answers ran ~590 s (7
    tries x the SDK's 80 s timeout) while cron's other ticks exited 3. Every call's timeout and retries come out of
    the tick's budget: the tick ends within it (and a small margin), says Stripe failed, and loses nothing."""
    import subprocess
    import time

    import yaml

    from dunctl.ledger import Ledger
    from tests.badservers import BadHttp
    from tests.helpers import dunctl_process

    config = starter(tmp_path, **{"stripe.api_base": fake_stripe.url, "stripe.retries": "dunctl",
                                  "dunning.tick_budget": "2s"})
    env = {"STRIPE_API_KEY": TEST_KEY}
    invoice = fake_stripe.fail_invoice(at=T0)
    fake_stripe.set_now(at("1h"))
    assert cli(config, "tick", "--now", at("1h").isoformat(), env=env).exit_code == 0
    with BadHttp("hang") as hung:
        data = yaml.safe_load(config.read_text())
        data["stripe"]["api_base"] = f"http://127.0.0.1:{hung.port}"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        started = time.monotonic()
        process = dunctl_process(config, "tick", "--now", at("2d1h").isoformat(), env=env)   # retry-1 is due
        try:
            _, stderr = process.communicate(timeout=12)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise AssertionError("the tick outlived its 2 s budget by more than 10 s") from None
        elapsed = time.monotonic() - started
    # a loaded machine starts the process slowly; without the budget it took minutes (80 s a request)
    assert process.returncode == 1 and elapsed < 8, (process.returncode, elapsed, stderr)
    assert "sync failed" in stderr and "Traceback" not in stderr
    ledger = Ledger.open(tmp_path / "dunctl.db")
    try:
        actions = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice(invoice)["id"])}
    finally:
        ledger.close()
    assert "retry-1" not in actions        # not tried, not failed: still due for the next tick
