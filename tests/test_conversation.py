"""One conversation per customer: emails due together go out as one message, and a contact policy caps how
often one customer hears from dunctl across all its cases. Real SMTP server, real ledger, the real CLI."""

from datetime import timedelta

from tests.helpers import T0, at, cli, customer, failed_invoice, open_engine_ledger, seed, starter, sent_as

POLICY = {"max_per_week": 3, "min_gap": "36h", "channels": {"sms": {"max_per_case": 2}}}


def config_for(tmp_path, smtp_server, contact=None):
    settings = {"channels.email": {"transport": "smtp", "host": smtp_server.host, "port": smtp_server.port}}
    if contact:
        settings["contact"] = contact
    return starter(tmp_path, **settings)


def tick(config, when):
    result = cli(config, "tick", "--no-sync", "--now", when.isoformat())
    assert result.exit_code == 0, result.output
    return result


def test_two_failed_invoices_of_one_customer_make_one_email_and_another_currency_its_own(tmp_path, smtp_server):
    config = config_for(tmp_path, smtp_server)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_a", customer_id="cus_1", amount=4900),
         failed_invoice("in_b", customer_id="cus_1", amount=1500, subscription_id="sub_2"),
         failed_invoice("in_c", customer_id="cus_1", amount=9900, currency="eur", subscription_id="sub_3"),
         failed_invoice("in_d", customer_id="cus_2"),
         customers=[customer("cus_1", email="ada@example.com"), customer("cus_2", email="bob@example.com")])
    tick(config, at("31m"))
    received = sorted((r.rcpt_tos[0], sent_as(config, r.message)[0]) for r in smtp_server.received)
    assert received == [("ada@example.com", "in_a, in_b"), ("ada@example.com", "in_c"),
                        ("bob@example.com", "in_d")]
    refs = {c["invoice_id"]: ledger.actions(c["id"])[0] for c in ledger.cases.listed()}
    assert refs["in_a"]["status"] == refs["in_b"]["status"] == "done"
    assert refs["in_a"]["message_ref"] == refs["in_b"]["message_ref"] is not None
    assert refs["in_c"]["message_ref"] is None
    assert "one message for in_a, in_b" in refs["in_b"]["detail"]
    both = next(r for r in smtp_server.received if sent_as(config, r.message)[0] == "in_a, in_b")
    text = both.message.get_body(("plain",)).get_content()
    for number, amount, link in (("INV-a", "$49.00", "in_a"), ("INV-b", "$15.00", "in_b")):
        assert number in text and amount in text and f"https://invoice.stripe.test/{link}" in text
    assert "$64.00" in text                                                       # the total


def customer_mail(smtp_server):
    return [r for r in smtp_server.received if r.rcpt_tos[0] == "ada@example.com"]


def test_the_contact_policy_holds_across_cases_over_three_weeks(tmp_path, smtp_server):
    config = config_for(tmp_path, smtp_server, POLICY)
    ledger = open_engine_ledger(config)
    # three invoices of one customer failing on days 0, 2 and 9: three sequences that would talk at once
    seed(ledger, failed_invoice("in_1", customer_id="cus_1", failed_at=T0),
         customers=[customer("cus_1", email="ada@example.com")])
    times = []
    # a tick every 8 hours (cron's pace matters not: each send is checked against the one before it)
    for hour in range(0, 20 * 24, 8):     # (day 21 suspends: a Stripe call, outside this test)
        now = T0 + timedelta(hours=hour)
        if hour == 48:
            seed(ledger, failed_invoice("in_2", customer_id="cus_1", failed_at=now, subscription_id="sub_2"),
                 customers=[customer("cus_1", email="ada@example.com")], now=now)
        if hour == 9 * 24:
            seed(ledger, failed_invoice("in_3", customer_id="cus_1", failed_at=now, subscription_id="sub_3"),
                 customers=[customer("cus_1", email="ada@example.com")], now=now)
        before = len(customer_mail(smtp_server))
        tick(config, now)
        times += [now] * (len(customer_mail(smtp_server)) - before)   # (escalations to collections are not capped)
    assert len(times) >= 6
    for i, sent_at in enumerate(times):
        week = [t for t in times if sent_at - timedelta(days=7) < t <= sent_at]
        assert len(week) <= 3, (sent_at, week)
        if i:
            assert sent_at - times[i - 1] >= timedelta(hours=36), (times[i - 1], sent_at)


def test_a_held_message_goes_out_at_the_earliest_allowed_time_and_says_why_it_waited(tmp_path, smtp_server):
    config = config_for(tmp_path, smtp_server, POLICY)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1", failed_at=T0),
         customers=[customer("cus_1", email="ada@example.com")])
    tick(config, at("31m"))                                  # in_1's notice
    seed(ledger, failed_invoice("in_2", customer_id="cus_1", failed_at=at("1d"), subscription_id="sub_2"),
         customers=[customer("cus_1", email="ada@example.com")], now=at("1d"))
    tick(config, at("1d1h"))                                 # in_2's notice is due, but only 24.5 h passed
    assert len(smtp_server.received) == 1
    case = ledger.cases.for_invoice("in_2")
    assert case["next_step"] == "notice" and case["next_due_at"] == "2026-11-04T02:31:00Z"   # 36 h after
    explained = cli(config, "explain", "in_2", "--now", at("1d1h").isoformat()).stdout
    assert "contact policy: at least 36.0h between messages" in explained
    tick(config, at("1d12h30m"))
    assert len(smtp_server.received) == 1
    tick(config, at("1d12h31m"))
    assert [sent_as(config, r.message)[0] for r in smtp_server.received] == ["in_1", "in_2"]


def test_a_pre_dunning_notice_counts_toward_the_contact_policy_of_dunning_messages(tmp_path, smtp_server):
    config = config_for(tmp_path, smtp_server, POLICY)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_1", customer_id="cus_1", failed_at=T0),
         customers=[customer("cus_1", email="ada@example.com")])
    ledger.db.execute(   # a card-expiry notice went out an hour before the payment failed
        """INSERT INTO notices(kind, object_id, period, "offset", customer_id, status, due_at, planned_at,
                               finished_at, idempotency_key)
           VALUES ('card_expiring', 'pm_1', '2026-12', '14d', 'cus_1', 'done', ?, ?, ?, 'k')""",
        ["2026-11-02T13:00:00Z"] * 3)
    tick(config, at("31m"))
    assert smtp_server.received == []                     # held: 36 h after the notice
    assert ledger.cases.for_invoice("in_1")["next_due_at"] == "2026-11-04T01:00:00Z"


def test_messages_due_in_the_same_tick_count_toward_the_policy_too(tmp_path, smtp_server):
    """Another currency's message (grouped apart) due in the same tick as the first waits the minimum gap; with
    grouping off, so does a second invoice's email: one customer never gets two messages at once."""
    config = config_for(tmp_path, smtp_server, POLICY)
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_a", customer_id="cus_1", amount=4900),
         failed_invoice("in_b", customer_id="cus_1", amount=1500, subscription_id="sub_2"),
         failed_invoice("in_c", customer_id="cus_1", amount=9900, currency="eur", subscription_id="sub_3"),
         customers=[customer("cus_1", email="ada@example.com")])
    tick(config, at("31m"))
    assert [sent_as(config, r.message)[0] for r in smtp_server.received] == ["in_a, in_b"]
    held = ledger.cases.for_invoice("in_c")
    assert held["next_step"] == "notice" and held["next_due_at"] == "2026-11-04T02:31:00Z"     # 36 h later
    explained = cli(config, "explain", "in_c", "--now", at("31m").isoformat()).stdout
    assert "contact policy: at least 36.0h between messages" in explained
    tick(config, at("1d12h30m"))
    assert len(smtp_server.received) == 1
    tick(config, at("1d12h31m"))
    assert [sent_as(config, r.message)[0] for r in smtp_server.received] == ["in_a, in_b", "in_c"]


def test_with_grouping_off_a_second_invoice_waits_the_minimum_gap(tmp_path, smtp_server):
    config = starter(tmp_path, contact=POLICY, **{"dunning.group_messages": False, "channels.email": {
        "transport": "smtp", "host": smtp_server.host, "port": smtp_server.port}})
    ledger = open_engine_ledger(config)
    seed(ledger, failed_invoice("in_a", customer_id="cus_1"),
         failed_invoice("in_b", customer_id="cus_1", subscription_id="sub_2"),
         customers=[customer("cus_1", email="ada@example.com")])
    tick(config, at("31m"))
    tick(config, at("2h"))
    assert len(smtp_server.received) == 1
    tick(config, at("1d12h31m"))
    assert sorted(sent_as(config, r.message)[0] for r in smtp_server.received) == ["in_a", "in_b"]
