"""The ledger facade, on a real file: claims, transactions, the idle tick's queries. Each store has its own file
(tests/test_ledger_*.py)."""

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from dunctl.config import Sequence
from dunctl.ledger import Ledger
from tests.helpers import T0, customer, failed_invoice, new_ledger, seed

SEQUENCE = Sequence.model_validate({"name": "s", "steps": [{"id": "notice", "at": "30m", "action": "email",
                                                            "template": "payment-failed"}]})


@pytest.fixture
def ledger(tmp_path):
    ledger = new_ledger(tmp_path / "dunctl.db")
    yield ledger
    ledger.close()


def open_case(ledger, invoice_id="in_1", sequence=SEQUENCE):
    seed(ledger, failed_invoice(invoice_id, customer_id=f"cus_{invoice_id}"),
         customers=[customer(f"cus_{invoice_id}", tier="gold")])
    invoice = ledger.sync.invoice_record(invoice_id)
    return ledger.cases.open(invoice=invoice, segment="default", sequence=sequence.name, sequence_hash="h1",
                            sequence_def=sequence.model_dump(mode="json"), failure_type="card_soft",
                            decline_code="insufficient_funds", now=T0)


def test_a_claim_is_taken_once_a_failed_or_planned_one_again_and_a_finished_one_never(ledger):
    case_id = open_case(ledger)
    claim = lambda: ledger.journal("actions").claim_action(  # noqa
        case_id, "step", "notice", "email", "email", "customer", T0, T0, "dunctl-in_1-notice", None)
    first = claim()
    assert first is not None and claim() is None           # claimed: nobody else gets it
    ledger.journal("actions").record_result(first, "failed", T0, error="smtp down")
    assert claim() == first                                 # a failed delivery is claimed again
    ledger.journal("actions").record_result(first, "done", T0)
    assert claim() is None                                  # done is done
    # the same step id in dunctl's own namespace is another action
    assert ledger.journal("actions").claim_action(case_id, "system", "notice", "notify_person", None, "internal",
                                                  T0, T0, "k", None) not in (None, first)


def test_a_would_from_monitor_mode_becomes_a_real_claim_or_a_recorded_decision(ledger):
    case_id = open_case(ledger)
    assert ledger.record_decision(case_id, "step", "notice", "email", "would", T0, T0, "k", "planned", None)
    assert ledger.record_decision(case_id, "step", "notice", "email", "missed", T0, T0, "k", "later", None)
    assert ledger.record_decision(case_id, "step", "notice", "email", "skipped", T0, T0, "k", "again", None) is False
    assert [a.status for a in ledger.cases.bundle(case_id).actions] == ["missed"]


def test_a_transaction_commits_or_rolls_back_whole_and_nests(ledger):
    case_id = open_case(ledger)
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            ledger.cases.schedule(case_id, T0 + timedelta(days=1), "x")
            with ledger.transaction():
                ledger.cases.set_last_actions([(case_id, "inner")], T0)
            raise RuntimeError("boom")
    assert ledger.cases.get(case_id)["next_step"] is None and ledger.cases.get(case_id)["last_action"] is None
    with ledger.transaction():
        ledger.cases.schedule(case_id, T0 + timedelta(days=1), "x")
        with pytest.raises(ValueError):
            with ledger.transaction():
                ledger.cases.set_last_actions([(case_id, "inner")], T0)
                raise ValueError
    assert ledger.cases.get(case_id)["next_step"] == "x" and ledger.cases.get(case_id)["last_action"] is None


def test_a_write_transaction_starts_immediate_so_another_writer_waits_instead_of_failing(ledger):
    open_case(ledger)
    other = sqlite3.connect(ledger.path, timeout=0)
    with ledger.transaction():
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")      # the lock is taken at BEGIN, not at the first write
    other.execute("BEGIN IMMEDIATE")
    other.rollback()


def test_the_idle_ticks_queries_use_their_indexes(ledger):
    plans = {
        "due": "SELECT id FROM cases INDEXED BY cases_due WHERE state = 'open' AND next_due_at <= ?",
        "orphans": "SELECT * FROM actions INDEXED BY actions_claimed WHERE status = 'claimed'",
        "pending": "SELECT i.*, c.id FROM invoices i LEFT JOIN cases c ON c.invoice_id = i.id WHERE i.pending = 1",
        "signals": "SELECT * FROM signals WHERE applied = 0 ORDER BY at, id",
        "unknown": "SELECT count(*) FROM actions INDEXED BY actions_unknown WHERE status = 'unknown'",
    }
    for name, sql in plans.items():
        steps = [row[3] for row in ledger.db.execute("EXPLAIN QUERY PLAN " + sql, ["x"] if "?" in sql else [])]
        # every table is reached through an index (a partial one holds only the rows the tick wants)
        assert all("USING" in s for s in steps if s.startswith(("SCAN", "SEARCH"))), (name, steps)
    assert ledger.journal("actions").orphans() == [] and ledger.unknown_count() == 0


def test_due_cases_and_the_last_tick(ledger):
    case_id = open_case(ledger)
    assert ledger.due_case_ids(T0 - timedelta(seconds=1)) == [] and ledger.due_case_ids(T0) == [case_id]
    ledger.cases.schedule(case_id, None, None)
    assert ledger.due_case_ids(T0 + timedelta(days=99)) == []
    assert ledger.last_tick_at() is None
    tick = ledger.start_tick(T0, dry_run=False)
    ledger.finish_tick(tick, 0, 0, 0, 0)
    assert ledger.last_tick_at() == T0


def test_an_in_memory_snapshot_is_a_copy_not_the_file(ledger):
    case_id = open_case(ledger)
    copy = ledger.snapshot_in_memory()
    copy.cases.schedule(case_id, datetime(2030, 1, 1, tzinfo=timezone.utc), "later")
    assert ledger.cases.get(case_id)["next_step"] is None
    assert copy.cases.get(case_id)["next_step"] == "later"


def test_a_nested_transaction_that_fails_undoes_only_its_own_writes(ledger):
    """Nested transactions are savepoints of the outer one (ledger/transaction.py, for both kinds)."""
    with ledger.transaction():
        ledger.set_state("outer", 1)
        try:
            with ledger.light_transaction():
                ledger.set_state("inner", 2)
                raise RuntimeError("fails halfway")
        except RuntimeError:
            pass
    assert ledger.get_state("outer") == 1 and ledger.get_state("inner") is None
    assert not ledger.conn.in_transaction


def test_a_light_transaction_commits_what_it_wrote_or_nothing(ledger):
    """Ledger.light_transaction (the executor's started mark): its writes committed when the block ends, none of
    them when it raises; inside another transaction, a savepoint of it."""
    with ledger.light_transaction():
        ledger.set_state("kept", 1)
    assert ledger.get_state("kept") == 1 and not ledger.conn.in_transaction

    with pytest.raises(RuntimeError):
        with ledger.light_transaction():
            ledger.set_state("lost", 2)
            raise RuntimeError("fails halfway")
    assert ledger.get_state("lost") is None and not ledger.conn.in_transaction
    with ledger.transaction():
        with ledger.light_transaction():
            ledger.set_state("inner", 3)
        assert ledger.conn.in_transaction      # not committed on its own
    assert ledger.get_state("inner") == 3


def test_follow_ups_due_again_list_each_ended_case_once_in_order(ledger):
    """A thank-you waiting for quiet hours to end and a lift that failed, on one recovered case: the case is listed
    once; cases come in id order."""
    first, second = open_case(ledger, "in_1"), open_case(ledger, "in_2")
    journal = ledger.journal("actions")
    for case_id in (second, first):
        ledger.cases.end(case_id, "recovered", "paid", T0, recovered_at=T0)
        thanks = journal.claim_action(case_id, "system", "recovered", "email", "email", "customer", T0, T0,
                                      f"t{case_id}", None)
        ledger.conn.execute("UPDATE actions SET status = 'waiting', due_at = ? WHERE id = ?",
                            ["2026-11-02T13:00:00Z", thanks])
        lift = journal.claim_action(case_id, "system", "lift-sub_1", "resume_subscription", "stripe", None, T0, T0,
                                    f"l{case_id}", None)
        journal.record_result(lift, "failed", T0, error="stripe down")
    assert ledger.due_follow_ups(T0 + timedelta(hours=1), T0 + timedelta(minutes=30), 3) == [first, second]
    assert ledger.due_follow_ups(T0 - timedelta(hours=2), T0 - timedelta(hours=2), 3) == []


def test_a_nested_transaction_that_fills_the_disk_reports_the_full_disk(ledger):
    """SQLite rolls a whole transaction back when the disk fills: the savepoint of a nested one is gone with it,
    and the error is the full disk (which the CLI names), not "no such savepoint"."""
    ledger.conn.execute(f"PRAGMA max_page_count = {ledger.conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.OperationalError, match="full"):
        with ledger.transaction():
            with ledger.transaction():
                for n in range(2000):
                    ledger.set_state(f"filler-{n}", "x" * 500)
    assert not ledger.conn.in_transaction
