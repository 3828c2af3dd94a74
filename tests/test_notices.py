"""Pre-dunning end to end: the fake Stripe server over HTTP through the real SDK, emails through a real SMTP
server, the ledger a real file. Card expiry, renewal reminders, usage alerts and large-charge heads-ups, each sent
once, never after the facts changed, never in quiet hours or to a dunning=off customer."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from dunctl.clock import from_iso
from dunctl.config import load_config
from dunctl.ledger import Ledger
from dunctl.stripe.gateway import StripeGateway
from dunctl.tick import build_channels, run_tick
from tests.fakestripe import TEST_KEY, fake_stripe  # noqa: F401  (fixture)
from tests.helpers import T0, starter, traced

DAY, HOUR = timedelta(days=1), timedelta(hours=1)
PREVIEW = "POST /v1/invoices/create_preview"


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


JAN_15 = utc(2027, 1, 15)


class World:
    def __init__(self, tmp_path, fake, smtp, **settings):
        path = starter(tmp_path, **{"stripe.api_base": fake.url,
                                    "channels.email": {"transport": "smtp", "host": smtp.host, "port": smtp.port},
                                    **settings})
        self.fake, self.smtp = fake, smtp
        self.config = load_config(path)
        self.ledger = Ledger.open(self.config.ledger_path)
        self.gateway = StripeGateway(TEST_KEY, api_base=fake.url, sleep=lambda seconds: None)

    def tick(self, now: datetime, **kw):
        self.fake.set_now(max(now, datetime.fromtimestamp(self.fake.now, timezone.utc)))
        return run_tick(self.ledger, self.config, self.gateway, build_channels(self.config, {}), now, **kw)

    def subjects(self) -> list[str]:
        return [r.message["Subject"].strip() for r in self.smtp.received]

    def notices(self, kind: str | None = None) -> dict[str, str]:
        return {f"{n['kind']}@{n['offset']}": n["status"] for n in self.ledger.db.query("SELECT * FROM notices")
                if kind in (None, n["kind"])}

    def customer_with_card(self, *, exp=(12, 2026), period_end=JAN_15, interval=None, metered=False,
                           amount=2000, email="ada@example.com", metadata=None, timezone_=None) -> tuple[str, str, str]:
        meta = dict(metadata or {})
        if timezone_:
            meta["timezone"] = timezone_
        cus = self.fake.add_customer(email, metadata=meta, at=T0 - 40 * DAY)
        pm = self.fake.add_payment_method(cus, exp_month=exp[0], exp_year=exp[1], at=T0 - 40 * DAY)
        sub = self.fake.add_subscription(cus, amount=amount, metered=metered, at=T0 - 40 * DAY)
        self.fake.set_billing(sub, interval=interval, period_start=period_end - 30 * DAY, period_end=period_end)
        return cus, pm, sub


@pytest.fixture
def world(tmp_path, fake_stripe, smtp_server):
    made = []

    def make(**settings) -> World:
        made.append(World(tmp_path, fake_stripe, smtp_server, **settings))
        return made[-1]

    yield make
    for w in made:
        w.ledger.close()


# -- card_expiring ---------------------------------------------------------------------------------------------


def test_one_expiry_email_per_offset_and_never_twice(world):
    w = world()
    cus, pm, sub = w.customer_with_card()           # expires end of 12/2026, next payment 2027-01-15
    w.tick(T0)
    assert w.subjects() == []
    assert w.notices() == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}
    w.tick(utc(2026, 12, 18, 9))                     # 14 days before 2027-01-01
    w.tick(utc(2026, 12, 18, 10))
    assert w.subjects() == ["Your Visa card ending 4242 expires soon: please update it"]
    got = w.smtp.received[0]
    assert got.rcpt_tos == ["ada@example.com"]
    text = got.message.get_body(("plain",)).get_content()
    # the payment at 00:00 UTC on January 15 falls on January 14 in the sender's zone (New York; the customer has
    # none): a notice's dates are where the customer is
    assert "expires at the end of 12/2026" in text and "January 14, 2027" in text
    # the configured portal login link, which works whenever the customer clicks; never a session (issue 21,
    # defect 7: a session URL expires before the customer reads the email)
    assert "https://billing.stripe.com/p/login/" in text and "/p/session/" not in text
    assert not w.fake.store["billing_portal.session"]
    w.tick(utc(2026, 12, 29, 9))
    w.tick(utc(2026, 12, 30, 9))
    assert len(w.subjects()) == 2
    assert w.notices() == {"card_expiring@14d": "done", "card_expiring@3d": "done"}


def test_no_expiry_email_after_the_card_is_updated_or_replaced(world, fake_stripe):
    w = world()
    _, pm, _ = w.customer_with_card(email="updated@example.com")
    cus2, _, _ = w.customer_with_card(email="replaced@example.com")
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))
    assert len(w.subjects()) == 2
    fake_stripe.card_automatically_updated(pm, exp_year=2031, at=utc(2026, 12, 20))
    fake_stripe.replace_default_payment_method(cus2, exp_year=2030, at=utc(2026, 12, 21))
    w.tick(utc(2026, 12, 29, 9))
    assert len(w.subjects()) == 2                     # neither gets the 3-day reminder
    late = w.ledger.db.query("SELECT customer_id, status FROM notices WHERE \"offset\" = '3d'")
    assert sorted(n["status"] for n in late) == ["cancelled", "cancelled"]


def test_a_new_card_attached_and_made_default_takes_over_the_expiry_notices(world, fake_stripe):
    w = world()
    cus, old, _ = w.customer_with_card(period_end=utc(2027, 2, 15))      # old card expires end of 12/2026
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))
    assert len(w.subjects()) == 1                                         # the old card's 14d notice
    # payment_method.attached (the new card, expiring end of 01/2027), then customer.updated (made default)
    new = fake_stripe.replace_default_payment_method(cus, last4="1111", exp_month=1, exp_year=2027,
                                                     at=utc(2026, 12, 20))
    w.tick(utc(2026, 12, 20, 9))
    rows = {(n["object_id"], n["offset"]): n["status"] for n in w.ledger.db.query("SELECT * FROM notices")}
    assert rows == {(old, "14d"): "done", (old, "3d"): "cancelled", (new, "14d"): "pending", (new, "3d"): "pending"}
    w.tick(utc(2026, 12, 29, 9))                                          # no 3d notice for the old card
    assert len(w.subjects()) == 1
    w.tick(utc(2027, 1, 18, 9))                                           # the new card's own 14d notice
    assert w.subjects()[1] == "Your Visa card ending 1111 expires soon: please update it"


def test_no_expiry_email_when_the_subscription_renews_before_the_expiry_or_is_cancelled(world, fake_stripe):
    w = world()
    w.customer_with_card(period_end=utc(2026, 12, 10), email="renews-first@example.com")
    _, _, cancelled = w.customer_with_card(email="cancelled@example.com")
    w.tick(T0)
    assert w.notices() == {"card_expiring@14d": "pending", "card_expiring@3d": "pending"}   # the second one's
    fake_stripe.cancel_now(cancelled, at=T0 + DAY)
    w.tick(T0 + DAY + HOUR)
    for day in (18, 29):
        w.tick(utc(2026, 12, day, 9))
    assert w.subjects() == []
    assert set(w.notices().values()) == {"cancelled"}


# -- upcoming_renewal ----------------------------------------------------------------------------------------------


def test_renewal_reminder_only_for_matching_plans(world):
    w = world(**{"notices.upcoming_renewal.above": {"usd": 50000}})
    w.customer_with_card(exp=(12, 2030), interval="year", period_end=utc(2027, 3, 1), amount=24000,
                         email="yearly@example.com")
    w.customer_with_card(exp=(12, 2030), interval="month", period_end=utc(2027, 3, 1), amount=2000,
                         email="monthly@example.com")
    w.customer_with_card(exp=(12, 2030), interval="month", period_end=utc(2027, 3, 1), amount=90000,
                         email="large-monthly@example.com")
    w.tick(T0)
    w.tick(utc(2027, 2, 22, 9))
    w.tick(utc(2027, 2, 23, 9))
    assert sorted(r.rcpt_tos[0] for r in w.smtp.received) == ["large-monthly@example.com", "yearly@example.com"]
    yearly = next(r for r in w.smtp.received if r.rcpt_tos == ["yearly@example.com"]).message
    # 00:00 UTC on March 1 is still February 28 in the sender's zone (New York), where these customers are dated
    assert yearly["Subject"] == "Your Example subscription renews on February 28, 2027 ($240.00)"
    assert "annual" in yearly.get_body(("plain",)).get_content()


# -- usage -----------------------------------------------------------------------------------------------------------


def usage_world(world, **settings):
    """Alerts on the running amount at 50, 75 and 100% (the shipped rule; the pace rule has its own tests)."""
    return world(**{"notices.usage.expected": {"usd": 10000}, "notices.usage.thresholds": [50, 75, 100],
                    "notices.usage.pace": False, **settings})


def test_usage_thresholds_crossed_one_by_one_each_send_once(world, fake_stripe):
    w = usage_world(world, **{"notices.usage.surge": 1000})   # usage here jumps far beyond its pace: look every 6h
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 11, 30))
    sent = []
    for hours, usage in ((0, 2000), (6, 4000), (12, 6000), (18, 8500), (24, 9000), (30, 9500)):
        fake_stripe.set_usage(sub, usage)           # total = 2000 licensed + usage
        w.tick(T0 + hours * HOUR)
        sent.append(len(w.subjects()))
    assert sent == [0, 1, 2, 3, 3, 3]
    assert [s.split("% of a usual")[0].split(" at ")[1] for s in w.subjects()] == ["50", "75", "100"]
    assert w.notices("usage_alert") == {"usage_alert@50%": "done", "usage_alert@75%": "done",
                                        "usage_alert@100%": "done"}
    body = w.smtp.received[-1].message.get_body(("plain",)).get_content()
    assert "(8,500 units)" in body and "Your next invoice would be $105.00" in body
    assert fake_stripe.count(PREVIEW) == 6           # one preview per subscription per 6h


def test_with_the_pace_rule_usage_alerts_go_only_to_usage_running_ahead(world, fake_stripe):
    w = world(**{"notices.usage.expected": {"usd": 10000}, "notices.usage.pace": True,
                 "notices.usage.thresholds": [150, 200]})
    mid = utc(2026, 11, 17)                                      # half-way through each period below
    subs = {}
    for name in ("usual", "ahead"):
        _, _, subs[name] = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 12, 2),
                                                email=f"{name}@example.com")
    fake_stripe.set_usage(subs["usual"], 4000)                   # $20 fee + $40 so far: on course for $100, usual
    fake_stripe.set_usage(subs["ahead"], 7000)                   # $20 + $70 so far: on course for $160
    w.tick(mid)
    w.tick(mid + HOUR)
    assert [r.rcpt_tos for r in w.smtp.received] == [["ahead@example.com"]]
    got = w.smtp.received[0].message
    assert got["Subject"] == "Your Example usage is running ahead: about $160.00 this period at this pace " \
                             "(160% of usual)"
    text = " ".join(got.get_body(("plain",)).get_content().split())
    assert "$90.00 so far, and about $160.00 by the end of the period at this pace" in text
    assert "160% of what a period usually costs you ($100.00)" in text


def test_a_jump_from_40_to_110_percent_sends_only_the_latest_threshold(world, fake_stripe):
    w = usage_world(world, **{"notices.usage.surge": 1000})   # a jump beyond any pace: look every 6h
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 11, 30))
    fake_stripe.set_usage(sub, 2000)
    w.tick(T0)
    fake_stripe.set_usage(sub, 9000)
    w.tick(T0 + 6 * HOUR)
    w.tick(T0 + 12 * HOUR)
    assert len(w.subjects()) == 1 and "100%" in w.subjects()[0]
    assert w.notices("usage_alert") == {"usage_alert@50%": "skipped", "usage_alert@75%": "skipped",
                                        "usage_alert@100%": "done"}


def test_large_charge_heads_up(world, fake_stripe):
    w = usage_world(world)
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 11, 30))
    fake_stripe.set_usage(sub, 31000)                # $330 against $100 expected
    w.tick(T0)
    subjects = w.subjects()
    assert "Heads-up: your next Example invoice will be about $330.00" in subjects
    assert len(subjects) == 2                        # and the 100% usage alert
    assert w.notices("large_charge") == {"large_charge@x3": "done"}


def test_usage_previews_stay_within_the_budget_with_many_metered_subscriptions(world, fake_stripe):
    w = usage_world(world, **{"notices.usage.max_previews_per_tick": 10})
    for i in range(25):
        w.customer_with_card(exp=(12, 2030), metered=True, period_end=utc(2026, 11, 30), email=f"m{i}@example.com")
    w.tick(T0)
    assert fake_stripe.count(PREVIEW) == 10
    w.tick(T0 + 5 * 60 * 1 * timedelta(seconds=1))
    assert fake_stripe.count(PREVIEW) == 20
    w.tick(T0 + 10 * timedelta(minutes=1))
    w.tick(T0 + 15 * timedelta(minutes=1))
    assert fake_stripe.count(PREVIEW) == 25          # each once; none again before check_every
    fake_stripe.reset_counts()
    w.tick(T0 + 20 * timedelta(minutes=1))
    assert fake_stripe.count() == 1                  # an idle tick: one events request


# -- the guarantees ----------------------------------------------------------------------------------------------


def test_a_crash_between_claim_and_send_leaves_the_notice_unknown_never_resent(world, monkeypatch):
    w = world()
    w.customer_with_card()
    w.tick(T0)
    from dunctl.tick.channels import ChannelSet

    def crash(*args, **kwargs):
        raise SystemExit("killed mid-send")

    monkeypatch.setattr(ChannelSet, "email", crash)
    with pytest.raises(SystemExit):
        w.tick(utc(2026, 12, 18, 9))
    monkeypatch.undo()
    w.ledger.close()
    w.ledger = Ledger.open(w.config.ledger_path)
    w.tick(utc(2026, 12, 18, 10))
    w.tick(utc(2026, 12, 19, 10))
    assert w.subjects() == []
    assert w.notices()["card_expiring@14d"] == "unknown"


def test_a_crash_mid_send_leaves_only_that_notice_unknown_and_the_others_due(world, monkeypatch):
    w = world()
    for n in range(3):
        w.customer_with_card(email=f"c{n}@example.com")
    w.tick(T0)
    from dunctl.tick.channels import ChannelSet

    def crash(*args, **kwargs):
        raise SystemExit("killed mid-send")

    monkeypatch.setattr(ChannelSet, "email", crash)   # the first notice's send is the one in flight
    with pytest.raises(SystemExit):
        w.tick(utc(2026, 12, 18, 9))
    monkeypatch.undo()
    def statuses() -> list[str]:
        return sorted(n["status"] for n in w.ledger.db.query("SELECT status FROM notices WHERE \"offset\" = '14d'"))

    assert statuses() == ["claimed"] * 3                          # claimed together, one started
    w.ledger.close()
    w.ledger = Ledger.open(w.config.ledger_path)
    w.tick(utc(2026, 12, 18, 10))
    w.tick(utc(2026, 12, 19, 10))
    assert statuses() == ["done", "done", "unknown"]
    assert len(w.subjects()) == 2


def test_quiet_hours_hold_a_notice_until_the_window_ends(world):
    w = world(**{"sender.quiet_hours": "21:00-08:00"})
    w.customer_with_card(timezone_="America/New_York")
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))                     # 04:00 in New York
    assert w.subjects() == []
    w.tick(utc(2026, 12, 18, 13, 30))               # 08:30 in New York
    assert len(w.subjects()) == 1


def test_dunning_off_customers_get_no_notices(world, fake_stripe):
    w = world(**{"notices.usage.expected": {"usd": 1000}})
    _, _, sub = w.customer_with_card(metadata={"dunning": "off"}, interval="year", metered=True)
    fake_stripe.set_usage(sub, 50000)
    for moment in (T0, utc(2026, 12, 18, 9), utc(2027, 1, 8, 9)):
        w.tick(moment)
    assert w.subjects() == []
    assert w.notices() == {}


def test_monitor_mode_records_would_and_sends_nothing(world):
    w = world(mode="monitor")
    w.customer_with_card()
    w.tick(T0)
    result = w.tick(utc(2026, 12, 18, 9))
    assert w.subjects() == []
    assert w.notices()["card_expiring@14d"] == "would"
    assert [a.status for a in result.actions if a.step.startswith("notice:")] == ["would"]


def test_monitor_mode_holds_notices_by_the_contact_policy_as_live_would_send_them(world, fake_stripe):
    w = usage_world(world, mode="monitor", contact={"max_per_week": 3, "min_gap": "36h"})
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 11, 30))
    for hours, usage in ((0, 4000), (6, 6000), (12, 8500), (48, 8500)):   # 60%, 80%, 105%, 105%
        fake_stripe.set_usage(sub, usage)
        w.tick(T0 + hours * HOUR)
    # the same plan as live (test_the_contact_policy_counts_notices...): 75% held by the gap, then superseded
    assert w.notices("usage_alert") == {"usage_alert@50%": "would", "usage_alert@75%": "skipped",
                                        "usage_alert@100%": "would"}


def test_would_notices_still_useful_are_sent_once_when_the_config_goes_live(world):
    import yaml

    w = world(mode="monitor")
    w.customer_with_card(email="still-due@example.com")                              # expires end of 12/2026
    w.customer_with_card(exp=(11, 2026), period_end=utc(2026, 12, 10), email="expired@example.com")

    def statuses():
        return {(n["email"].split("@")[0], n["offset"]): n["status"] for n in w.ledger.db.query(
            "SELECT n.*, c.email FROM notices n JOIN customers c ON c.id = n.customer_id")}

    w.tick(T0)
    w.tick(utc(2026, 11, 17, 9))             # the second card's 14d notice (it expires 2026-12-01)
    w.tick(utc(2026, 11, 28, 9))             # ... and its 3d notice
    w.tick(utc(2026, 12, 18, 9))             # the first card's 14d notice
    assert w.subjects() == []
    assert statuses() == {("still-due", "14d"): "would", ("still-due", "3d"): "pending",
                          ("expired", "14d"): "would", ("expired", "3d"): "would"}
    data = yaml.safe_load(w.config.path.read_text())
    data["mode"] = "live"
    w.config.path.write_text(yaml.safe_dump(data, sort_keys=False))
    w.config = load_config(w.config.path)
    result = w.tick(utc(2026, 12, 19, 9))
    # The card not yet expired gets its 14d notice now, once; the expired card's are not sent late.
    assert [r.rcpt_tos for r in w.smtp.received] == [["still-due@example.com"]]
    assert [a.status for a in result.actions if a.step.startswith("notice:")] == ["done"]
    w.tick(utc(2026, 12, 19, 10))
    w.tick(utc(2026, 12, 20, 9))
    assert len(w.smtp.received) == 1
    assert statuses() == {("still-due", "14d"): "done", ("still-due", "3d"): "pending",
                          ("expired", "14d"): "would", ("expired", "3d"): "would"}
    w.tick(utc(2026, 12, 29, 9))             # the 3d notice on its own day, as usual
    assert len(w.smtp.received) == 2


# -- what people see ---------------------------------------------------------------------------------------------


def test_status_lists_notices_due_in_the_next_14_days_and_customer_show_tells_the_story(world):
    import json

    from tests.helpers import cli

    w = world()
    cus, _, _ = w.customer_with_card()
    w.tick(T0)
    w.tick(utc(2026, 12, 18, 9))
    soon = cli(w.config.path, "status", "--json", "--now", "2026-12-17T00:00:00Z")
    assert soon.exit_code == 0, soon.output
    assert [(n["kind"], n["offset"]) for n in json.loads(soon.output)["notices_due"]] == [("card_expiring", "3d")]
    text = cli(w.config.path, "status", "--now", "2026-12-18T10:00:00Z")
    assert "1 notice(s) due in the next 14 days" in text.output and "card_expiring 3d" in text.output
    far = cli(w.config.path, "status", "--json", "--now", "2026-11-02T15:00:00Z")
    assert json.loads(far.output)["notices_due"] == []              # both more than 14 days away
    shown = cli(w.config.path, "customer", "show", cus, "--json")
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert [(n["offset"], n["status"]) for n in data["notices"]] == [("14d", "done"), ("3d", "pending")]
    assert data["timeline"][0]["kind"] == "notice done"
    human = cli(w.config.path, "customer", "show", cus)
    assert "1 notice(s) sent" in human.output and "card_expiring (14d before" in human.output
    missing = cli(w.config.path, "customer", "show", "cus_nobody")
    assert missing.exit_code == 2 and "no customer cus_nobody" in missing.output


def _predunning_history(world, fake_stripe):
    """One of each notice and what followed: a card updated after its notice, a reminded yearly renewal paid at
    once beside two monthly renewals that failed, a usage alert and a large-charge heads-up whose invoice failed."""
    w = world(**{"notices.usage.expected": {"usd": 10000}})
    _, pm, _ = w.customer_with_card(email="updates@example.com")                       # card expiry notice
    yearly_cus, _, yearly = w.customer_with_card(exp=(12, 2030), interval="year", period_end=utc(2026, 11, 20),
                                                 amount=24000, email="yearly@example.com")
    monthly_cus, _, monthly = w.customer_with_card(exp=(12, 2030), interval="month", period_end=utc(2026, 11, 20),
                                                   email="monthly@example.com")
    heavy_cus, _, heavy = w.customer_with_card(exp=(12, 2030), metered=True, period_end=utc(2026, 11, 20),
                                               email="heavy@example.com")
    fake_stripe.set_usage(heavy, 40000)
    w.tick(T0)                                                     # usage alert + large-charge heads-up
    w.tick(utc(2026, 11, 13, 15))                                  # the yearly renewal reminder
    paid = fake_stripe.create_invoice(yearly_cus, subscription=yearly, at=utc(2026, 11, 20, 1))
    fake_stripe.attempt(paid, True, at=utc(2026, 11, 20, 1))
    fake_stripe.fail_invoice(monthly_cus, subscription=monthly, at=utc(2026, 11, 20, 1))
    fake_stripe.fail_invoice(heavy_cus, subscription=heavy, amount=42000, at=utc(2026, 11, 20, 1))
    w.tick(utc(2026, 11, 20, 2))
    w.tick(utc(2026, 12, 18, 9))                                   # the 14-day expiry notice
    w.tick(utc(2026, 12, 18, 10))
    fake_stripe.card_automatically_updated(pm, exp_year=2031, at=utc(2026, 12, 20))
    w.tick(utc(2026, 12, 20, 9))
    return w


NBSP = "\u00a0"
SECTION = {"cards updated before expiry, after a notice": f"1{NBSP}of{NBSP}1 (100%)",
           "renewals paid at first attempt, after a reminder": f"1{NBSP}of{NBSP}1 (100%)",
           "renewals paid at first attempt, no reminder (comparison)": f"0{NBSP}of{NBSP}2 (0%)",
           "of those, invoices that then failed": f"1{NBSP}of{NBSP}1 (100%)"}


def test_report_pre_dunning_section(world, fake_stripe):
    import re

    from tests.helpers import cli

    w = _predunning_history(world, fake_stripe)
    report = cli(w.config.path, "report", "--now", "2026-12-21T00:00:00Z")
    assert report.exit_code == 0, report.output
    text = report.output
    section = text[text.index("Pre-dunning"):]
    lines = dict(cells for line in section.splitlines() if len(cells := re.split(r"\s{2,}", line.strip())) == 2)
    assert lines["notices sent: card_expiring"] == "1" and lines["notices sent: upcoming_renewal"] == "1"
    assert {name: lines[name] for name in SECTION} == SECTION
    assert "a comparison, not a causal claim" in " ".join(section.split())
    assert text.count("Pre-dunning") == 1
    narrow = cli(w.config.path, "report", "--now", "2026-12-21T00:00:00Z", env={"COLUMNS": "60"}).output
    narrow = narrow[narrow.index("Pre-dunning"):]
    assert all(value in narrow for value in SECTION.values())      # a metric's name may be cut, a value never


def test_the_pre_dunning_section_is_in_every_report_format(world, fake_stripe, tmp_path):
    import csv
    import io
    import json

    from tests.helpers import cli

    w = _predunning_history(world, fake_stripe)

    def report(*args):
        got = cli(w.config.path, "report", "--now", "2026-12-21T00:00:00Z", "--since", "2026-11-01", *args)
        assert got.exit_code == 0, got.output
        return got.output

    data = json.loads(report("--format", "json"))["predunning"]
    assert data["sent_by_kind"] == {"card_expiring": 1, "upcoming_renewal": 1, "usage_alert": 1, "large_charge": 1}
    assert (data["expiry_notices"], data["cards_updated_before_expiry"]) == (1, 1)
    assert (data["renewals_reminded"], data["renewals_reminded_paid_first_attempt"]) == (1, 1)
    assert (data["renewals_not_reminded"], data["renewals_not_reminded_paid_first_attempt"]) == (2, 0)
    assert (data["large_charge_heads_ups"], data["large_charge_invoices_failed"]) == (1, 1)
    assert data["since"] == "2026-11-01T00:00:00Z" and data["until"] is None
    assert "not a causal claim" in data["comparison_note"]

    rows = [r for r in csv.DictReader(io.StringIO(report("--format", "csv"))) if r["dimension"] == "predunning"]
    values = {r["key"]: int(r["value"]) for r in rows}
    assert values["sent_card_expiring"] == 1 and values["sent_large_charge"] == 1
    assert values["renewals_not_reminded"] == 2 and values["large_charge_invoices_failed"] == 1
    assert all(r["filter"] == "" and r["currency"] == "" for r in rows)

    md = report("--format", "md")
    section = md[md.index("## Pre-dunning"):]
    for name, value in SECTION.items():
        assert f"| {name} | {value} |" in section.replace("|   of", "| of")
    assert "a comparison, not a causal claim" in section

    page = tmp_path / "report.html"
    report("--format", "html", "-o", str(page))
    html = page.read_text()
    part = html[html.index('id="table-predunning"'):]
    assert "<h2>Pre-dunning: notices before a payment failed</h2>" in part
    assert "renewals paid at first attempt, no reminder (comparison)" in part
    assert f"<td data-label=\"Value\">0{NBSP}of{NBSP}2 (0%)</td>" in part and "a comparison, not a causal claim" in part


def test_an_idle_tick_reads_notices_through_their_indexes(tmp_path):
    ledger = Ledger.open(tmp_path / "l.db")
    plans = [" ".join(str(c) for c in row) for sql, args in (
        ("SELECT * FROM notices INDEXED BY notices_due WHERE next_due_at <= ?", ["2026-12-01T00:00:00Z"]),
        ("SELECT id FROM subscriptions INDEXED BY subscriptions_notices_due WHERE notices_due_at <= ?",
         ["2026-12-01T00:00:00Z"]),
        ("SELECT * FROM notices INDEXED BY notices_claimed WHERE status = 'claimed'", []))
        for row in ledger.db.execute("EXPLAIN QUERY PLAN " + sql, args)]
    assert all("USING INDEX" in plan or "USING COVERING INDEX" in plan for plan in plans), plans
    ledger.close()


def test_a_dry_run_shows_the_notice_and_keeps_nothing(world):
    w = world()
    w.customer_with_card()
    w.tick(T0)
    result = w.tick(utc(2026, 12, 18, 9), dry_run=True)
    assert w.subjects() == []
    notice = [a for a in result.actions if a.step == "notice:card_expiring@14d"]
    assert [(a.status, a.recipient, a.subject) for a in notice] == \
        [("would", "ada@example.com", "Your Visa card ending 4242 expires soon: please update it")]
    assert w.notices()["card_expiring@14d"] == "pending"
    w.tick(utc(2026, 12, 18, 10))
    assert len(w.subjects()) == 1


def test_the_contact_policy_counts_notices_and_a_held_usage_alert_is_superseded(world, fake_stripe):
    w = usage_world(world, contact={"max_per_week": 3, "min_gap": "36h"})
    _, _, sub = w.customer_with_card(exp=(12, 2030), metered=True, amount=2000, period_end=utc(2026, 11, 30))
    for hours, usage in ((0, 4000), (6, 6000), (12, 8500), (48, 8500)):   # 60%, 80%, 105%, 105%
        fake_stripe.set_usage(sub, usage)
        w.tick(T0 + hours * HOUR)
    # 50% goes out at once; 75% is held by the 36h gap and then superseded by 100%, sent once the gap has passed
    assert [s.split(" at ")[1].split("%")[0] for s in w.subjects()] == ["50", "100"]
    assert w.notices("usage_alert") == {"usage_alert@50%": "done", "usage_alert@75%": "skipped",
                                        "usage_alert@100%": "done"}
    customer = w.ledger.db.execute("SELECT customer_id FROM notices LIMIT 1").fetchone()[0]
    sent = [from_iso(n["finished_at"]) for n in w.ledger.notices.of_customer(customer) if n["status"] == "done"]
    assert sent[1] - sent[0] >= 36 * HOUR


def test_the_backfill_follows_trialing_and_past_due_subscriptions_too(world, fake_stripe):
    w = world()
    found = {}
    for status in ("trialing", "past_due", "active", "canceled"):
        cus = fake_stripe.add_customer(f"{status}@example.com", at=T0 - 40 * DAY)
        fake_stripe.add_payment_method(cus, exp_month=12, exp_year=2026, at=T0 - 40 * DAY)
        found[status] = fake_stripe.add_subscription(cus, status=status, at=T0 - 40 * DAY)
    w.tick(T0)
    followed = {row["status"] for row in w.ledger.db.query("SELECT status FROM subscriptions")}
    assert followed == {"trialing", "past_due", "active"}


def test_the_notices_due_together_read_their_customers_recent_messages_in_one_query(world):
    """The contact policy's look at each customer's recent messages is one query for all the notices due in a
    tick, not one per notice; each notice still goes out as the policy allows."""
    w = world(contact={"max_per_week": 3, "min_gap": "36h"})
    for name in ("ada", "bo", "cy"):
        w.customer_with_card(email=f"{name}@example.com")       # each card expires at the end of 12/2026
    w.tick(T0)
    statements = traced(w.ledger, lambda: w.tick(utc(2026, 12, 18, 9)))    # 14 days before: three notices due
    assert sorted(r.rcpt_tos[0] for r in w.smtp.received) == ["ada@example.com", "bo@example.com", "cy@example.com"]
    assert len([s for s in statements if "min(a.finished_at)" in s]) == 1
