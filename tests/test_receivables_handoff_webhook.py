"""The hand-off to collections also POSTs the case's packet to `collections.webhook`, signed like every dunctl
webhook, through the real CLI against the fake Stripe and a local HTTP receiver: a failing webhook fails the step
(the case is not handed off, the packet stays on disk) and the next tick delivers it."""

from __future__ import annotations

import json
from datetime import timedelta

import yaml

from dunctl.channels.webhook import verify_signature
from tests.fakestripe import fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, cli
from tests.servers import http_receiver, smtp_server  # noqa: F401  (fixture)
from tests.test_receivables import DAY, ENV, books  # noqa: F401  (fixture)

SECRET = "whsec_agency_123"


def test_the_collections_packet_goes_to_the_webhook_and_a_failure_is_retried_losing_nothing(books, http_receiver):
    config = yaml.safe_load(books.config.read_text())
    config["collections"] = {"webhook": {"url": http_receiver.url("/agency"), "secret_env": "AGENCY_SECRET"}}
    books.config.write_text(yaml.safe_dump(config))
    (books.config.parent / "sequences" / "net-terms.yaml").write_text(
        "name: net-terms\nsteps:\n  - {id: to-agency, at: 1d, action: hand_off}\n")
    invoice = books.issue("acme", 90000, due=T0 + 7 * DAY)
    env = {**ENV, "AGENCY_SECRET": SECRET}

    http_receiver.respond(500, "agency down")
    when = T0 + 8 * DAY + timedelta(hours=1)
    books.fake.set_now(when)
    failed = cli(books.config, "tick", "--now", when.isoformat(), env=env)
    assert failed.exit_code == 1 and "500" in failed.stderr
    case = books.show(invoice)
    [step] = case["actions"]
    assert (step["step_id"], step["status"], case["case"]["state"]) == ("to-agency", "failed", "open")
    assert json.loads((books.config.parent / "collections" / f"{invoice}.json").read_text())["invoice"]["id"] \
        == invoice                                                     # written before the post: nothing lost

    http_receiver.respond(200, "ok")
    when += timedelta(hours=1)
    books.fake.set_now(when)
    done = cli(books.config, "tick", "--now", when.isoformat(), env=env)
    assert done.exit_code == 0, done.output
    first, second = [r for r in http_receiver.requests if r.path == "/agency"]
    assert json.loads(first.body)["id"] == json.loads(second.body)["id"]      # one event, deduplicated by its id
    assert verify_signature(SECRET, second.headers["Dunctl-Signature"], second.body, now=None)
    event = json.loads(second.body)
    assert (event["type"], event["data"]["invoice"]["id"], event["data"]["invoice"]["amount_remaining"]) == \
        ("collections.hand_off", invoice, 90000)
    assert event["data"]["customer"]["billing_email"] == "ap@acme.test"
    case = books.show(invoice)
    assert (case["case"]["state"], case["case"]["with_person"], case["actions"][0]["status"]) == ("paused", 1, "done")
    assert "webhook" in case["actions"][0]["detail"]
