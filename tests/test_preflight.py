"""`dunctl check` says what `tick` will need: keys and credentials set, ledger and outbox writable; `--online`
asks Stripe (the fake, over HTTP, through the real SDK) and logs in to a real SMTP server without sending."""

import json
import re
from pathlib import Path

import pytest

from dunctl.ledger import Ledger
from dunctl.stripe_permissions import ACTIONS, all_permissions, key_hint, label, readme_rows
from tests.fakestripe import ACCOUNT, TEST_KEY, FakeStripe
from tests.helpers import at, cli, starter
from tests.servers import SmtpServer

KEY = {"STRIPE_API_KEY": TEST_KEY}


class AccountStripe(FakeStripe):
    """The fake, plus GET /v1/account (what `check --online` reads to name the account)."""

    _ROUTES = FakeStripe._ROUTES + [("GET", r"/v1/account", "account", "account_read")]

    def _h_account(self, match, params, request):
        return {"id": ACCOUNT, "object": "account", "settings": {"dashboard": {"display_name": "Acme Test"}}}


@pytest.fixture
def stripe_account():
    with AccountStripe() as fake:
        yield fake


def test_check_fails_with_exit_2_when_the_stripe_key_is_missing(tmp_path):
    config = starter(tmp_path)
    missing = cli(config, "check")
    assert missing.exit_code == 2
    assert "stripe key" in missing.stdout and "FAILED" in missing.stdout
    assert "STRIPE_API_KEY is not set" in missing.stderr
    assert cli(config, "check", env=KEY).exit_code == 0
    publishable = cli(config, "check", env={"STRIPE_API_KEY": "pk_test_123"})
    assert publishable.exit_code == 2 and "does not hold a Stripe secret or restricted key" in publishable.stderr


def test_a_missing_key_exits_2_on_sync_and_tick_too(tmp_path):
    config = starter(tmp_path)
    for command in ("sync", "tick"):
        result = cli(config, command, "--now", at("1h").isoformat())
        assert result.exit_code == 2, (command, result.output)
        assert "STRIPE_API_KEY" in result.stderr and "Traceback" not in result.output


def test_a_demo_ledger_needs_no_key(tmp_path):
    config = starter(tmp_path)
    ledger = Ledger.open(tmp_path / "dunctl.db")
    ledger.set_state("account_mode", "simulated")
    ledger.close()
    result = cli(config, "check")
    assert result.exit_code == 0, result.output
    assert "not needed: this ledger follows the simulated account" in result.stdout


def test_every_configured_channels_credentials_are_named(tmp_path):
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": "127.0.0.1", "port": 2525,
                           "username_env": "SMTP_USERNAME", "password_env": "SMTP_PASSWORD"},
        "channels.slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"},
        "channels.webhook": {"url_env": "CRM_URL", "secret_env": "DUNCTL_WEBHOOK_SECRET"},
        "channels.sms": {"from": "+15550001111"}})
    result = cli(config, "check", "--json", env=KEY)
    assert result.exit_code == 2
    failed = {c["check"]: c["detail"] for c in json.loads(result.stdout)["checks"] if not c["ok"]}
    for var in ("SMTP_USERNAME", "SMTP_PASSWORD", "SLACK_WEBHOOK_URL", "CRM_URL", "DUNCTL_WEBHOOK_SECRET",
                "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        assert any(var in detail for detail in failed.values()), var
    env = {**KEY, "SMTP_USERNAME": "u", "SMTP_PASSWORD": "p", "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/x",
           "CRM_URL": "http://127.0.0.1:9/y", "DUNCTL_WEBHOOK_SECRET": "s", "TWILIO_ACCOUNT_SID": "AC1",
           "TWILIO_AUTH_TOKEN": "t"}
    assert cli(config, "check", env=env).exit_code == 0


def test_an_outbox_that_cannot_be_created_fails_check(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    config = starter(tmp_path, **{"channels.email": {"transport": "file", "dir": "blocker/outbox"}})
    result = cli(config, "check", env=KEY)
    assert result.exit_code == 2
    assert "the outbox" in result.stderr and "is a file" in result.stderr


def test_a_missing_ledger_fails_check_and_says_how_to_start(tmp_path):
    config = starter(tmp_path, ledger=False)
    result = cli(config, "check", env=KEY)
    assert result.exit_code == 2
    assert "no ledger at" in result.stdout + result.stderr and "dunctl init" in result.stdout
    assert not (tmp_path / "dunctl.db").exists()


def test_online_names_the_account_mode_and_each_permission(tmp_path, stripe_account):
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url})
    result = cli(config, "check", "--online", "--json", env=KEY)
    assert result.exit_code == 0, result.output
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["stripe: key"]["ok"]
    assert f"test mode, account {ACCOUNT} (Acme Test)" in checks["stripe: key"]["detail"]
    assert checks["stripe: Events: read"]["ok"] and checks["stripe: Invoices: read"]["ok"]
    # the starter leaves retries to Stripe, but pays on a new card (retry_on_update), notes each message on the
    # invoice and pauses subscriptions: Invoices: write and Subscriptions: write
    assert checks["stripe: Subscriptions: write"]["ok"] and checks["stripe: Invoices: write"]["ok"]
    assert checks["stripe: PaymentMethods: read"]["ok"]
    assert not any("Customer portal" in c["check"] for c in checks.values())   # no portal session is ever made
    # it only read, or aimed writes at objects that do not exist: nothing changed on the account
    assert stripe_account.events == []


def test_online_names_the_permission_a_restricted_key_lacks(tmp_path, stripe_account):
    restricted = "rk_test_restricted_0000000000000000"
    stripe_account.deny(restricted, "invoice_write")
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url, "stripe.retries": "dunctl"})
    result = cli(config, "check", "--online", env={"STRIPE_API_KEY": restricted})
    assert result.exit_code == 2
    assert "the key lacks Invoices: write" in result.stderr
    assert "stripe.retries: dunctl" in result.stderr
    assert restricted not in result.output


def test_online_reports_a_rejected_key(tmp_path, stripe_account):
    bad = "sk_test_rolled_0000000000000000"
    stripe_account.reject_key(bad)
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url})
    result = cli(config, "check", "--online", env={"STRIPE_API_KEY": bad})
    assert result.exit_code == 2
    assert "Stripe rejected the key in STRIPE_API_KEY (401)" in result.stderr
    assert bad not in result.output


def test_online_logs_in_to_smtp_and_sends_nothing(tmp_path, stripe_account):
    with SmtpServer(credentials=("billing", "s3cret-pass")) as smtp:
        config = starter(tmp_path, **{
            "stripe.api_base": stripe_account.url,
            "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port,
                               "username_env": "SMTP_USERNAME", "password_env": "SMTP_PASSWORD"}})
        good = cli(config, "check", "--online", env={**KEY, "SMTP_USERNAME": "billing",
                                                     "SMTP_PASSWORD": "s3cret-pass"})
        assert good.exit_code == 0, good.output
        assert "logged in to" in good.stdout and "nothing sent" in good.stdout
        wrong = cli(config, "check", "--online", env={**KEY, "SMTP_USERNAME": "billing",
                                                      "SMTP_PASSWORD": "wrong-pass"})
        assert wrong.exit_code == 2
        assert "refused the login for 'billing'" in wrong.stderr and "wrong-pass" not in wrong.output
        assert smtp.received == []


def test_check_says_when_the_config_is_in_monitor_mode(tmp_path):
    monitored = cli(starter(tmp_path / "m", mode="monitor"), "check", env=KEY)
    assert monitored.exit_code == 0 and "monitor: ticks plan and record every step as 'would'" in monitored.stdout
    live = cli(starter(tmp_path / "l"), "check", env=KEY)
    assert live.exit_code == 0 and "monitor:" not in live.stdout


def test_online_never_prints_a_key_that_stripes_error_quotes(tmp_path, stripe_account):
    """Issue 21, defect 9: Stripe's own messages quote the key (masked, or whole through a proxy): `check --online`
    scrubs them as `tick` does."""
    stripe_account.echo_key_in_errors = 503
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url})
    result = cli(config, "check", "--online", env=KEY)
    assert result.exit_code == 2
    assert "Invalid request from key [key removed]" in result.output      # what Stripe said still shows
    assert TEST_KEY not in result.output and TEST_KEY[8:] not in result.output


RESTRICTED = "rk_test_restricted_0000000000000000"


def test_online_asks_for_every_permission_the_starter_config_will_use(tmp_path, stripe_account):
    """Issue 21, defect 6: with the default `retry_on_update: true` a new card is paid with invoices.pay (Invoices:
    write), and sync reads payment methods: a key without them passed the check and failed in the tick."""
    stripe_account.deny(RESTRICTED, "invoice_write")
    stripe_account.deny(RESTRICTED, "payment_method_read")
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url})
    result = cli(config, "check", "--online", env={"STRIPE_API_KEY": RESTRICTED})
    assert result.exit_code == 2, result.output
    assert "the key lacks Invoices: write" in result.stderr and "retry_on_update" in result.stderr
    assert "the key lacks PaymentMethods: read" in result.stderr
    assert stripe_account.events == []


def test_online_probes_the_connected_account_it_acts_on(tmp_path, stripe_account):
    """Issue 21, defect 6: with `stripe.account` the tick acts on the connected account (Stripe-Account header), so
    the check asks there, not on the platform."""
    connected = "acct_1Connected"
    stripe_account.connected_accounts.add(connected)
    config = starter(tmp_path, **{"stripe.api_base": stripe_account.url, "stripe.account": connected})
    result = cli(config, "check", "--online", "--json", env=KEY)
    assert result.exit_code == 0, result.output
    assert stripe_account.account_headers and set(stripe_account.account_headers) == {connected}
    gone = starter(tmp_path / "gone", **{"stripe.api_base": stripe_account.url, "stripe.account": "acct_1Gone"})
    refused = cli(gone, "check", "--online", env=KEY)
    assert refused.exit_code == 2
    assert "the key cannot reach Stripe account acct_1Gone" in refused.stderr


def test_the_key_hint_and_the_readme_list_the_permissions_of_the_table(tmp_path):
    """Issue 21, defect 6: one table (dunctl/stripe_permissions.py) says what a key needs; the hint for a missing
    key and the README show exactly its set."""
    wanted = [label(p) for p in all_permissions()]
    assert "PaymentMethods: read" in wanted and "Invoices: write" in wanted
    result = cli(starter(tmp_path), "tick", "--now", at("1h").isoformat())
    assert result.exit_code == 2
    hint = " ".join(result.stderr.split())
    assert key_hint() in hint and sorted(re.findall(r"\b[A-Z][A-Za-z]+(?: portal)?: (?:read|write)", hint)) == \
        sorted(wanted)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| resource | permission | needed for |"):].split("\n\n")[0].splitlines()[2:]
    assert table == readme_rows()


def test_every_permission_the_gateway_uses_is_in_the_table():
    """The gateway names the permission of each call it makes; each is in the table check --online probes from."""
    package = Path(__file__).resolve().parent.parent / "dunctl" / "stripe"
    source = "".join(path.read_text() for path in sorted(package.glob("*.py")))
    used = set(re.findall(r'\("([a-z_]+)", "(read|write)"\)', source)) - {("account", "read")}
    assert used and used <= {a.permission for a in ACTIONS}
