"""The two journals (dunctl/ledger/journal.py) on a real ledger file: a case's actions and pre-dunning notices are
claimed once, given back when never tried, recorded in one go, and after a crash settled by the one rule: never
started -> given back; an outcome noted -> that outcome; started without one -> `unknown`, never sent again."""

import pytest

from dunctl.clock import iso
from dunctl.effect import Outcome
from dunctl.ledger import Ledger
from dunctl.ledger.journal import ACTIONS_JOURNAL, NOTICES_JOURNAL
from dunctl.notices.effects import NoticeEffect
from dunctl.tick.effects import STEP, CaseEffect
from tests.helpers import at, customer, new_ledger, seed
from tests.test_ledger import open_case


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path / "dunctl.db")
    yield ledger
    ledger.close()


def a_step(ledger, invoice_id="in_1", channel="email") -> CaseEffect:
    bundle = ledger.cases.bundle(open_case(ledger, invoice_id))
    return CaseEffect(bundle, STEP, "notice", "email", at("30m"), "customer", channel)


def a_notice(ledger, object_id="pm_1", retry_at=None) -> NoticeEffect:
    seed(ledger, customers=[customer("cus_n")])
    ledger.notices.plan(kind="card_expiring", object_id=object_id, period="2026-12", offset="30d",
                        customer_id="cus_n", subscription_id=None, due_at=at("1h"), now=at(), key=f"k-{object_id}",
                        data={})
    notice_id = ledger.notices.id_of("card_expiring", object_id, "2026-12", "30d")
    return NoticeEffect(ledger.notices.get(notice_id), retry_at)


def row(ledger, journal: str, claim_id: int) -> dict:
    return next(ledger.rows(f"SELECT * FROM {journal} WHERE id = ?", [claim_id]))


@pytest.fixture(params=[ACTIONS_JOURNAL, NOTICES_JOURNAL])
def family(request, ledger):
    """(journal, an effect of its family) for the tests that hold for both."""
    make = a_step if request.param == ACTIONS_JOURNAL else a_notice
    return ledger.journal(request.param), make(ledger)


def test_a_claim_is_taken_once_and_given_back_when_never_tried(ledger, family):
    journal, effect = family
    with ledger.transaction():
        first = journal.claim(effect, at("1h"), None)
        assert first is not None and journal.claim(effect, at("1h"), None) is None   # nobody else gets it
        journal.release(first)
        again = journal.claim(effect, at("2h"), None)
    assert again is not None and row(ledger, journal.table, again)["tries"] == 1      # the release did not count


def test_a_batch_is_recorded_in_one_go_with_what_the_report_shows(ledger, family):
    journal, effect = family
    with ledger.transaction():
        claim = journal.claim(effect, at("1h"), None)
        journal.record_many([(claim, effect, Outcome("done", "email sent", recipient="ada@example.com",
                                                     subject="Card"))], at("1h"))
    recorded = row(ledger, journal.table, claim)
    assert (recorded["status"], recorded["detail"], recorded["recipient"], recorded["subject"]) == \
        ("done", "email sent", "ada@example.com", "Card")
    assert journal.orphans() == []


def test_each_case_keeps_its_last_step_and_a_failed_notice_is_due_again_while_tries_are_left(ledger):
    step = a_step(ledger)
    notice, spent = a_notice(ledger, "pm_1", retry_at=at("2h")), a_notice(ledger, "pm_2")
    with ledger.transaction():
        s = ledger.journal(ACTIONS_JOURNAL).claim(step, at("1h"), None)
        ledger.journal(ACTIONS_JOURNAL).record_many([(s, step, Outcome("failed", error="smtp down"))], at("1h"))
        n1, n2 = (ledger.journal(NOTICES_JOURNAL).claim(e, at("1h"), None) for e in (notice, spent))
        ledger.journal(NOTICES_JOURNAL).record_many([(n1, notice, Outcome("failed", error="smtp down")),
                                                     (n2, spent, Outcome("failed", error="smtp down"))], at("1h"))
    assert ledger.cases.get(step.case_id)["last_action"] == "notice: failed"
    assert row(ledger, NOTICES_JOURNAL, n1)["next_due_at"] == iso(at("2h"))
    assert row(ledger, NOTICES_JOURNAL, n2)["next_due_at"] is None                     # no tries left


def claimed_three(ledger, journal, make) -> list[int]:
    """Three claims of a tick that died: the first acted (its outcome noted by the second's start), the second
    started (in flight), the third never started."""
    effects = [make(ledger, f"in_{i}") if journal.table == ACTIONS_JOURNAL else make(ledger, f"pm_{i}")
               for i in range(3)]
    tick = ledger.start_tick(at("1h"), dry_run=False)
    with ledger.transaction():
        ids = [journal.claim(e, at("1h"), tick) for e in effects]
    with ledger.transaction():
        journal.mark_started(at("1h"), [ids[0]], [])
    with ledger.transaction():
        journal.mark_started(at("1h"), [ids[1]], [(ids[0], "done")])
    return ids


@pytest.mark.parametrize("name", [ACTIONS_JOURNAL, NOTICES_JOURNAL])
def test_after_a_crash_the_one_rule_settles_both_journals(ledger, name):
    journal = ledger.journal(name)
    acted, in_flight, untried = claimed_three(ledger, journal, a_step if name == ACTIONS_JOURNAL else a_notice)
    with ledger.transaction():
        journal.settle_orphans(at("2h"))
    assert row(ledger, name, acted)["status"] == "done"
    assert row(ledger, name, acted)["detail"].startswith("recorded after the tick stopped")
    assert row(ledger, name, in_flight)["status"] == "unknown"       # maybe sent: never sent again
    given_back = next(ledger.rows(f"SELECT * FROM {name} WHERE id = ?", [untried]), None)
    assert given_back is None if name == ACTIONS_JOURNAL else given_back["status"] == "pending"
    assert journal.orphans() == []


@pytest.mark.parametrize("name", [ACTIONS_JOURNAL, NOTICES_JOURNAL])
def test_after_a_reboot_a_claim_without_a_started_mark_counts_as_started(ledger, name):
    journal = ledger.journal(name)
    effect = a_step(ledger) if name == ACTIONS_JOURNAL else a_notice(ledger)
    tick = ledger.start_tick(at("1h"), dry_run=False)
    with ledger.transaction():
        claim = journal.claim(effect, at("1h"), tick)
        ledger.db.execute("UPDATE ticks SET boot_id = 'an-earlier-boot' WHERE id = ?", [tick])
        journal.settle_orphans(at("2h"))
    assert row(ledger, name, claim)["status"] == "unknown"


def test_a_noted_failure_is_failed_for_a_step_and_due_again_for_a_notice(ledger):
    step, notice = a_step(ledger), a_notice(ledger)
    with ledger.transaction():
        ids = {j: ledger.journal(j).claim(e, at("1h"), None) for j, e in ((ACTIONS_JOURNAL, step),
                                                                          (NOTICES_JOURNAL, notice))}
    with ledger.transaction():
        for j, claim in ids.items():
            ledger.journal(j).mark_started(at("1h"), [claim], [(claim, "failed")])
        for j in ids:
            ledger.journal(j).settle_orphans(at("2h"))
    assert row(ledger, ACTIONS_JOURNAL, ids[ACTIONS_JOURNAL])["status"] == "failed"
    assert row(ledger, NOTICES_JOURNAL, ids[NOTICES_JOURNAL])["status"] == "pending"


def test_a_stripe_call_cut_off_is_tried_again_under_its_key_without_counting_a_try(ledger):
    retry = a_step(ledger, channel="stripe")
    journal = ledger.journal(ACTIONS_JOURNAL)
    with ledger.transaction():
        claim = journal.claim(retry, at("1h"), None)
        journal.mark_started(at("1h"), [claim], [])
        journal.settle_orphans(at("2h"))
    recorded = row(ledger, ACTIONS_JOURNAL, claim)
    assert (recorded["status"], recorded["tries"]) == ("failed", 0)
    assert "same idempotency key" in recorded["error"]
    with ledger.transaction():
        assert journal.claim(retry, at("2h"), None) == claim and retry.key == "dunctl-in_1-notice"

