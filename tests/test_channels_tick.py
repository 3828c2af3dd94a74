"""Every channel end to end through `dunctl tick`: SMS (Twilio API), Slack, a signed webhook and escalation, all
posted to a local HTTP server; email through a real SMTP server; amounts in the customer's currency."""

import json
from urllib.parse import parse_qs

import pytest
import yaml

from dunctl.channels.webhook import verify_signature
from tests.badservers import BadSmtp
from tests.helpers import (
    at,
    cli,
    customer,
    failed_invoice,
    open_engine_ledger,
    seed,
    starter,
)

SECRET = "whsec_test_123"


@pytest.fixture
def multi(tmp_path, http_receiver, smtp_server):
    http_receiver.respond(201, json.dumps({"sid": "SM0001", "status": "queued"}), "application/json")
    config = starter(tmp_path, **{
        "channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port},
        "channels.slack": {"webhook_url_env": "SLACK_WEBHOOK_URL"},
        "channels.webhook": {"url": http_receiver.url("/hooks/dunning"), "secret_env": "DUNCTL_WEBHOOK_SECRET"},
        "channels.sms": {"from": "+15005550006", "base_url": http_receiver.url("/twilio")},
        "escalation": {"channel": "slack"},
        "segments": [{"name": "everyone", "sequence": "multi"}],
    })
    (tmp_path / "sequences" / "multi.yaml").write_text(yaml.safe_dump({"name": "multi", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "payment-failed"},
        {"id": "text", "at": "1h", "action": "sms", "template": "payment-reminder"},
        {"id": "ops", "at": "2h", "action": "slack"},
        {"id": "crm", "at": "3h", "action": "webhook"},
        {"id": "person", "at": "4h", "action": "escalate", "note": "Needs a call"},
    ]}))
    env = {"SLACK_WEBHOOK_URL": http_receiver.url("/slack/T000/B000/XXXX"), "DUNCTL_WEBHOOK_SECRET": SECRET,
           "TWILIO_ACCOUNT_SID": "AC123", "TWILIO_AUTH_TOKEN": "token-abc"}
    return config, env


def run(config, env, offset):
    result = cli(config, "tick", "--no-sync", "--now", at(offset).isoformat(), env=env)
    assert result.exit_code == 0, result.output
    return result


def test_sms_slack_webhook_and_escalation_each_post_once(multi, http_receiver, smtp_server):
    config, env = multi
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", amount=1_250_000, currency="jpy", decline_code="do_not_honor"),
         customers=[customer("cus_1", email="kenji@example.jp")])
    for offset in ("31m", "61m", "2h", "3h", "4h", "4h", "5h"):
        run(config, env, offset)

    paths = [r.path for r in http_receiver.requests]
    assert paths == ["/twilio/2010-04-01/Accounts/AC123/Messages.json", "/slack/T000/B000/XXXX",
                     "/hooks/dunning", "/slack/T000/B000/XXXX"]
    sms, slack, hook, escalation = http_receiver.requests

    form = {k: v[0] for k, v in parse_qs(sms.body.decode()).items()}
    assert form["To"] == "+15555550100" and form["From"] == "+15005550006"
    assert "¥1,250,000" in form["Body"] and "https://invoice.stripe.test/in_1" in form["Body"]

    assert "¥1,250,000" in json.loads(slack.body)["text"]

    body = hook.body
    assert verify_signature(SECRET, hook.headers["Dunctl-Signature"], body, now=None)
    assert not verify_signature("whsec_other", hook.headers["Dunctl-Signature"], body, now=None)
    event = json.loads(body)
    assert event["type"] == "dunning.step" and event["id"] == "dunctl-in_1-crm"
    assert event["data"]["amount_remaining"] == 1_250_000 and event["data"]["currency"] == "jpy"

    text = json.loads(escalation.body)["text"]
    for fact in ("Needs a call", "INV-1", "¥1,250,000 JPY", "card_soft, decline code do_not_honor",
                 "1 payment attempt(s)", "So far 2 message(s) sent", "email notice", "sms text",
                 "https://invoice.stripe.test/in_1", "https://dashboard.stripe.com/test/invoices/in_1"):
        assert fact in text, fact

    email = smtp_server.received[0].message
    assert email["Subject"] == "Your Example payment of ¥1,250,000 didn't go through"
    case = ledger.cases.for_invoice("in_1")
    assert case["with_person"] == 1 and case["escalated_at"] == "2026-11-02T18:00:00Z"


def test_a_webhook_that_answers_500_is_failed_with_the_reason_then_retried(multi, http_receiver):
    config, env = multi
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    for offset in ("31m", "61m", "2h"):
        run(config, env, offset)
    http_receiver.respond(500, "boom")
    failed = cli(config, "tick", "--no-sync", "--now", at("3h").isoformat(), env=env)
    assert failed.exit_code == 1 and "500" in failed.stderr
    crm = {a["step_id"]: a for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}["crm"]
    assert crm["status"] == "failed" and "500" in crm["error"]
    http_receiver.respond(200, "ok")
    run(config, env, "3h45m")
    crm = {a["step_id"]: a for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}["crm"]
    assert (crm["status"], crm["tries"]) == ("done", 2)
    assert [r.path for r in http_receiver.requests].count("/hooks/dunning") == 2


def test_secrets_never_reach_output_or_the_ledger(multi, http_receiver):
    config, env = multi
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    http_receiver.respond(500, "boom")
    outputs = [cli(config, "tick", "--no-sync", "--now", at(o).isoformat(), env=env).output
               for o in ("31m", "61m", "2h", "3h")]
    dump = "\n".join(ledger.db.conn.iterdump())
    for secret in (SECRET, "token-abc", "XXXX"):
        assert all(secret not in out for out in outputs)
        assert secret not in dump


def test_a_hostile_customer_name_still_gets_its_email_and_reaches_slack_as_plain_text(multi, http_receiver,
                                                                                       smtp_server):
    # CR/LF in a name used to block the customer's email and the escalation on every tick; <!channel> reached Slack.
    config, env = multi
    ledger = open_engine_ledger(config)
    hostile = customer("cus_1", email="ada@example.com")
    hostile.name = "Ada\r\nBcc: evil@attacker.test <!channel> <http://evil.test|pay here>"
    seed(ledger, failed_invoice("in_1"), customers=[hostile])
    ledger.close()
    for offset in ("31m", "2h", "4h"):
        run(config, env, offset)

    assert [r.rcpt_tos for r in smtp_server.received] == [["ada@example.com"]]
    assert smtp_server.received[0].message["Bcc"] is None
    slack = [json.loads(r.body)["text"] for r in http_receiver.requests if r.path.startswith("/slack/")]
    assert len(slack) == 2                                                   # the step and the escalation
    for text in slack:
        assert "<!channel>" not in text and "<http://" not in text
    assert any("&lt;!channel&gt; &lt;http://evil.test|pay here&gt;" in text for text in slack)


@pytest.mark.parametrize("behaviour, status", [("hang_after_body", "unknown"), ("reject_after_body", "failed")])
def test_an_smtp_timeout_after_the_body_is_unknown_and_never_resent_while_a_refusal_is_retried(tmp_path, behaviour,
                                                                                               status):
    # Issue 12 item 1: a server that queued the message but answered late got it twice, 30 minutes apart.
    with BadSmtp(behaviour) as server:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": "127.0.0.1",
                                                         "port": server.port, "timeout": 0.5}})
        ledger = open_engine_ledger(config)
        seed(ledger, failed_invoice("in_1"))
        for offset in ("31m", "70m", "2h"):
            cli(config, "tick", "--no-sync", "--now", at(offset).isoformat())
        notice = [a for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"]) if a["step_id"] == "notice"]
    assert [a["status"] for a in notice] == [status]
    if status == "unknown":
        assert len(server.received) == 1                       # sent once, never again
        assert "took the message body but did not confirm" in notice[0]["error"]
        assert "case resolve in_1 notice" in notice[0]["error"]
    else:
        assert len(server.received) >= 2                       # refused: nothing queued, so it is tried again
        assert "554 5.7.1" in notice[0]["error"]
