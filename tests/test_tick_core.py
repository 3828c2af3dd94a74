"""The tick core's promises, each from a defect a new user met: the right person, at the right moment."""

import json
from datetime import datetime, timedelta, timezone

from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, at, cli, customer, failed_invoice, open_engine_ledger, pay, seed, starter

NIGHT_IN_NEW_YORK = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)     # 02:00 in New York
AFTERNOON = datetime(2026, 11, 24, 19, 0, tzinfo=timezone.utc)            # 14:00 in New York


def smtp_starter(tmp_path, smtp_server, **settings):
    return starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp_server.host,
                                                   "port": smtp_server.port}, **settings})


def tick(config, when, *extra, env=None):
    return cli(config, "tick", "--no-sync", "--now", when.isoformat(), *extra, env=env)


def sent(smtp_server):
    return [(r.rcpt_tos[0], r.message["Subject"]) for r in smtp_server.received]


def test_a_customer_is_never_emailed_inside_quiet_hours_however_late_the_tick(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server, **{"sender.quiet_hours": "21:00-08:00",
                                                    "sender.timezone": "America/New_York"})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", failed_at=AFTERNOON))
    # first seen at 02:00 New York time, long after the 30m notice fell due in the afternoon
    night = tick(config, NIGHT_IN_NEW_YORK)
    assert night.exit_code == 0 and smtp_server.received == []
    assert tick(config, NIGHT_IN_NEW_YORK + timedelta(hours=5, minutes=59)).exit_code == 0   # 07:59
    assert smtp_server.received == []
    morning = tick(config, NIGHT_IN_NEW_YORK + timedelta(hours=6))                           # 08:00
    assert morning.exit_code == 0
    assert [to for to, _ in sent(smtp_server)] == ["cus_1@example.com"]
    case = ledger.cases.for_invoice("in_1")
    assert case["next_step"] == "retry-1"


def test_people_inside_the_company_are_told_at_night_when_dunning_is_off_and_when_first_seen_late(
        tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server, **{"sender.quiet_hours": "21:00-08:00",
                                                    "sender.timezone": "America/New_York"})
    ledger = open_engine_ledger(config)
    big = failed_invoice("in_big", amount=8_000_000, failed_at=NIGHT_IN_NEW_YORK - timedelta(hours=24, minutes=12))
    seed(ledger, big, customers=[customer("cus_1", dunning="off", account_manager_email="am@acme.test")])
    result = tick(config, NIGHT_IN_NEW_YORK)     # first synced 24.2 h after the failure, at 02:00 New York time
    assert result.exit_code == 0, result.output
    assert sorted(sent(smtp_server)) == [
        ("am@acme.test", "[Billing] Ada Lovelace: $80,000.00 payment failed"),
        ("collections@example.com", "[dunctl] Large invoice failed: needs a person now: INV-big")]
    statuses = {a["step_id"]: (a["status"], a["audience"]) for a in ledger.actions(ledger.cases.for_invoice(
        "in_big")["id"])}
    assert statuses == {"escalate": ("done", "internal"), "account-manager": ("done", "internal"),
                        "notice": ("skipped", "customer")}


def test_a_customer_notice_due_with_the_account_managers_email_supersedes_nothing(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_big", amount=8_000_000),
         customers=[customer("cus_1", account_manager_email="am@acme.test", billing_email="ap@acme.test")])
    assert tick(config, at("3h")).exit_code == 0
    assert sorted(to for to, _ in sent(smtp_server)) == ["am@acme.test", "ap@acme.test", "collections@example.com"]


def test_after_cron_was_down_for_days_the_tick_says_what_it_missed_and_why(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    assert tick(config, at("31m")).exit_code == 0
    late = tick(config, at("31m") + timedelta(days=6, hours=22))       # cron was down for 6.9 days
    assert late.exit_code == 0
    assert "missed" in late.stderr and "the last tick was 6.9 days ago" in late.stderr
    # one message, the latest, not a burst
    assert [to for to, _ in sent(smtp_server)] == ["cus_1@example.com", "cus_1@example.com"]
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert statuses["reminder"] == "missed" and statuses["update-link"] == "done"


def test_a_case_first_synced_late_says_so(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", failed_at=T0), now=at("10d"))
    result = tick(config, at("10d"))
    assert "case first synced 10.0 days after the failure" in result.stderr


def test_sync_tells_a_person_about_a_dispute_on_an_open_case_without_a_traceback(tmp_path, fake_stripe,
                                                                                   smtp_server):
    config = smtp_starter(tmp_path, smtp_server, **{"stripe.api_base": fake_stripe.url})
    env = {"STRIPE_API_KEY": TEST_KEY}
    fake_stripe.set_now(T0)
    invoice = fake_stripe.fail_invoice(amount=4900, at=T0)
    paid = fake_stripe.create_invoice(fake_stripe.invoice(invoice)["customer"], amount=4900, at=T0)
    fake_stripe.attempt(paid, True, at=T0)          # an earlier payment of the same customer: what can be disputed
    fake_stripe.set_now(at("1h"))
    assert cli(config, "sync", "--now", at("1h").isoformat(), env=env).exit_code == 0
    assert cli(config, "tick", "--now", at("1h").isoformat(), env=env).exit_code == 0
    dispute = fake_stripe.dispute(paid, at=at("1d"))
    fake_stripe.set_now(at("1d1h"))
    result = cli(config, "sync", "--now", at("1d1h").isoformat(), env=env)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    due = (at("1d") + timedelta(days=9)).strftime("%Y-%m-%d %H:%M")
    assert ("collections@example.com", f"[dunctl] Payment disputed: $49.00 (fraudulent), evidence due {due} UTC "
            f"(dispute {dispute}): "
            f"{fake_invoice_number(fake_stripe, invoice)}") in sent(smtp_server)
    ledger = open_engine_ledger(config)
    assert ledger.cases.for_invoice(invoice)["state"] == "paused"


def fake_invoice_number(fake, invoice_id):
    return fake.store["invoice"][invoice_id]["number"] or invoice_id


def test_a_dry_run_says_would_with_recipient_and_subject_and_never_creates_a_ledger(tmp_path):
    config = starter(tmp_path, ledger=False, **{"ledger.path": "not-yet.db"})
    result = tick(config, at("31m"), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["actions"] == []
    assert not (tmp_path / "not-yet.db").exists()

    ledger = open_engine_ledger(starter(tmp_path / "b"))
    seed(ledger, failed_invoice("in_1"))
    data = json.loads(tick(tmp_path / "b" / "dunctl.yaml", at("31m"), "--dry-run", "--json").stdout)
    assert [(a["step"], a["status"], a["recipient"], a["subject"]) for a in data["actions"]] == [
        ("notice", "would", "cus_1@example.com", "Your Example payment of $49.00 didn't go through")]
    assert ledger.actions(ledger.cases.for_invoice("in_1")["id"]) == [] if ledger.cases.for_invoice("in_1") else True


def test_the_summary_names_what_changed_and_a_retry_left_to_stripe_mails_nobody(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    invoice = failed_invoice("in_1")
    seed(ledger, invoice)
    assert tick(config, at("31m")).exit_code == 0
    quiet = tick(config, at("2d"))                     # only retry-1, which Stripe's Smart Retries own
    assert quiet.exit_code == 0 and quiet.stdout == ""
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert statuses["retry-1"] == "done"
    pay(ledger, invoice, at("2d1h"))
    paid = tick(config, at("2d2h"))
    assert paid.stdout.strip().endswith("closed in_1 recovered")


def test_monitor_mode_records_would_sends_nothing_and_going_live_sends_only_the_latest(tmp_path, smtp_server):
    config = smtp_starter(tmp_path, smtp_server, mode="monitor")
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    for offset in ("31m", "2d", "3d1h"):
        result = tick(config, at(offset))
        assert result.exit_code == 0
    assert smtp_server.received == []
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert statuses == {"notice": "would", "retry-1": "would", "reminder": "would"}
    assert result.stdout.startswith("monitor: ")
    # what was planned is visible where people look: status, case show, report
    assert "reminder: would" in cli(config, "status", "--now", at("3d2h").isoformat()).stdout
    assert "notice (email) would" in cli(config, "case", "show", "in_1").stdout
    report = json.loads(cli(config, "report", "--format", "json").stdout)
    assert report["headline"]["planned"] == {"email": 2, "retry": 1}
    live = smtp_starter(tmp_path / "live", smtp_server, **{"ledger.path": str(ledger.path)})
    assert tick(live, at("3d2h")).exit_code == 0
    assert [to for to, _ in sent(smtp_server)] == ["cus_1@example.com"]      # one message, not three
    statuses = {a["step_id"]: a["status"] for a in ledger.actions(ledger.cases.for_invoice("in_1")["id"])}
    assert statuses["notice"] == "missed" and statuses["reminder"] == "done"


def test_a_tick_stops_at_its_budget_and_the_next_one_finishes_without_missing_anything(tmp_path):
    from tests.test_concurrency import SlowSmtpServer

    # Six sends of 0.8 s cannot fit a 2 s budget, and one fits it however slowly a loaded machine starts the tick.
    with SlowSmtpServer(delay=0.8) as smtp:
        config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port},
                                      "dunning.tick_budget": "2s"})
        ledger = open_engine_ledger(config)
        seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(6)],
             customers=[customer(f"cus_{i}", email=f"c{i}@example.com") for i in range(6)])
        first = tick(config, at("31m"))
        assert first.exit_code == 0 and "deferred: the tick's budget ran out" in first.stderr
        assert 1 <= len(smtp.received) < 6
        for offset in ("36m", "41m", "46m", "51m", "56m"):
            tick(config, at(offset))
        assert sorted(r.rcpt_tos[0] for r in smtp.received) == [f"c{i}@example.com" for i in range(6)]
    statuses = [a["status"] for case in ledger.cases.listed() for a in ledger.actions(case["id"])]
    assert statuses == ["done"] * 6


def test_a_channel_that_keeps_failing_is_skipped_for_the_rest_of_the_tick(tmp_path):
    from tests.servers import closed_port

    config = starter(tmp_path, **{"channels.email": {"transport": "smtp", "host": "127.0.0.1",
                                                     "port": closed_port(), "timeout": 2}})
    ledger = open_engine_ledger(config)
    seed(ledger, *[failed_invoice(f"in_{i}", customer_id=f"cus_{i}") for i in range(8)])
    result = tick(config, at("31m"))
    assert result.exit_code == 1
    assert "skipped: the email channel after repeated failures" in result.stderr
    rows = [a for case in ledger.cases.listed() for a in ledger.actions(case["id"])]
    assert len(rows) == 3 and {a["status"] for a in rows} == {"failed"}   # three tries, then no more this tick
    assert all(a["tries"] == 1 for a in rows)


def test_a_template_that_does_not_parse_stops_the_tick_before_it_changes_anything(tmp_path):
    config = starter(tmp_path)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1"))
    from tests.test_tick import table_counts

    before = table_counts(ledger.path)
    (tmp_path / "templates" / "reminder.txt.j2").write_text("Hello {{ customer.name ")
    result = tick(config, at("31m"))
    assert result.exit_code == 2
    assert "reminder.txt.j2" in result.stderr and "does not parse" in result.stderr
    assert "Traceback" not in result.output
    assert table_counts(ledger.path) == before
