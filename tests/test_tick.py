"""`dunctl tick` end to end on a real ledger file, with emails received by a real SMTP server."""

import json
import re
import sqlite3

import pytest

from tests.helpers import T0, at, cli, customer, failed_invoice, open_engine_ledger, pay, seed, signal, starter, sent_as
from tests.servers import closed_port


@pytest.fixture
def smtp_config(tmp_path, smtp_server):
    return starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                   "port": smtp_server.port}})


def tick(config, when, *extra):
    return cli(config, "tick", "--no-sync", "--now", when.isoformat(), *extra)


def subjects(smtp_server):
    return [(r.rcpt_tos[0], r.message["Subject"]) for r in smtp_server.received]


def test_a_due_email_is_sent_once_however_often_tick_runs(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"), customers=[customer("cus_1", billing_email="ap@acme.test")])
    first = tick(smtp_config, at("29m"))
    assert first.exit_code == 0 and first.stdout.startswith("opened 1, closed 0, ran 0 action(s)")
    idle = tick(smtp_config, at("29m"))
    assert idle.exit_code == 0 and idle.stdout == ""  # nothing happened: cron gets silence
    for _ in range(3):
        result = tick(smtp_config, at("31m"))
        assert result.exit_code == 0, result.output
    assert subjects(smtp_server) == [("ap@acme.test", "Your Example payment of $49.00 didn't go through")]
    message = smtp_server.received[0].message
    assert sent_as(smtp_config, message)[1] == "notice"
    # an automated message, and nothing internal in its headers: one opaque reference the ledger resolves
    assert message["Auto-Submitted"] == "auto-generated"
    assert [name for name in message.keys() if name.lower().startswith("x-dunctl")] == ["X-Dunctl-Ref"]
    assert re.fullmatch(r"[0-9a-f]{16}", message["X-Dunctl-Ref"])
    text = message.get_body(("plain",)).get_content()
    assert "https://invoice.stripe.test/in_1" in text
    assert "your bank declined the payment" in text
    html = message.get_body(("html",)).get_content()
    assert 'href="https://invoice.stripe.test/in_1"' in html


def test_tick_json_reports_opened_cases_and_actions(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"))
    result = tick(smtp_config, at("31m"), "--json")
    data = json.loads(result.stdout)
    assert set(data) >= {"now", "opened", "closed", "actions"}
    assert data["opened"] == ["in_1"]
    assert data["actions"] == [{"invoice_id": "in_1", "step": "notice", "action": "email", "status": "done",
                                "detail": data["actions"][0]["detail"], "recipient": "cus_1@example.com",
                                "subject": "Your Example payment of $49.00 didn't go through"}]
    assert "cus_1@example.com" in data["actions"][0]["detail"]


def test_a_payment_between_ticks_suppresses_every_later_step(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    invoice = failed_invoice("in_1")
    seed(ledger, invoice)
    tick(smtp_config, at("31m"))
    pay(ledger, invoice, at("2d"))
    for day in range(3, 35):
        assert tick(smtp_config, at(f"{day}d")).exit_code == 0
    # no dunning step after the payment: only the thank-you for it (the shipped sequence's on_recovery)
    assert [s for _, s in subjects(smtp_server)] == ["Your Example payment of $49.00 didn't go through",
                                                     "Thank you: we have received your payment to Example"]
    case = ledger.cases.for_invoice("in_1")
    assert case["state"] == "recovered"
    assert case["recovered_at"] == "2026-11-04T14:00:00Z"
    assert case["amount_recovered"] == 4900
    assert case["next_due_at"] is None


def test_the_escalation_channel_hears_when_a_case_it_holds_is_recovered(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    invoice = failed_invoice("in_big", amount=6_000_000)  # above the human-review threshold
    seed(ledger, invoice)
    tick(smtp_config, at("1m"))
    assert ("collections@example.com", "[dunctl] Large invoice failed: needs a person now: INV-big") in \
        subjects(smtp_server)
    pay(ledger, invoice, at("1h"))
    tick(smtp_config, at("90m"))
    tick(smtp_config, at("3h"))
    notices = [s for to, s in subjects(smtp_server) if "Recovered" in s]
    assert notices == ["[dunctl] Recovered, no action needed: INV-big"]
    # the customer never got the 2h notice: the case ended first
    assert not any(to == "cus_1@example.com" for to, _ in subjects(smtp_server))


def test_a_customer_with_dunning_off_gets_no_messages_but_the_case_is_tracked(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"), customers=[customer("cus_1", dunning="off")])
    for offset in ("31m", "3d", "5d", "12d", "15d"):
        tick(smtp_config, at(offset))
    recipients = [to for to, _ in subjects(smtp_server)]
    assert "ada@example.com" not in recipients
    assert recipients == ["collections@example.com"]  # the day-15 escalation still reaches a person
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert statuses["notice"] == "skipped" and statuses["escalate"] == "done"


def test_a_case_first_seen_late_sends_one_message_not_a_backlog(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1", failed_at=T0), now=at("4d1h"))
    tick(smtp_config, at("4d1h"))
    assert [s for _, s in subjects(smtp_server)] == ["Action needed: update your payment details for Example"]
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    # the latest customer message goes out once; the overdue retry is left to Stripe's schedule (retries: stripe)
    assert statuses == {"notice": "missed", "retry-1": "done", "reminder": "missed", "update-link": "done"}


def test_a_failing_channel_is_recorded_retried_later_and_does_not_stop_other_work(tmp_path, smtp_server):
    down = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": "127.0.0.1",
                                                   "port": closed_port(), "timeout": 2}})
    ledger = open_engine_ledger(down)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1"), failed_invoice("in_2", customer_id="cus_2"))
    result = tick(down, at("31m"))
    assert result.exit_code == 1
    assert "failed: in_1 notice (email)" in result.stderr
    assert "failed: in_2 notice (email)" in result.stderr
    action = ledger.actions(ledger.cases.for_invoice("in_1")["id"])[0]
    assert action["status"] == "failed" and "refused" in action["error"].lower()
    # the SMTP server comes back: the next tick after the retry delay sends each notice exactly once
    up = starter(tmp_path / "up", **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                        "port": smtp_server.port},
                                     "ledger.path": str(tmp_path / "dunctl.db")})
    assert tick(up, at("40m")).exit_code == 0
    assert smtp_server.received == []  # too soon: the retry waits action_retry_after
    assert tick(up, at("62m")).exit_code == 0
    assert tick(up, at("95m")).exit_code == 0
    assert sorted(to for to, _ in subjects(smtp_server)) == ["cus_1@example.com", "cus_2@example.com"]
    assert ledger.actions(ledger.cases.for_invoice("in_1")["id"])[0]["tries"] == 2


def table_counts(path):
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: db.execute(f"SELECT count(*), total(rowid) FROM [{t}]").fetchone() for t in tables}


def test_dry_run_prints_what_would_happen_and_changes_nothing(smtp_config, smtp_server, tmp_path):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"))
    before = table_counts(ledger.path)
    result = tick(smtp_config, at("31m"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("dry run: opened 1, closed 0, would run 1 action(s)")
    assert "would" in result.stdout and "cus_1@example.com" in result.stdout
    assert "Your Example payment of $49.00 didn't go through" in result.stdout
    assert table_counts(ledger.path) == before
    assert smtp_server.received == []
    real = tick(smtp_config, at("31m"), "--json")
    assert [a["step"] for a in json.loads(real.stdout)["actions"]] == ["notice"]


def test_a_dispute_stops_dunning_and_hands_the_case_to_a_person(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"))
    tick(smtp_config, at("31m"))
    signal(ledger, "dispute", at("1d"), invoice_id="in_1", detail="reason: fraudulent")
    tick(smtp_config, at("1d1h"))
    for day in range(2, 20):
        tick(smtp_config, at(f"{day}d"))
    sent = subjects(smtp_server)
    assert sent[0][0] == "cus_1@example.com" and len([s for to, s in sent if to == "cus_1@example.com"]) == 1
    assert ("collections@example.com", "[dunctl] Payment disputed: INV-1") in sent
    case = ledger.cases.for_invoice("in_1")
    assert (case["state"], case["with_person"], case["failure_type"]) == ("paused", 1, "dispute")


def test_a_new_decline_reclassifies_the_case(smtp_config, smtp_server):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1"))
    tick(smtp_config, at("31m"))
    seed(ledger, failed_invoice("in_1", decline_code="stolen_card", failed_at=at("2d"), attempt_count=2))
    tick(smtp_config, at("2d1h"))
    case = ledger.cases.for_invoice("in_1")
    assert (case["failure_type"], case["decline_code"], case["attempts"]) == ("card_hard", "stolen_card", 2)
    assert case["first_failed_at"] == "2026-11-02T14:00:00Z"  # the first failure never moves
    kinds = [t["summary"] for t in ledger.cases.timeline(case["id"])]
    assert "re-classified card_soft -> card_hard (stolen_card)" in kinds
    assert "payment attempt 2 failed: stolen_card" in kinds


def test_a_template_broken_after_the_case_opened_fails_that_action_only(smtp_config, smtp_server, tmp_path):
    ledger = open_engine_ledger(smtp_config)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1"),
         failed_invoice("in_2", customer_id="cus_2", decline_code="expired_card"))
    # in_1's notice template parses (a template that does not parse stops the whole tick before it starts) but
    # fails when rendered
    (tmp_path / "templates" / "payment-failed.txt.j2").write_text("{{ customer.nickname.upper() }}")
    result = tick(smtp_config, at("31m"))
    assert result.exit_code == 1
    notice = ledger.actions(ledger.cases.for_invoice("in_1")["id"])[0]
    assert notice["status"] == "failed" and "payment-failed does not render" in notice["error"]
    assert [r.rcpt_tos[0] for r in smtp_server.received] == ["cus_2@example.com"]  # the other case carried on


def test_escalating_to_the_account_manager_emails_them_the_case(tmp_path, smtp_server):
    config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                     "port": smtp_server.port},
                                  "segments": [{"name": "all", "sequence": "am"}]})
    (tmp_path / "sequences" / "am.yaml").write_text(
        "name: am\nsteps:\n  - {id: tell-am, at: 1h, action: escalate, to: account_manager, note: Call them}\n")
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"), customers=[customer("cus_1", account_manager_email="am@ours.test")])
    assert tick(config, at("1h")).exit_code == 0
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["am@ours.test"]
    assert received.message["Subject"] == "[dunctl] Call them: INV-1"
    assert "owes $49.00 USD on invoice INV-1" in received.message.get_content()
