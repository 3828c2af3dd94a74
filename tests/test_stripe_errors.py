"""Rate limits, outages, keys and permissions: how the Stripe gateway behaves when Stripe says no."""

from __future__ import annotations

import re

from datetime import datetime, timedelta, timezone

import pytest

from dunctl.config import StripeConfig
from dunctl.errors import GatewayAuthError, GatewayError
from dunctl.ledger import Ledger
from dunctl.stripe.gateway import StripeGateway
from tests.helpers import new_ledger
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


class VirtualTime:
    """A clock that only moves when the gateway sleeps: rate-limit storms run in microseconds."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def time_():
    return VirtualTime()


def gateway_for(fake, time_, key: str = TEST_KEY, **options) -> StripeGateway:
    return StripeGateway(key, api_base=fake.url, sleep=time_.sleep, clock=time_.clock, jitter=lambda: 1.0,
                         **options)


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path / "dunctl.db")
    yield ledger
    ledger.close()


def sync_into(ledger, gateway, now):
    for batch in gateway.sync(ledger.get_state("cursor"), now):
        ledger.sync.apply_batch(batch, now)


# -- rate limits and outages ---------------------------------------------------------------------------------------


def test_a_429_storm_that_passes_is_ridden_out_with_exponential_backoff(fake_stripe, time_, ledger):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_, max_backoff_tries=6)
    fake_stripe.inject(429, times=4)
    sync_into(ledger, gateway, T0 + HOUR)
    assert ledger.db.execute("SELECT status FROM invoices WHERE id = ?", [invoice_id]).fetchone() == ("open",)
    assert time_.sleeps[:4] == [0.5, 1.0, 2.0, 4.0]       # doubling (jitter pinned to its upper bound)
    assert gateway.requests == fake_stripe.count()        # the rejected requests are counted too


def test_backoff_is_jittered_and_capped(fake_stripe, time_):
    gateway = StripeGateway(TEST_KEY, api_base=fake_stripe.url, sleep=time_.sleep, clock=time_.clock,
                            jitter=lambda: 0.0, max_backoff_tries=12)
    fake_stripe.inject(429, times=10, route="GET /v1/invoices/:id")
    fake_stripe.fail_invoice(at=T0)
    gateway.get_invoice(next(iter(fake_stripe.store["invoice"])))
    assert time_.sleeps[0] == 0.25                        # half of 0.5 s at the bottom of the jitter
    assert max(time_.sleeps) == 15.0                      # half of the 30 s cap


def test_429s_beyond_the_bound_give_up_clearly_and_keep_the_cursor(fake_stripe, time_, ledger):
    fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_, max_backoff_tries=3)
    sync_into(ledger, gateway, T0 + HOUR)
    cursor = ledger.get_state("cursor")
    fake_stripe.fail_invoice(at=T0 + 2 * HOUR, email="b@example.com")
    fake_stripe.storm(429)
    before = fake_stripe.count()
    with pytest.raises(GatewayError) as raised:
        sync_into(ledger, gateway, T0 + 3 * HOUR)
    error = raised.value
    assert error.code == "rate_limited"
    assert error.request_id and error.request_id.startswith("req_")
    assert "429" in error.message and "4 times" in error.message and error.request_id in error.message
    assert fake_stripe.count() - before == 4              # the first try and three more, then it stopped
    assert ledger.get_state("cursor") == cursor           # nothing lost: the next sync starts where this one did
    fake_stripe.calm()
    sync_into(ledger, gateway, T0 + 4 * HOUR)
    assert ledger.db.execute("SELECT count(*) FROM invoices").fetchone() == (2,)


def test_a_5xx_on_a_read_is_retried(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.inject(500, times=2, route="GET /v1/invoices/:id")
    assert gateway_for(fake_stripe, time_).get_invoice(invoice_id).id == invoice_id
    assert fake_stripe.count("GET /v1/invoices/:id") == 3 and len(time_.sleeps) == 2


def test_a_5xx_on_a_write_is_read_back_not_replayed_and_never_slept_on(fake_stripe, time_):
    """Stripe saves a 5xx under its idempotency key and answers every retry with it (Stripe-Should-Retry: false):
    the gateway reads the invoice back instead, once, without sleeping."""
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.inject(500, times=1, route="POST /v1/invoices/:id/pay")
    gateway = gateway_for(fake_stripe, time_)
    with pytest.raises(GatewayError) as raised:
        gateway.pay_invoice(invoice_id, "case-1-retry-1")
    assert raised.value.code == "unavailable" and "new key" in raised.value.hint
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 1 and time_.sleeps == []
    with pytest.raises(GatewayError):                                   # the same key: the saved 500, replayed
        gateway.pay_invoice(invoice_id, "case-1-retry-1")
    assert fake_stripe.charges_of(invoice_id)[-1]["status"] != "succeeded"
    assert gateway.pay_invoice(invoice_id, "case-1-retry-1:2").succeeded  # a new key pays
    assert len([c for c in fake_stripe.charges_of(invoice_id) if c["status"] == "succeeded"]) == 1


def test_a_5xx_on_a_write_that_took_effect_is_success(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.inject(500, times=1, route="POST /v1/invoices/:id/pay", took_effect=True)
    outcome = gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-1-retry-1")
    assert outcome.succeeded and outcome.invoice.status == "paid"
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 1 and time_.sleeps == []
    assert len([c for c in fake_stripe.charges_of(invoice_id) if c["status"] == "succeeded"]) == 1


# -- a write whose answer never came: it may have arrived ----------------------------------------------------------


def _paid(fake, invoice_id) -> int:
    return len([c for c in fake.charges_of(invoice_id) if c["status"] == "succeeded"])


def test_a_charge_whose_answers_were_lost_is_read_back_and_found_paid(fake_stripe, time_):
    """Every try is sent and the connection drops before the answer: the first did charge the card. Reading the
    invoice back finds it paid: success, one charge, and no new key that could charge again."""
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.lose_answers("POST /v1/invoices/:id/pay", times=None)
    outcome = gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-1-retry-1")
    assert outcome.succeeded and outcome.invoice.status == "paid"
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 7 and _paid(fake_stripe, invoice_id) == 1
    assert fake_stripe.count("GET /v1/invoices/:id") == 1


def test_a_charge_whose_answer_was_lost_and_whose_read_back_failed_is_uncertain(fake_stripe, time_):
    """No answer to the charge, then no answer at all: whether the card was charged is unknown, and said so, not
    a failed try (whose next one, under a new key, could charge the card a second time)."""
    from dunctl.errors import WriteUncertain

    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.lose_answers("POST /v1/invoices/:id/pay", times=None)
    fake_stripe.lose_answers("GET /v1/invoices/:id", times=None, took_effect=False)
    with pytest.raises(WriteUncertain) as raised:
        gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-1-retry-1")
    assert "unknown" in raised.value.message and "case resolve" in raised.value.hint
    assert _paid(fake_stripe, invoice_id) == 1


def test_a_write_stripe_never_received_is_a_plain_failure(fake_stripe, time_):
    """A refused connection carried nothing: the try failed, nothing to read back, nothing uncertain."""
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_, max_backoff_tries=1)
    fake_stripe.stop()                                   # the port refuses connections
    with pytest.raises(GatewayError) as raised:
        gateway.pay_invoice(invoice_id, "case-1-retry-1")
    assert raised.value.code == "unavailable" and type(raised.value) is GatewayError


def test_a_cancel_whose_answer_was_lost_is_read_back(fake_stripe, time_):
    """DELETE ignores idempotency keys: after a lost answer, the subscription read back says it was cancelled."""
    from dunctl.errors import WriteUncertain

    invoice_id = fake_stripe.fail_invoice(at=T0)
    sub_id = fake_stripe.subscription_of(invoice_id)["id"]
    fake_stripe.lose_answers("DELETE /v1/subscriptions/:id", times=None)
    gateway_for(fake_stripe, time_).cancel_subscription(sub_id, "unpaid", "case-1-cancel")
    assert fake_stripe.store["subscription"][sub_id]["status"] == "canceled"
    other = fake_stripe.subscription_of(fake_stripe.fail_invoice(at=T0))["id"]
    fake_stripe.lose_answers("GET /v1/subscriptions/:id", times=None, took_effect=False)
    with pytest.raises(WriteUncertain):
        gateway_for(fake_stripe, time_).cancel_subscription(other, "unpaid", "case-2-cancel")


def test_stripe_should_retry_decides_when_stripe_sends_it(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_)
    fake_stripe.inject(500, times=1, route="GET /v1/invoices/:id", should_retry=False)
    with pytest.raises(GatewayError):
        gateway.get_invoice(invoice_id)                         # a read, but Stripe says another try is futile
    assert fake_stripe.count("GET /v1/invoices/:id") == 1 and time_.sleeps == []
    fake_stripe.next_payment_succeeds(invoice_id, True)
    fake_stripe.inject(503, times=1, route="POST /v1/invoices/:id/pay", should_retry=True)
    assert gateway.pay_invoice(invoice_id, "case-1-retry-1").succeeded   # a write Stripe never started: same key
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 2 and len(time_.sleeps) == 1


def test_a_dead_server_is_a_gateway_error_not_a_traceback(time_):
    from tests.servers import closed_port

    gateway = StripeGateway(TEST_KEY, api_base=f"http://127.0.0.1:{closed_port()}", sleep=time_.sleep,
                            clock=time_.clock, max_backoff_tries=2)
    with pytest.raises(GatewayError) as raised:
        list(gateway.sync(None, T0))
    assert raised.value.code == "unavailable" and len(time_.sleeps) == 2


def test_the_token_bucket_keeps_to_the_configured_rate(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_, max_requests_per_second=5)
    for _ in range(25):
        gateway.get_invoice(invoice_id)
    # a one-second burst of 5, then one request every 0.2 s
    assert time_.now == pytest.approx(4.0)
    assert fake_stripe.count() == 25


# -- keys and permissions ------------------------------------------------------------------------------------------


def test_a_rejected_key_names_the_variable_never_the_key(fake_stripe, time_):
    key = "sk_test_revoked_51SECRETVALUEzq9X"
    fake_stripe.reject_key(key)
    gateway = gateway_for(fake_stripe, time_, key=key, key_env="ACME_STRIPE_KEY")
    with pytest.raises(GatewayAuthError) as raised:
        list(gateway.sync(None, T0))
    error = raised.value
    assert "ACME_STRIPE_KEY" in error.message and "401" in error.message
    assert error.request_id
    for text in (error.message, error.hint, str(error), repr(error)):
        assert "SECRETVALUE" not in (text or "") and "zq9X" not in (text or "")
    assert time_.sleeps == []                              # an auth error is not retried


def test_a_restricted_key_without_a_permission_says_which_one(fake_stripe, time_):
    key = "rk_live_" + "restricted_51SECRETVALUE"  # split so secret scanners don't take a fake for a real key
    fake_stripe.deny(key, "invoice_write")
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_, key=key)
    assert gateway.get_invoice(invoice_id).status == "open"        # reading is allowed
    with pytest.raises(GatewayAuthError) as raised:
        gateway.pay_invoice(invoice_id, "case-1-retry-1")
    error = raised.value
    assert error.message.startswith("the key cannot write invoices: give the restricted key Invoices: write")
    assert error.request_id and error.request_id in error.message
    assert "SECRETVALUE" not in str(error) and "rk_live" not in str(error)


@pytest.mark.parametrize("permission, call, expected", [
    ("event_read", lambda g, inv: list(g.sync(None, T0)), "the key cannot read events: give the restricted key "
                                                          "Events: read"),
    ("subscription_write", lambda g, inv: g.pause_subscription("sub_x", "void", "k"),
     "the key cannot write subscriptions: give the restricted key Subscriptions: write"),
    ("billing_portal_session_write",
     lambda g, inv: g.update_link(g.get_invoice(inv), "billing_portal", None, "k"),
     "the key cannot write customer portal sessions: give the restricted key Customer portal: write"),
])
def test_each_missing_permission_is_named(fake_stripe, time_, permission, call, expected):
    key = "rk_test_restricted_0001"
    fake_stripe.deny(key, permission)
    invoice_id = fake_stripe.fail_invoice(at=T0)
    with pytest.raises(GatewayAuthError, match=re.escape(expected)):
        call(gateway_for(fake_stripe, time_, key=key), invoice_id)


def test_from_config_reads_the_key_from_the_named_variable(fake_stripe):
    config = StripeConfig(api_key_env="ACME_STRIPE_KEY", api_base=fake_stripe.url, max_requests_per_second=50,
                          max_backoff_tries=2, backfill_days=30)
    with pytest.raises(GatewayAuthError, match="ACME_STRIPE_KEY is not set"):
        StripeGateway.from_config(config, {"STRIPE_API_KEY": TEST_KEY})
    with pytest.raises(GatewayAuthError, match="does not hold a Stripe secret or restricted key"):
        StripeGateway.from_config(config, {"ACME_STRIPE_KEY": "pk_live_publishable"})
    live = StripeGateway.from_config(config, {"ACME_STRIPE_KEY": "rk_live_" + "51SECRETVALUE"})
    assert live.mode == "live" and (live._client.max_backoff_tries, live.backfill_days) == (2, 30)
    assert "SECRETVALUE" not in repr(live) and "SECRETVALUE" not in repr(vars(live))
    test = StripeGateway.from_config(config, {"ACME_STRIPE_KEY": TEST_KEY})
    assert test.mode == "test"
    assert test.get_invoice(fake_stripe.fail_invoice(at=T0)).status == "open"


# -- actions -------------------------------------------------------------------------------------------------------


def test_pay_twice_with_the_same_key_charges_once(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, True)
    gateway = gateway_for(fake_stripe, time_)
    first = gateway.pay_invoice(invoice_id, "case-3-retry-1")
    second = gateway.pay_invoice(invoice_id, "case-3-retry-1")     # a crashed tick re-running its claim
    assert first.succeeded and second.succeeded
    assert first.request_id and first.invoice.paid_at is not None
    assert len([c for c in fake_stripe.charges_of(invoice_id) if c["status"] == "succeeded"]) == 1
    assert fake_stripe.count("POST /v1/invoices/:id/pay") == 2     # the repeat was answered, not executed
    assert [e["request"]["idempotency_key"] for e in fake_stripe.events if e["type"] == "invoice.paid"] == \
        ["case-3-retry-1"]


def test_a_key_reused_for_another_call_is_an_idempotency_error(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_)
    gateway.disable_automatic_retries(invoice_id, "case-3-step")
    with pytest.raises(GatewayError) as raised:
        gateway.mark_uncollectible(invoice_id, "case-3-step")
    assert raised.value.code == "idempotency_error" and raised.value.request_id
    assert fake_stripe.invoice(invoice_id)["status"] == "open"


def test_a_key_reused_with_changed_parameters_gets_a_key_of_its_own(fake_stripe, time_):
    """The portal's return_url or the pause behavior edited in the config between two tries of one step: Stripe
    (and the fake) refuse a key reused with other parameters, so the key carries a hash of them."""
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_)
    invoice = gateway.get_invoice(invoice_id)
    gateway.update_link(invoice, "billing_portal", "https://acme.test/old", "case-3-notice-link")
    gateway.update_link(invoice, "billing_portal", "https://acme.test/new", "case-3-notice-link")
    sessions = fake_stripe.store["billing_portal.session"].values()
    assert [s["return_url"] for s in sessions] == ["https://acme.test/old", "https://acme.test/new"]
    gateway.pause_subscription(invoice.subscription_id, "void", "case-3-suspend")
    gateway.pause_subscription(invoice.subscription_id, "keep_as_draft", "case-3-suspend")
    assert fake_stripe.store["subscription"][invoice.subscription_id]["pause_collection"]["behavior"] == \
        "keep_as_draft"
    gateway.pause_subscription(invoice.subscription_id, "keep_as_draft", "case-3-suspend")   # a repeat: replayed
    assert fake_stripe.count("POST /v1/subscriptions/:id") == 3 and len(fake_stripe._idempotency) == 4


def test_a_declined_retry_reports_the_decline_and_its_request_id(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, False, "stolen_card", advice_code="do_not_try_again")
    outcome = gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-3-retry-1")
    assert not outcome.succeeded and outcome.request_id.startswith("req_")
    assert (outcome.decline.code, outcome.decline.decline_code, outcome.decline.advice_code) == \
        ("card_declined", "stolen_card", "do_not_try_again")
    assert outcome.decline.payment_method_type == "card"
    assert outcome.decline.payment_intent_status == "requires_payment_method"


def test_a_retry_that_needs_authentication_is_action_required(fake_stripe, time_):
    from dunctl.failures import classify

    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.next_payment_succeeds(invoice_id, False, "authentication_required")
    outcome = gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-3-retry-1")
    assert outcome.decline.payment_intent_status == "requires_action"
    assert classify(outcome.decline) == "action_required"


def test_paying_a_paid_invoice_is_a_gateway_error(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    fake_stripe.customer_pays(invoice_id, at=T0 + HOUR)
    with pytest.raises(GatewayError, match="already paid") as raised:
        gateway_for(fake_stripe, time_).pay_invoice(invoice_id, "case-3-retry-1")
    assert raised.value.code is None     # Stripe documents no error code for it: the message says it


def test_every_mutation_carries_the_idempotency_key_it_was_given(fake_stripe, time_):
    invoice_id = fake_stripe.fail_invoice(at=T0)
    gateway = gateway_for(fake_stripe, time_)
    invoice = gateway.get_invoice(invoice_id)
    gateway.disable_automatic_retries(invoice_id, "k-auto")
    gateway.pause_subscription(invoice.subscription_id, "keep_as_draft", "k-pause")
    gateway.update_link(invoice, "billing_portal", "https://acme.test/billing", "k-link")
    gateway.mark_uncollectible(invoice_id, "k-write-off")
    gateway.cancel_subscription(invoice.subscription_id, "dunning exhausted", "k-cancel")
    keys = {key for (_, key) in fake_stripe._idempotency}
    assert {"k-auto", "k-write-off"} <= keys
    assert {"k-pause", "k-link"} <= {key.split("~")[0] for key in keys}   # plus a hash of what can change
    assert "k-cancel" not in keys             # Stripe ignores idempotency keys on DELETE
    sub = fake_stripe.store["subscription"][invoice.subscription_id]
    assert sub["cancellation_details"]["comment"] == "dunning exhausted"
    session = next(iter(fake_stripe.store["billing_portal.session"].values()))
    assert (session["flow"]["type"], session["return_url"]) == ("payment_method_update", "https://acme.test/billing")
    assert fake_stripe.invoice(invoice_id)["auto_advance"] is False


def test_an_expansion_needs_the_read_permission_of_what_it_expands(fake_stripe, time_):
    key = "rk_test_restricted_0002"
    fake_stripe.deny(key, "payment_method_read")        # Invoices: read alone does not show the card
    invoice_id = fake_stripe.fail_invoice(at=T0)
    with pytest.raises(GatewayAuthError, match=re.escape("PaymentMethods: read")):
        gateway_for(fake_stripe, time_, key=key).get_invoice(invoice_id)
