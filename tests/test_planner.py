"""The planner is a pure function: tables of (case, steps, records, now) -> decisions."""

from datetime import datetime, timedelta, timezone

import pytest

from dunctl.config import Sequence
from dunctl.planner import MISSED, RUN, SKIP, CaseSnapshot, Settings, StepRecord, after_quiet_hours, plan

T0 = datetime(2026, 11, 2, 14, 0, tzinfo=timezone.utc)  # Monday


def seq(*steps, max_attempts=5):
    return Sequence.model_validate({"name": "t", "max_attempts": max_attempts, "steps": [
        {"id": s[0], "at": s[1], "action": s[2], **({"template": "x"} if s[2] in ("email", "sms") else {}),
         **(s[3] if len(s) > 3 else {})} for s in steps]})


def case(failure_type="card_soft", attempts=1, facts=None, **kw):
    base = {"amount_due": 4900, "currency": "usd", "failure_type": failure_type, "attempt_count": attempts,
            "customer.metadata": {}, "invoice.metadata": {}, "subscription.metadata": {}}
    return CaseSnapshot(first_failed_at=T0, failure_type=failure_type, attempts=attempts,
                        facts={**base, **(facts or {})}, last_failed_at=T0, **kw)


def verdicts(result):
    return [(d.step.id, d.verdict) for d in result.decisions]


STANDARD = seq(("notice", "30m", "email"), ("retry-1", "2d", "retry"), ("reminder", "3d", "email"),
               ("escalate", "15d", "escalate"))

OFFSETS = [
    # (now, expected decisions, expected next step)
    (T0, [], "notice"),
    (T0 + timedelta(minutes=29), [], "notice"),
    (T0 + timedelta(minutes=30), [("notice", RUN)], "retry-1"),
    # the catch-up policy: of the customer messages due, the latest runs; the latest retry runs if the budget
    # allows; an internal escalation runs late rather than never
    (T0 + timedelta(days=2), [("notice", RUN), ("retry-1", RUN)], "reminder"),
    (T0 + timedelta(days=3, hours=1), [("notice", MISSED), ("retry-1", RUN), ("reminder", RUN)], "escalate"),
    (T0 + timedelta(days=40), [("notice", MISSED), ("retry-1", RUN), ("reminder", RUN), ("escalate", RUN)], None),
]


@pytest.mark.parametrize("now, expected, next_step", OFFSETS)
def test_steps_fall_due_at_their_offset_and_overdue_ones_follow_the_catch_up_policy(now, expected, next_step):
    result = plan(case(), STANDARD, {}, Settings(grace=timedelta(days=1)), now)
    assert verdicts(result) == expected
    assert result.next_step == next_step


RECORDS = [
    # records of earlier ticks, now, expected
    ({"notice": StepRecord("done")}, T0 + timedelta(hours=1), []),
    ({"notice": StepRecord("unknown")}, T0 + timedelta(hours=1), []),
    ({"notice": StepRecord("claimed")}, T0 + timedelta(hours=1), []),
    ({"notice": StepRecord("failed", 1, T0 + timedelta(minutes=30))}, T0 + timedelta(minutes=45), []),
    ({"notice": StepRecord("failed", 1, T0 + timedelta(minutes=30))}, T0 + timedelta(hours=1), [("notice", RUN)]),
    # a failing channel keeps being retried past the grace period, until the tries run out
    ({"notice": StepRecord("failed", 2, T0 + timedelta(days=1, hours=12))}, T0 + timedelta(days=1, hours=13),
     [("notice", RUN)]),
    ({"notice": StepRecord("failed", 5, T0 + timedelta(minutes=30))}, T0 + timedelta(hours=2), []),
]


@pytest.mark.parametrize("records, now, expected", RECORDS)
def test_a_step_runs_once_and_failed_ones_retry_until_the_limit(records, now, expected):
    settings = Settings(max_action_tries=5, action_retry_after=timedelta(minutes=30))
    assert verdicts(plan(case(), STANDARD, records, settings, now)) == expected


RETRIES = seq(("retry-1", "1d", "retry"), ("retry-2", "3d", "retry"), max_attempts=3)
AFTER_RETRY_1 = {"retry-1": StepRecord("done")}

SKIPS = [
    # failure type, attempts, extra case fields, records, now, expected verdict for the step due now
    ("card_soft", 1, {}, {}, "1d", [("retry-1", RUN)]),
    ("unknown", 1, {}, {}, "1d", [("retry-1", RUN)]),
    ("bank_soft", 1, {}, {}, "1d", [("retry-1", RUN)]),
    ("card_hard", 1, {}, {}, "1d", [("retry-1", SKIP)]),
    ("bank_hard", 1, {}, {}, "1d", [("retry-1", SKIP)]),
    ("action_required", 1, {}, {}, "1d", [("retry-1", SKIP)]),
    ("dispute", 1, {}, {}, "1d", [("retry-1", SKIP)]),
    ("card_update", 1, {}, {}, "1d", [("retry-1", SKIP)]),
    ("card_update", 1, {"payment_method_changed_at": T0 + timedelta(hours=3)}, {}, "1d", [("retry-1", RUN)]),
    ("card_update", 1, {"payment_method_changed_at": T0 - timedelta(hours=3)}, {}, "1d", [("retry-1", SKIP)]),
    # the cap counts every attempt, Stripe's own included
    ("card_soft", 2, {}, AFTER_RETRY_1, "3d", [("retry-2", RUN)]),
    ("card_soft", 3, {}, AFTER_RETRY_1, "3d", [("retry-2", SKIP)]),
    ("card_soft", 4, {}, {}, "1d", [("retry-1", SKIP)]),
]


@pytest.mark.parametrize("failure_type, attempts, extra, records, now, expected", SKIPS)
def test_hard_declines_are_never_retried_and_the_attempt_cap_holds(failure_type, attempts, extra, records, now,
                                                                    expected):
    from dunctl.offsets import parse_offset

    result = plan(case(failure_type, attempts, **extra), RETRIES, records, Settings(),
                  parse_offset(now).after(T0))
    assert verdicts(result) == expected


WHEN = [
    ({"failure_type": "card_soft"}, {}, RUN),
    ({"failure_type": ["card_hard", "card_update"]}, {}, SKIP),
    ({"amount_due": {"gte": {"usd": 4900}}}, {}, RUN),
    ({"amount_due": {"gt": {"usd": 4900}}}, {}, SKIP),
    ({"amount_due": {"gte": {"eur": 100}}}, {}, SKIP),   # a threshold in another currency never matches
    ({"customer.metadata.tier": "enterprise"}, {"customer.metadata": {"tier": "enterprise"}}, RUN),
    ({"customer.metadata.tier": "enterprise"}, {}, SKIP),
    ({"attempt_count": {"lt": 3}}, {}, RUN),
    ({"usage_based": True}, {"usage_based": False}, SKIP),
    ({"usage_based": True}, {"usage_based": True}, RUN),
]


@pytest.mark.parametrize("when, facts, expected", WHEN)
def test_when_conditions_gate_a_step(when, facts, expected):
    sequence = seq(("nudge", "1h", "email", {"when": when}))
    result = plan(case(facts=facts), sequence, {}, Settings(), T0 + timedelta(hours=1))
    assert verdicts(result) == [("nudge", expected)]


def test_customer_facing_steps_skip_when_dunning_is_off_but_escalation_still_runs():
    sequence = seq(("notice", "1h", "email"), ("sms", "1h", "sms"), ("escalate", "1h", "escalate"))
    result = plan(case(dunning_off=True), sequence, {}, Settings(), T0 + timedelta(hours=1))
    assert verdicts(result) == [("notice", SKIP), ("sms", SKIP), ("escalate", RUN)]


def test_two_messages_due_at_once_send_only_the_latest():
    sequence = seq(("notice", "1h", "email"), ("reminder", "2h", "email"), ("retry", "2h", "retry"))
    result = plan(case(), sequence, {}, Settings(), T0 + timedelta(hours=3))
    assert verdicts(result) == [("notice", MISSED), ("reminder", RUN), ("retry", RUN)]
    assert "superseded" in result.decisions[0].reason


def test_a_step_for_an_unconfigured_channel_is_skipped_with_the_reason():
    sequence = seq(("sms", "1h", "sms"), ("escalate", "1h", "escalate"))
    settings = Settings(channels=frozenset({"email"}), escalation_channel="slack")
    result = plan(case(), sequence, {}, settings, T0 + timedelta(hours=1))
    assert verdicts(result) == [("sms", SKIP), ("escalate", SKIP)]
    assert result.decisions[0].reason == "the sms channel is not configured"


QUIET = [
    # due (UTC), expected send time (UTC); sender in New York, quiet 21:00-08:00 local
    (datetime(2026, 11, 2, 14, 0, tzinfo=timezone.utc), datetime(2026, 11, 2, 14, 0, tzinfo=timezone.utc)),
    (datetime(2026, 11, 3, 3, 0, tzinfo=timezone.utc), datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc)),
    (datetime(2026, 11, 3, 2, 0, tzinfo=timezone.utc), datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc)),
    (datetime(2026, 11, 3, 12, 59, tzinfo=timezone.utc), datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc)),
    (datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc), datetime(2026, 11, 3, 13, 0, tzinfo=timezone.utc)),
]


@pytest.mark.parametrize("due, expected", QUIET)
def test_customer_facing_steps_wait_out_quiet_hours(due, expected):
    settings = Settings(quiet_hours=(21 * 60, 8 * 60), timezone="America/New_York")
    assert after_quiet_hours(due, settings, None) == expected


def test_quiet_hours_use_the_customers_own_time_zone_when_known():
    settings = Settings(quiet_hours=(21 * 60, 8 * 60), timezone="America/New_York")
    due = datetime(2026, 11, 3, 3, 0, tzinfo=timezone.utc)  # 22:00 in New York, 12:00 in Tokyo
    assert after_quiet_hours(due, settings, "Asia/Tokyo") == due


def test_business_day_offsets_skip_weekends():
    friday = datetime(2026, 11, 6, 15, 0, tzinfo=timezone.utc)
    sequence = seq(("represent", "3bd", "retry"))
    snapshot = CaseSnapshot(first_failed_at=friday, failure_type="bank_soft", attempts=1, facts={})
    result = plan(snapshot, sequence, {}, Settings(), friday)
    assert result.next_due_at == datetime(2026, 11, 11, 15, 0, tzinfo=timezone.utc)  # Wednesday


def test_two_retries_due_at_once_run_only_the_latest():
    sequence = seq(("retry-1", "1d", "retry"), ("retry-2", "2d", "retry"))
    result = plan(case(), sequence, {}, Settings(grace=timedelta(days=3)), T0 + timedelta(days=2, hours=1))
    assert verdicts(result) == [("retry-1", MISSED), ("retry-2", RUN)]


# -- audiences and the catch-up policy -------------------------------------------------------------------------

NY_QUIET = Settings(quiet_hours=(21 * 60, 8 * 60), timezone="America/New_York")
AFTERNOON_THEN_NIGHT = [
    # a step due at 14:00 New York time, the tick at 02:00 New York time: customer messages wait for 08:00,
    # internal ones and Stripe actions do not
    (("notice", "0m", "email"), "wait"),
    (("sms", "0m", "sms"), "wait"),
    (("account-manager", "0m", "email", {"to": "account_manager"}), RUN),
    (("escalate", "0m", "escalate"), RUN),
    (("slack", "0m", "slack"), RUN),
    (("retry", "0m", "retry"), RUN),
]


@pytest.mark.parametrize("step, expected", AFTERNOON_THEN_NIGHT)
def test_quiet_hours_hold_customer_messages_at_send_time_whenever_the_tick_runs(step, expected):
    due = datetime(2026, 11, 24, 19, 0, tzinfo=timezone.utc)      # 14:00 in New York
    night = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)     # 02:00 in New York
    snapshot = CaseSnapshot(first_failed_at=due, failure_type="card_soft", attempts=1,
                            facts={"failure_type": "card_soft", "customer.metadata": {}})
    result = plan(snapshot, seq(step), {}, NY_QUIET, night)
    if expected == "wait":
        assert verdicts(result) == []
        assert result.waiting[0].reason == "quiet hours in the customer's time zone"
        assert result.next_due_at == datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)   # 08:00 in New York
    else:
        assert verdicts(result) == [(step[0], expected)]


def test_a_failed_delivery_retried_at_night_waits_for_the_morning_too():
    night = datetime(2026, 11, 25, 7, 0, tzinfo=timezone.utc)
    snapshot = CaseSnapshot(first_failed_at=night - timedelta(hours=12), failure_type="card_soft", attempts=1,
                            facts={"customer.metadata": {}})
    records = {"notice": StepRecord("failed", 1, night - timedelta(hours=1))}
    result = plan(snapshot, seq(("notice", "0m", "email")), records, NY_QUIET, night)
    assert verdicts(result) == [] and result.next_due_at == datetime(2026, 11, 25, 13, 0, tzinfo=timezone.utc)


AUDIENCES = [
    # steps due at the same moment (and for how long), customer dunning=off, expected verdicts
    ([("notice", "0m", "email"), ("account-manager", "0m", "email", {"to": "account_manager"})], "1h", False,
     [("notice", RUN), ("account-manager", RUN)]),
    # a customer notice never supersedes the account manager's email, even at the same time
    ([("account-manager", "0m", "email", {"to": "account_manager"}), ("notice", "0m", "email")], "1h", False,
     [("account-manager", RUN), ("notice", RUN)]),
    # dunning=off silences the customer only
    ([("notice", "0m", "email"), ("account-manager", "0m", "email", {"to": "account_manager"}),
      ("escalate", "0m", "escalate")], "1h", True, [("notice", SKIP), ("account-manager", RUN), ("escalate", RUN)]),
    # an escalation first seen 24.2 h late (beyond the 1 d grace) runs late rather than never
    ([("escalate", "0m", "escalate")], "24h12m", False, [("escalate", RUN)]),
    # two internal notifications long overdue: the latest runs, the earlier is missed
    ([("escalate", "0m", "escalate"), ("still-unpaid", "7d", "escalate")], "10d", False,
     [("escalate", MISSED), ("still-unpaid", RUN)]),
    # within the grace period both run
    ([("escalate", "0m", "escalate"), ("account-manager", "1h", "email", {"to": "account_manager"})], "2h", False,
     [("escalate", RUN), ("account-manager", RUN)]),
]


@pytest.mark.parametrize("steps, elapsed, dunning_off, expected", AUDIENCES)
def test_customer_rules_apply_to_customer_messages_only(steps, elapsed, dunning_off, expected):
    from dunctl.offsets import parse_offset

    result = plan(case(dunning_off=dunning_off), seq(*steps), {}, Settings(grace=timedelta(days=1)),
                  parse_offset(elapsed).after(T0))
    assert verdicts(result) == expected


SUSPEND = seq(("notice", "30m", "email"), ("final", "12d", "email"), ("suspend", "21d", "pause_subscription"),
              ("suspended", "21d", "email"), ("cancel", "30d", "cancel_subscription"))
TOLD = {"notice": StepRecord("done", 1, T0 + timedelta(minutes=30))}

SUSPENSIONS = [
    # records, now, expected verdicts, expected next step (and why it waits)
    # a backlog adopted on day 25: the customer was never told, so the latest message goes out and the
    # suspension waits 3 days after it (until day 28); the message telling of the suspension waits for it, and is
    # not looked at again before it (only the suspension being recorded ends that wait: issue #25)
    ({}, "25d", [("notice", MISSED), ("final", RUN)], "suspend"),
    # told on day 25 (final notice), now the end of day 28 (the deadline it named: T0 is 14:00 UTC): suspend
    # runs, the announcement still waits for it to happen (the tick plans the case again after its effects)
    ({"notice": StepRecord("missed"), "final": StepRecord("done", 1, T0 + timedelta(days=25))}, "28d10h",
     [("suspend", RUN)], "cancel"),
    # the normal course: told on day 0, suspension at the end of day 21, then its announcement
    (TOLD | {"final": StepRecord("done", 1, T0 + timedelta(days=12))}, "21d10h", [("suspend", RUN)], "cancel"),
    (TOLD | {"final": StepRecord("done"), "suspend": StepRecord("done", 1, T0 + timedelta(days=21))}, "21d1h",
     [("suspended", RUN)], "cancel"),
    # a suspension that did not happen is never announced
    (TOLD | {"final": StepRecord("done"), "suspend": StepRecord("skipped")}, "21d1h", [("suspended", SKIP)],
     "cancel"),
]


@pytest.mark.parametrize("records, now, expected, next_step", SUSPENSIONS)
def test_suspension_needs_notice_and_is_announced_only_once_it_happened(records, now, expected, next_step):
    from dunctl.offsets import parse_offset

    result = plan(case(), SUSPEND, records, Settings(grace=timedelta(days=1)), parse_offset(now).after(T0))
    assert verdicts(result) == expected
    assert result.next_step == next_step


def test_a_step_held_only_by_the_cases_own_steps_is_not_polled():
    """The close step waits for the suspension and the message telling of it; that message waits for the
    suspension, which waits for its notice (until the end of day 28). Neither wait can end before a step of the
    case is recorded, so the case is next due for the suspension, not every `action_retry_after` (issue #25)."""
    from dunctl.offsets import parse_offset

    sequence = seq(("notice", "30m", "email"), ("final", "12d", "email"), ("suspend", "21d", "pause_subscription"),
                   ("suspended", "21d", "email"), ("close", "22d", "close"))
    now = parse_offset("25d").after(T0)
    result = plan(case(), sequence, {"notice": StepRecord("missed"), "final": StepRecord("done", 1, now)},
                  Settings(grace=timedelta(days=1)), now)
    assert {w.step.id for w in result.waiting} == {"suspend", "suspended", "close"}
    assert result.next_step == "suspend" and result.next_due_at > now + timedelta(days=2)


def test_a_customer_who_can_never_be_told_is_never_suspended():
    sequence = seq(("notice", "30m", "email"), ("suspend", "21d", "pause_subscription"))
    result = plan(case(dunning_off=True), sequence, {"notice": StepRecord("skipped")}, Settings(),
                  T0 + timedelta(days=21))
    assert verdicts(result) == [("suspend", SKIP)]
    assert "cannot be told" in result.decisions[0].reason
    told_nothing = plan(case(), sequence, {"notice": StepRecord("skipped")}, Settings(), T0 + timedelta(days=21))
    assert verdicts(told_nothing) == [("suspend", SKIP)]
    assert "never sent the message announcing it ('notice')" in told_nothing.decisions[0].reason


def test_a_backlog_suspension_waits_three_days_after_the_message_sent_now():
    result = plan(case(), SUSPEND, {}, Settings(grace=timedelta(days=1)), T0 + timedelta(days=25))
    assert [(w.step.id, w.until) for w in result.waiting if w.step.id == "suspend"] == \
        [("suspend", T0 + timedelta(days=28, hours=10))]   # the end of day 28 (UTC: no zone is set)


def test_the_suspension_waits_until_the_notice_period_has_passed():
    sequence = seq(("notice", "30m", "email"), ("suspend", "1d", "pause_subscription"))
    records = {"notice": StepRecord("done", 1, T0 + timedelta(hours=20))}
    result = plan(case(), sequence, records, Settings(), T0 + timedelta(days=1))
    assert verdicts(result) == []
    # 3 days after the notice (6 Nov 10:00 UTC), then to the end of that day
    assert result.next_due_at == datetime(2026, 11, 7, 0, 0, tzinfo=timezone.utc)


def test_retries_wait_while_stripes_own_retries_are_still_on():
    sequence = seq(("retry-1", "1d", "retry"))
    result = plan(case(retries_blocked="Stripe's own retries are not turned off on this invoice yet"), sequence,
                  {}, Settings(), T0 + timedelta(days=1))
    assert verdicts(result) == [] and "Stripe's own retries" in result.waiting[0].reason


def test_monitor_mode_would_records_are_finished_only_while_monitoring():
    sequence = seq(("notice", "30m", "email"), ("reminder", "3d", "email"))
    records = {"notice": StepRecord("would", 1, T0 + timedelta(minutes=30))}
    monitoring = plan(case(), sequence, records, Settings(monitor=True), T0 + timedelta(hours=2))
    assert verdicts(monitoring) == []
    live = plan(case(), sequence, records, Settings(), T0 + timedelta(days=3, hours=1))
    assert verdicts(live) == [("notice", MISSED), ("reminder", RUN)]   # switched live: no burst
