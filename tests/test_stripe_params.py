"""The fake is as strict as Stripe about parameters: every request it serves is checked against stripe-python's
generated params types (tests/stripe_params.py), through the real SDK over HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import stripe

from tests.fakestripe import TEST_KEY, FakeStripe, fake_stripe  # noqa: F401  (fixture)
from tests.stripe_params import DOCUMENTED_CODES, PARAMS


def _route(verb: str, pattern: str) -> str:
    return f"{verb} " + pattern.replace("(?P<id>[^/]+)", ":id")


def _sdk_routes() -> dict[str, str]:
    """(method path) -> the params type stripe-python's own service method for it takes, read from its sources."""
    found = {}
    call = re.compile(r'params: (?:Optional\[)?"(\w+Params)"\]?.*?self\._request(?:_async)?\(\s*"(\w+)",\s*"(/v1/[^"]+)"', re.S)
    for source in Path(stripe.__file__).parent.rglob("_*_service.py"):
        for name, verb, path in call.findall(source.read_text()):
            found[f"{verb.upper()} " + re.sub(r"\{\w+\}", ":id", path)] = name
    return found


def test_every_route_the_fake_serves_is_checked_against_the_sdks_own_params_type():
    routes = [_route(verb, pattern) for verb, pattern, _, _ in FakeStripe._ROUTES]
    assert sorted(routes) == sorted(PARAMS), "a route the fake serves is unvalidated (or a mapping is stale)"
    sdk = _sdk_routes()
    for route, shape in PARAMS.items():
        assert sdk[route] == shape.__name__, route
        if route.startswith("GET ") and route.endswith("/:id"):
            assert shape.__name__.endswith("RetrieveParams"), route


@pytest.mark.parametrize("route", [_route(verb, pattern) for verb, pattern, _, _ in FakeStripe._ROUTES])
def test_every_route_the_fake_serves_refuses_an_unknown_parameter(fake_stripe, route):
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url}, max_network_retries=0)
    verb, path = route.split(" ")
    with pytest.raises(stripe.InvalidRequestError) as refused:    # refused before the id is even looked up
        client.raw_request(verb.lower(), path.replace(":id", "x_1"), no_such_parameter="1")
    assert (refused.value.code, refused.value.param) == ("parameter_unknown", "no_such_parameter")


@pytest.fixture
def account(fake_stripe):
    invoice = fake_stripe.fail_invoice()
    client = stripe.StripeClient(TEST_KEY, base_addresses={"api": fake_stripe.url})
    return fake_stripe, client, invoice, fake_stripe.subscription_of(invoice)["id"]


REFUSED = {
    "unknown parameter": (lambda c, inv, sub: c.v1.invoices.pay(inv, params={"payment_methd": "pm_1"}),
                          "parameter_unknown", "payment_methd", "Received unknown parameter: payment_methd"),
    "unknown nested parameter": (lambda c, inv, sub: c.v1.subscriptions.update(
        sub, params={"pause_collection": {"behavior": "void", "resume_at": 1}}),
        "parameter_unknown", "pause_collection[resume_at]", "Received unknown parameter: pause_collection[resume_at]"),
    "integer expected": (lambda c, inv, sub: c.v1.invoices.list(params={"limit": "ten"}),
                         "parameter_invalid_integer", "limit", "Invalid integer: ten"),
    "boolean expected": (lambda c, inv, sub: c.v1.invoices.update(inv, params={"auto_advance": "no"}),
                         None, "auto_advance", "Invalid boolean: no"),
    "hash expected": (lambda c, inv, sub: c.v1.subscriptions.update(sub, params={"pause_collection": "void"}),
                      None, "pause_collection", "Invalid object"),
    "list expected": (lambda c, inv, sub: c.v1.events.list(params={"types": "invoice.paid"}),
                      None, "types", "Invalid array"),
    "empty string": (lambda c, inv, sub: c.v1.invoices.pay(inv, params={"payment_method": ""}),
                     "parameter_invalid_empty", "payment_method", "You passed an empty string for 'payment_method'"),
    "missing required": (lambda c, inv, sub: c.v1.subscriptions.update(
        sub, params={"pause_collection": {"resumes_at": 1900000000}}),
        "parameter_missing", "pause_collection[behavior]", "Missing required param: pause_collection[behavior]."),
    "missing required (list)": (lambda c, inv, sub: c.v1.subscription_items.list(params={}),  # type: ignore
                                "parameter_missing", "subscription", "Missing required param: subscription."),
    "bad enum": (lambda c, inv, sub: c.v1.subscriptions.update(sub, params={"pause_collection": {"behavior": "nap"}}),
                 None, "pause_collection[behavior]", "Invalid pause_collection[behavior]: must be one of "
                                                     "keep_as_draft, mark_uncollectible, void"),
    "bad enum in a query": (lambda c, inv, sub: c.v1.invoices.list(params={"status": "unpaid"}),
                            None, "status", "Invalid status: must be one of draft, open, paid, uncollectible, void"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_the_fake_refuses_what_stripe_refuses_with_stripes_400(account, case):
    fake, client, invoice, subscription = account
    call, code, param, message = REFUSED[case]
    events = len(fake.events)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        call(client, invoice, subscription)
    error = refused.value
    assert (error.http_status, error.code, error.param) == (400, code, param)
    assert error.user_message.startswith(message)
    assert error.json_body["error"]["type"] == "invalid_request_error"
    assert code is None or code in DOCUMENTED_CODES
    assert len(fake.events) == events and fake.invoice(invoice)["status"] == "open"


def test_a_refused_request_saves_nothing_under_its_idempotency_key(account):
    fake, client, invoice, subscription = account
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(subscription, params={"pause_collection": {"behavior": "nap"}},
                                       options={"idempotency_key": "pause-1"})
    # Stripe stores no result for a request that failed validation: the key is free for the corrected request.
    client.v1.subscriptions.update(subscription, params={"pause_collection": {"behavior": "void"}},
                                   options={"idempotency_key": "pause-1"})
    assert fake.subscription_of(invoice)["pause_collection"]["behavior"] == "void"


def test_what_the_sdk_sends_for_valid_params_passes(account):
    fake, client, invoice, subscription = account
    client.v1.events.list(params={"types": ["invoice.paid", "invoice.payment_failed"], "limit": 100,
                                  "created": {"gte": 0}})
    client.v1.invoices.update(invoice, params={"auto_advance": False, "metadata": {"dunctl": "1"}})
    client.v1.subscriptions.update(subscription, params={"pause_collection": ""})
    fake.next_payment_succeeds(invoice)
    client.v1.invoices.pay(invoice, params={"off_session": True})
    assert fake.invoice(invoice)["status"] == "paid"


def test_the_fake_answers_only_error_codes_stripe_documents(account):
    from tests.fakestripe import ApiError

    with pytest.raises(AssertionError, match="undocumented"):
        ApiError(400, "invalid_request_error", "Invoice is already paid", code="invoice_already_paid")
    fake, client, invoice, _ = account
    fake.customer_pays(invoice)
    with pytest.raises(stripe.InvalidRequestError, match="already paid") as refused:
        client.v1.invoices.pay(invoice)
    assert refused.value.code is None


def test_a_list_expands_only_under_data(account):
    _, client, _, _ = account
    with pytest.raises(stripe.InvalidRequestError, match=r"cannot be expanded \(customer\)"):
        client.v1.invoices.list(params={"expand": ["customer"]})
    assert client.v1.invoices.list(params={"expand": ["data.customer"]}).data[0].customer.object == "customer"


def test_an_idempotency_key_stripe_cannot_take_is_refused(account):
    fake, client, invoice, _ = account
    fake.next_payment_succeeds(invoice)
    with pytest.raises(stripe.InvalidRequestError, match="Idempotent Keys must be 1-255 characters long"):
        client.v1.invoices.pay(invoice, options={"idempotency_key": "k" * 256})
    client.v1.invoices.pay(invoice, options={"idempotency_key": "k" * 255})
    assert fake.invoice(invoice)["status"] == "paid"
