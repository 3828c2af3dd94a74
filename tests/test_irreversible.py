"""The one rule for irreversible steps (dunctl/irreversible.py), as tables: every irreversible action against
every history that decides it, on the pure function and through the planner; and the `announces:` key checked
when the config loads."""

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import yaml

from dunctl.config import Sequence
from dunctl.irreversible import IRREVERSIBLE, earned, message_truth
from dunctl.planner import MISSED, RUN, SKIP, Decision, Settings, StepRecord, Wait, plan
from tests.helpers import cli, starter
from tests.test_planner import T0, case

NOTICE = timedelta(days=3)


def sequence(action: str, **final) -> Sequence:
    return Sequence.model_validate({"name": "t", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "x"},
        {"id": "final", "at": "12d", "action": "email", "template": "x", "announces": "act", **final},
        {"id": "act", "at": "21d", "action": action},
        {"id": "after", "at": "21d", "action": "email", "template": "x"},
    ]})


def day(n: float):
    return T0 + timedelta(days=n)


def end_of(n: float, zone: str = "UTC"):
    """The end of the local day that day(n) falls on: when a consequence named for that day may run."""
    tz = ZoneInfo(zone)
    return datetime.combine(day(n).astimezone(tz).date() + timedelta(days=1), time(0), tzinfo=tz)


DELIVERED = {"notice": StepRecord("done", 1, T0 + timedelta(minutes=30))}

# history -> (records, case facts, now, settings, expected verdict)
#   "run": earned now; "wait until D": held until day D (None: until something else happens); "skip": never.
HISTORIES = {
    # monitor ticks on days 1, 11 and 31 recorded every message as `would`; the first live tick on day 31
    # sends the final notice (a `would` is not a delivery), and the step waits 3 days after it
    "monitor history only": ({"notice": StepRecord("would", 1, day(1)), "final": StepRecord("would", 1, day(31))},
                             {}, day(31), Settings(), "wait until 34"),
    # one real day-0 email, then cron down for a month: the final notice was never sent
    "outage gap": (DELIVERED, {}, day(30), Settings(), "wait until 33"),
    # the announcement can no longer be sent (missed in an earlier catch-up): never
    "never told": (DELIVERED | {"final": StepRecord("missed", 0, day(12))}, {}, day(21), Settings(), "skip"),
    "told too late": (DELIVERED | {"final": StepRecord("done", 1, day(20))}, {}, day(21), Settings(),
                      "wait until 23"),
    "told and waited": (DELIVERED | {"final": StepRecord("done", 1, day(12))}, {}, day(21.5), Settings(), "run"),
    "paid meanwhile": (DELIVERED | {"final": StepRecord("done", 1, day(12))}, {"invoice_status": "paid"}, day(21),
                       Settings(), "skip"),
    "disputed meanwhile": (DELIVERED | {"final": StepRecord("done", 1, day(12))}, {"failure_type": "dispute"},
                           day(21), Settings(), "wait until None"),
    # and a few more holds: a person paused the case; the customer cannot be told; a delivery in doubt
    "paused by a person": (DELIVERED | {"final": StepRecord("done", 1, day(12))}, {"case_state": "paused"},
                           day(21), Settings(), "wait until None"),
    "dunning off": (DELIVERED | {"final": StepRecord("done", 1, day(12))}, {"dunning_off": True}, day(21),
                    Settings(), "skip"),
    "announcement unknown": (DELIVERED | {"final": StepRecord("unknown", 1, day(12))}, {}, day(21), Settings(),
                             "wait until 24"),
    "announcement failed for good": (DELIVERED | {"final": StepRecord("failed", 5, day(12))}, {}, day(21),
                                     Settings(), "skip"),
    # monitor mode rehearses the rule: there a `would` counts, to show when dunctl would act
    "rehearsed in monitor mode": (DELIVERED | {"final": StepRecord("would", 1, day(12))}, {}, day(21.5),
                                  Settings(monitor=True), "run"),
}


def shown(verdict) -> str:
    if verdict is None:
        return "run"
    if isinstance(verdict, Decision):
        assert verdict.verdict == SKIP
        return "skip"
    assert isinstance(verdict, Wait)
    return f"wait until {None if verdict.until is None else round((verdict.until - T0) / timedelta(days=1))}"


@pytest.mark.parametrize("action", sorted(IRREVERSIBLE))
@pytest.mark.parametrize("history", HISTORIES)
def test_an_irreversible_step_runs_only_when_earned(action, history):
    records, facts, now, settings, expected = HISTORIES[history]
    seq = sequence(action)
    verdict = earned(seq.steps[2], case(**facts), seq, records, settings, now)
    assert shown(verdict) == expected, getattr(verdict, "reason", None)


THROUGH_THE_PLANNER = {
    # the latest message that is still true goes out (the one placed after the step is not true yet); the step
    # waits 3 days after it
    "monitor history only": ([("notice", MISSED), ("final", RUN)], end_of(34)),
    "outage gap": ([("final", RUN)], end_of(33)),
    "never told": ([("act", SKIP)], None),
    "told too late": ([], end_of(23)),
    "told and waited": ([("act", RUN)], None),
}


@pytest.mark.parametrize("action", sorted(IRREVERSIBLE))
@pytest.mark.parametrize("history", THROUGH_THE_PLANNER)
def test_the_planner_asks_the_same_rule(action, history):
    records, facts, now, settings, _ = HISTORIES[history]
    expected, act_waits_until = THROUGH_THE_PLANNER[history]
    result = plan(case(**facts), sequence(action), records, settings, now)
    assert [(d.step.id, d.verdict) for d in result.decisions] == expected
    assert [w.until for w in result.waiting if w.step.id == "act"] == ([act_waits_until] if act_waits_until else [])
    assert all(d.step.id != "after" for d in result.decisions)   # never "we paused you" before the pause


def test_a_message_announcing_a_step_that_will_not_happen_is_skipped():
    seq = Sequence.model_validate({"name": "t", "steps": [
        {"id": "final", "at": "12d", "action": "email", "template": "x", "announces": "act"},
        {"id": "act", "at": "21d", "action": "pause_subscription", "when": {"failure_type": "card_hard"}},
    ]})
    result = plan(case(), seq, {}, Settings(), day(12))
    assert [(d.step.id, d.verdict) for d in result.decisions] == [("final", SKIP)]
    assert "announces 'act', which will not happen: its when: condition does not hold" in result.decisions[0].reason


@pytest.mark.parametrize("status", ["done", "skipped", "missed"])
def test_an_announcement_after_its_step_happened_or_was_dropped_is_skipped(status):
    seq = sequence("cancel_subscription")
    verdict = message_truth(seq.steps[1], case(), seq, {"act": StepRecord(status, 1, day(10))}, Settings())
    assert isinstance(verdict, Decision) and verdict.verdict == SKIP


def test_without_announces_the_nearest_customer_message_before_the_step_announces_it():
    seq = Sequence.model_validate({"name": "t", "steps": [
        {"id": "notice", "at": "30m", "action": "email", "template": "x"},
        {"id": "final", "at": "12d", "action": "email", "template": "x"},
        {"id": "act", "at": "21d", "action": "cancel_subscription"},
    ]})
    only_notice = {"notice": StepRecord("done", 1, T0)}
    assert shown(earned(seq.steps[2], case(), seq, only_notice, Settings(), day(21))) == "wait until 24"
    missed = only_notice | {"final": StepRecord("missed", 0, day(12))}
    assert shown(earned(seq.steps[2], case(), seq, missed, Settings(), day(21))) == "skip"
    told = only_notice | {"final": StepRecord("done", 1, day(12))}
    assert shown(earned(seq.steps[2], case(), seq, told, Settings(), end_of(21))) == "run"


BAD_ANNOUNCES = {
    "unknown step": (0, "susp", "unknown step 'susp'; steps of this sequence: notice"),
    "not later": (3, "retry-1", "'retry-1' is not a later step"),
    "not irreversible": (0, "escalate", "'escalate' (escalate) is not an irreversible step"),
    "not a customer message": (8, "suspend", "only a customer message"),
}


@pytest.mark.parametrize("name", BAD_ANNOUNCES)
def test_check_refuses_a_bad_announces_with_its_key_path(tmp_path, name):
    index, target, message = BAD_ANNOUNCES[name]
    config = starter(tmp_path)
    path = tmp_path / "sequences" / "standard.yaml"
    data = yaml.safe_load(path.read_text())
    data["steps"][index]["announces"] = target
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    checked = cli(config, "check")
    assert checked.exit_code == 2
    assert f"steps[{index}].announces" in checked.stderr and message in checked.stderr, checked.stderr


def test_a_would_recorded_while_monitoring_does_not_use_up_a_contact_cap_once_live():
    from dunctl.planner import ContactPolicy

    seq = Sequence.model_validate({"name": "t", "steps": [
        {"id": "sms-1", "at": "1d", "action": "sms", "template": "x"},
        {"id": "sms-2", "at": "8d", "action": "sms", "template": "x"}]})
    records = {"sms-1": StepRecord("would", 1, day(1))}
    policy = ContactPolicy(max_per_case=(("sms", 1),))
    live = plan(case(), seq, records, Settings(contact=policy), day(8))
    assert [(d.step.id, d.verdict) for d in live.decisions] == [("sms-1", MISSED), ("sms-2", RUN)]
    monitoring = plan(case(), seq, records, Settings(contact=policy, monitor=True), day(8))
    assert [(d.step.id, d.verdict) for d in monitoring.decisions] == [("sms-2", SKIP)]


def test_what_a_message_says_of_the_next_step_is_when_it_will_run():
    from dunctl.irreversible import as_it_will_run

    seq = sequence("pause_subscription")

    def timed(records, now):
        return {s.id: s.at.after(T0) for s in as_it_will_run(seq, T0, records, Settings(), now).steps
                if s.id == "act"}

    on_time = DELIVERED | {"final": StepRecord("done", 1, day(12))}
    # told in time: as the sequence says, at the end of that day; after a gap: 3 days after the message
    assert timed(on_time, day(12)) == {"act": end_of(21)}
    assert timed(DELIVERED, day(30)) == {"act": end_of(33)}
    assert timed(on_time | {"act": StepRecord("done", 1, day(21))}, day(22)) == {}   # already happened


# The deadline a message names is the end of a day in the customer's zone (else the sender's), and the step waits
# for it. The pause is due at 21d after a first failure on 2 Nov 14:00 UTC, i.e. 23 Nov 14:00 UTC.
# zone -> (the day the final notice names, the earliest moment the pause runs, in UTC)
DEADLINES = {
    # 23 Nov 23:00 in Tokyo: the deadline is the 23rd there, which ends at 15:00 UTC
    "Asia/Tokyo": ("2026-11-23", datetime(2026, 11, 23, 15, 0, tzinfo=ZoneInfo("UTC"))),
    # 15:00 CET on the 23rd: the pause used to run at midday of the day the customer was told "bis zum 23."
    "Europe/Berlin": ("2026-11-23", datetime(2026, 11, 23, 23, 0, tzinfo=ZoneInfo("UTC"))),
    "America/New_York": ("2026-11-23", datetime(2026, 11, 24, 5, 0, tzinfo=ZoneInfo("UTC"))),
    # 00:30 on the 24th in Kiribati (UTC+14): the 24th is the day named
    "Pacific/Kiritimati": ("2026-11-24", datetime(2026, 11, 24, 10, 0, tzinfo=ZoneInfo("UTC"))),
}


@pytest.mark.parametrize("zone", DEADLINES)
@pytest.mark.parametrize("whose", ["customer", "sender"])
def test_a_consequence_waits_until_the_day_the_message_names_has_ended_in_the_customers_zone(zone, whose):
    from dunctl.irreversible import as_it_will_run, deadline_day

    named, runs_at = DEADLINES[zone]
    seq = sequence("pause_subscription")
    told = DELIVERED | {"final": StepRecord("done", 1, day(12))}
    # the customer's zone wins over the sender's; without it, the sender's
    snapshot = case(timezone=zone) if whose == "customer" else case()
    settings = Settings(timezone=zone if whose == "sender" else "Europe/London")
    timed = next(s for s in as_it_will_run(seq, T0, told, settings, day(12), snapshot.timezone).steps
                 if s.id == "act").at.after(T0)
    assert str(deadline_day(timed, zone)) == named                       # what the final notice says
    assert timed == runs_at                                              # and when the pause runs
    act = seq.steps[2]
    assert isinstance(earned(act, snapshot, seq, told, settings, runs_at - timedelta(minutes=1)), Wait)
    assert earned(act, snapshot, seq, told, settings, runs_at) is None
