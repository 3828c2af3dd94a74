"""The notice planner as tables of subscriptions (pure: no ledger, no clock), and the `notices:` config."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from dunctl.config import load_config
from dunctl.errors import ConfigError
from dunctl.notices.config import NoticesConfig
from dunctl.notices.planner import SKIPPED, plan_notices
from tests.helpers import starter

NOW = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
LINK = "https://billing.stripe.com/p/login/test_abc"   # enabled notices need their static update link
ON = NoticesConfig(enabled=True, update_url=LINK)


def subject(*, status="active", period_end="2027-01-15T00:00:00Z", exp=(12, 2026), interval="month",
            amount=2000, metadata=None, cancel_at_period_end=0, usage_based=0, paid=()):
    return {"subscription": {"id": "sub_1", "customer_id": "cus_1", "status": status, "metadata": "{}",
                             "current_period_end": period_end, "interval": interval, "amount": amount,
                             "currency": "usd", "cancel_at_period_end": cancel_at_period_end,
                             "usage_based": usage_based, "usage_checked_at": None},
            "customer": {"id": "cus_1", "metadata": json.dumps(metadata or {})},
            "payment_method": {"id": "pm_1", "type": "card", "brand": "visa", "last4": "4242",
                               "exp_month": exp[0], "exp_year": exp[1]},
            "paid_amounts": list(paid), "notices": []}


@pytest.mark.parametrize("facts, expected", [
    ({}, [("card_expiring", "14d", "pending"), ("card_expiring", "3d", "pending")]),
    ({"period_end": "2026-12-20T00:00:00Z"}, []),                  # renews before the card expires
    ({"status": "canceled"}, []),
    ({"cancel_at_period_end": 1}, []),                            # no next payment
    ({"metadata": {"dunning": "off"}}, []),
    ({"exp": (11, 2026)}, []),                                     # already expired
    ({"exp": (12, 2030)}, []),                                     # far away
])
def test_card_expiring(facts, expected):
    plans = plan_notices(subject(**facts), ON, NOW).plans
    assert [(p.kind, p.offset, p.status) for p in plans] == expected


def test_card_first_seen_late_sends_only_the_latest_offset():
    late = datetime(2026, 12, 30, tzinfo=timezone.utc)              # both 14d and 3d are due
    plans = plan_notices(subject(), ON, late).plans
    assert [(p.offset, p.status) for p in plans] == [("14d", SKIPPED), ("3d", "pending")]


@pytest.mark.parametrize("interval, amount, above, wanted", [
    ("year", 24000, {}, True), ("month", 2000, {}, False), ("month", 90000, {"usd": 50000}, True),
    ("month", 40000, {"usd": 50000}, False), ("month", 90000, {"eur": 50000}, False),
])
def test_renewal_reminder_matches_yearly_plans_or_large_amounts(interval, amount, above, wanted):
    config = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False}, upcoming_renewal={"above": above})
    plans = plan_notices(subject(interval=interval, amount=amount, exp=(12, 2030)), config, NOW).plans
    assert [p.kind for p in plans] == (["upcoming_renewal"] if wanted else [])


def test_a_renewal_rule_is_matched_once_per_rule_and_facts_and_again_for_other_ones():
    """A subscription is planned again at every usage look with the same facts: the rule's answer is kept per rule
    and facts (issue #25); other facts, or another rule, are matched anew."""
    from dunctl.notices import planner

    config = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False},
                           upcoming_renewal={"when": {"customer.metadata.tier": "enterprise"}})
    vip, plain = subject(metadata={"tier": "enterprise"}, exp=(12, 2030)), subject(exp=(12, 2030))
    assert [p.kind for p in plan_notices(vip, config, NOW).plans] == ["upcoming_renewal"]
    kept = len(planner._KEPT)
    assert [p.kind for p in plan_notices(vip, config, NOW).plans] == ["upcoming_renewal"]
    assert len(planner._KEPT) == kept                           # the same rule and facts: the answer kept
    assert plan_notices(plain, config, NOW).plans == []           # other facts: matched anew
    other = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False},
                          upcoming_renewal={"when": {"customer.metadata.tier": "gold"}})
    assert plan_notices(vip, other, NOW).plans == []              # another rule: matched anew


def test_usage_expected_is_the_mean_of_three_paid_invoices():
    config = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False}, upcoming_renewal={"enabled": False},
                           usage={"thresholds": [50, 75, 100], "pace": False})
    preview = {"amount_due": 7600, "currency": "usd", "period_end": "2027-01-15T00:00:00Z", "lines": []}
    plans = plan_notices(subject(usage_based=1, exp=(12, 2030), paid=(10000, 9000, 11000)), config, NOW,
                         preview).plans
    assert [(p.offset, p.status) for p in plans] == [("50%", SKIPPED), ("75%", "pending")]
    assert plans[1].data["usage"]["expected"] == 10000
    none = plan_notices(subject(usage_based=1, exp=(12, 2030), paid=(10000,)), config, NOW, preview)
    assert none.plans == []                                         # no basis: no alert rather than a wrong one


@pytest.mark.parametrize("notices, where, message", [
    ({"enabled": True, "card_expiring": {"befor": ["14d"]}}, "notices.card_expiring.befor", "unknown key"),
    ({"card_expiring": {"before": ["2 weeks"]}}, "notices.card_expiring.before", "is not an offset"),
    ({"usage": {"thresholds": [0, 50]}}, "notices.usage.thresholds", "percentages"),
    ({"usage": {"expected": {"USD": 100}}}, "notices.usage.expected", "lowercase ISO code"),
    ({"upcoming_renewal": {"when": {"plan": "gold"}}}, "notices.upcoming_renewal.when", "unknown field 'plan'"),
    ({"upcoming_renewal": {"when": {"interval": "yearly"}}}, "notices.upcoming_renewal.when", "not an interval"),
])
def test_bad_notices_config_names_the_key_and_what_is_allowed(tmp_path, notices, where, message):
    path = starter(tmp_path, notices=notices)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    problem = raised.value.problems[0]
    assert problem.path == where and message in problem.message and problem.file == str(path)


def test_the_starter_config_ships_notices_on_and_an_old_config_has_them_off(tmp_path):
    assert load_config(starter(tmp_path / "new")).file.notices.enabled is True
    assert load_config(starter(tmp_path / "old", notices=None)).file.notices.enabled is False


def test_a_missing_notice_template_is_refused_at_load_and_check_renders_them(tmp_path):
    from tests.helpers import cli

    path = starter(tmp_path)
    assert cli(path, "check", env={"STRIPE_API_KEY": "sk_test_" + "x" * 24}).exit_code == 0
    broken = tmp_path / "templates" / "usage-alert.txt.j2"
    broken.write_text("{{ usage.no_such_thing.deeper }}")
    result = cli(path, "check")
    assert result.exit_code == 2 and "usage-alert.txt.j2" in result.output and "usage_alert notice" in result.output
    broken.unlink()
    result = cli(path, "check")
    assert result.exit_code == 2 and "unknown template 'usage-alert'" in result.output


def _notice(id, kind, offset, status, due_at, period="2026-12", **data):
    return {"id": id, "kind": kind, "object_id": "pm_1" if kind == "card_expiring" else "sub_1", "period": period,
            "offset": offset, "status": status, "due_at": due_at, "data": json.dumps(data)}


CARD = {"card": {"expires_at": "2027-01-01T00:00:00Z"}}
USAGE = {"usage": {"period_end": "2026-12-31T00:00:00Z"}}


@pytest.mark.parametrize("notices, reopened", [
    # still useful: the latest `would` of its group, once
    ([_notice(1, "card_expiring", "14d", "would", "2026-11-17T00:00:00Z", **CARD)], [1]),
    ([_notice(1, "card_expiring", "14d", "would", "2026-11-17T00:00:00Z", **CARD),
      _notice(2, "card_expiring", "3d", "would", "2026-11-28T00:00:00Z", **CARD)], [2]),
    # the card has expired, or a later one of the group was sent already
    ([_notice(1, "card_expiring", "3d", "would", "2026-11-28T00:00:00Z",
              card={"expires_at": "2026-12-01T00:00:00Z"})], []),
    ([_notice(1, "card_expiring", "14d", "would", "2026-11-17T00:00:00Z", **CARD),
      _notice(2, "card_expiring", "3d", "done", "2026-11-28T00:00:00Z", **CARD)], []),
    # a renewal not yet renewed; one already renewed
    ([_notice(1, "upcoming_renewal", "7d", "would", "2026-11-25T00:00:00Z", period="2026-12-02T00:00:00Z")], [1]),
    ([_notice(1, "upcoming_renewal", "7d", "would", "2026-11-24T00:00:00Z", period="2026-12-01T00:00:00Z")], []),
    # usage: the highest alert of the period, only while the period runs
    ([_notice(1, "usage_alert", "75%", "would", "2026-11-20T00:00:00Z", period="2026-12-31T00:00:00Z", **USAGE),
      _notice(2, "usage_alert", "100%", "would", "2026-11-25T00:00:00Z", period="2026-12-31T00:00:00Z", **USAGE)],
     [2]),
    ([_notice(1, "usage_alert", "100%", "would", "2026-11-25T00:00:00Z", period="2026-11-30T00:00:00Z",
              usage={"period_end": "2026-11-30T00:00:00Z"})], []),
])
def test_would_notices_reopened_when_the_config_goes_live(notices, reopened):
    from dunctl.notices.planner import reopen_after_monitor

    assert reopen_after_monitor(notices, NOW) == reopened


def _pace_preview(fee: int, metered_so_far: int) -> dict:
    """A monthly period from 2026-11-15 to 2026-12-15: NOW (2026-12-01 12:00) is 55% through it."""
    return {"amount_due": fee + metered_so_far, "currency": "usd", "period_start": "2026-11-15T00:00:00Z",
            "period_end": "2026-12-15T00:00:00Z",
            "lines": [{"amount": fee, "metered": False}, {"amount": metered_so_far, "metered": True}]}


PACE = {"pace": True, "thresholds": [150, 200]}


@pytest.mark.parametrize("metered_so_far, alerts", [
    (3300, []),                                   # usual pace: projects to 4000 + 6000 = 100% of usual
    (5500, []),                                   # projects to 14000: 140%, below the first threshold
    (6600, [("150%", "pending")]),                # projects to 16000: 160%
    (9900, [("150%", SKIPPED), ("200%", "pending")]),   # projects to 22000: 220%, only the highest is sent
    (17600, [("150%", SKIPPED), ("200%", "pending"), ("x3", "pending")]),   # projects to 36000: the heads-up too
])
def test_usage_alerts_go_only_to_usage_running_ahead_of_its_usual_pace(metered_so_far, alerts):
    """The pace rule (`usage.pace: true`, thresholds [150, 200] % of the usual charge): on the charge projected to
    the end of the period. Usual charge: 10000 (a 4000 fee + 6000 of usage)."""
    config = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False}, upcoming_renewal={"enabled": False},
                           usage=PACE)
    decision = plan_notices(subject(usage_based=1, exp=(12, 2030), paid=(10000, 10000, 10000)), config, NOW,
                            _pace_preview(4000, metered_so_far))
    assert [(p.offset, p.status) for p in decision.plans] == alerts
    for plan in decision.plans:
        assert plan.data["usage"]["amount"] == 4000 + metered_so_far            # what was used so far
        assert plan.data["usage"]["projected"] == 4000 + round(metered_so_far / 0.55)


def test_before_a_quarter_of_the_period_only_the_running_amount_counts():
    config = NoticesConfig(enabled=True, update_url=LINK, card_expiring={"enabled": False}, upcoming_renewal={"enabled": False},
                           usage=PACE)
    early = {"amount_due": 6000, "currency": "usd", "period_start": "2026-11-28T00:00:00Z",   # 12% through
             "period_end": "2026-12-28T00:00:00Z",
             "lines": [{"amount": 4000, "metered": False}, {"amount": 2000, "metered": True}]}
    busy_first_days = plan_notices(subject(usage_based=1, exp=(12, 2030), paid=(10000,) * 3), config, NOW, early)
    assert busy_first_days.plans == []            # 2000 in 12% of the period would project to 207%: not yet
    early["amount_due"], early["lines"][1]["amount"] = 21000, 17000
    already = plan_notices(subject(usage_based=1, exp=(12, 2030), paid=(10000,) * 3), config, NOW, early)
    assert [(p.offset, p.status) for p in already.plans] == [("150%", SKIPPED), ("200%", "pending")]   # reached
    shipped = NoticesConfig(enabled=True, update_url=LINK).usage
    assert (shipped.pace, shipped.thresholds) == (False, [50, 75, 100])     # the guide's rule by default
