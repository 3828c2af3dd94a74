"""The case store (`ledger.cases`), on a real file: opening and ending cases, a batch's bundles, contacts,
experiment arms, and the split of a simulated run's copy."""

from datetime import timedelta

from dunctl.ledger.records import CaseRecord, InvoiceRecord
from tests.helpers import T0
from tests.test_ledger import ledger, open_case   # ledger: the fixture


def test_records_come_out_typed(ledger):
    case_id = open_case(ledger)
    bundle = ledger.cases.bundle(case_id)
    assert isinstance(bundle.case, CaseRecord) and isinstance(bundle.invoice, InvoiceRecord)
    assert bundle.case.first_failed_at == T0 and bundle.case.next_due_at == T0
    assert bundle.invoice.decline["decline_code"] == "insufficient_funds"
    assert bundle.customer.metadata == {"tier": "gold"} and not bundle.customer.dunning_off
    assert bundle.actions == []


def test_a_row_unchanged_since_the_last_read_gives_the_record_built_then_and_a_changed_one_a_new_one(ledger):
    """A demo re-reads the same cases tick after tick: records of rows that did not change are not built again
    (issue #25: building them was a third of reading a bundle). What changed is always read as it is now."""
    case_id = open_case(ledger)
    claim = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer", T0, T0,
                                                   "k1", None)
    first = ledger.cases.bundle(case_id)
    ledger.cases.schedule(case_id, T0 + timedelta(days=1), "retry-1")
    ledger.journal("actions").record_result(claim, "done", T0 + timedelta(minutes=1))
    again = ledger.cases.bundle(case_id)
    assert again.invoice is first.invoice and again.customer is first.customer
    assert again.case is not first.case and again.case.next_due_at == T0 + timedelta(days=1)
    assert [a.status for a in first.actions] == ["claimed"] and [a.status for a in again.actions] == ["done"]
    ledger.conn.execute("UPDATE invoices SET amount_remaining = 1 WHERE id = 'in_1'")
    assert ledger.cases.bundle(case_id).invoice.amount_remaining == 1


def test_a_batch_of_cases_is_read_with_what_they_concern_in_two_queries(ledger):
    """Cases with their invoices, customers and subscriptions in one query, their actions in another (five, one per
    table, before issue #25); a case without a subscription or a known customer has None for it."""
    first, second = open_case(ledger, "in_1"), open_case(ledger, "in_2")
    ledger.conn.execute("UPDATE cases SET subscription_id = NULL, customer_id = 'cus_gone' WHERE id = ?", [second])
    statements: list[str] = []
    ledger.conn.set_trace_callback(statements.append)
    found = ledger.cases.bundles([second, first])
    ledger.conn.set_trace_callback(None)
    assert len(statements) == 2, statements
    assert list(found) == [first, second]
    assert (found[first].invoice.id, found[first].customer.id, found[first].subscription.id) == ("in_1", "cus_in_1",
                                                                                                 "sub_1")
    assert (found[second].invoice.id, found[second].customer, found[second].subscription) == ("in_2", None, None)
    again = ledger.cases.bundles([first], planned={first: found[first]})
    assert again[first].customer is found[first].customer and again[first].invoice is found[first].invoice


def test_a_sequence_version_is_stored_once_however_many_cases_use_it(ledger):
    for i in range(3):
        open_case(ledger, f"in_{i}")
    assert ledger.db.execute("SELECT count(*) FROM sequence_versions").fetchone()[0] == 1
    assert ledger.db.execute("SELECT count(*) FROM cases WHERE sequence_def != ''").fetchone()[0] == 0
    assert ledger.cases.sequence_definition("h1")["steps"][0]["id"] == "notice"


def test_a_case_opens_once_per_invoice_is_found_by_it_and_ends_unscheduled(ledger):
    case_id = open_case(ledger)
    assert ledger.cases.for_invoice("in_1")["id"] == case_id and ledger.cases.open_ids() == [case_id]
    ledger.cases.schedule(case_id, T0 + timedelta(days=1), "retry-1")
    ledger.cases.end(case_id, "closed", "settled offline", T0 + timedelta(hours=2))
    case = ledger.cases.get(case_id)
    assert (case["state"], case["next_due_at"], case["next_step"]) == ("closed", None, None)
    assert ledger.cases.open_ids() == [] and ledger.cases.listed() == []
    assert [c["id"] for c in ledger.cases.listed(include_ended=True)] == [case_id]


def test_a_case_keeps_the_first_arm_it_was_given(ledger):
    case_id = open_case(ledger)
    assert ledger.cases.assign_arm(case_id, "lean", "control") is True
    assert ledger.cases.assign_arm(case_id, "lean", "treatment") is False
    assert ledger.cases.get(case_id)["arm"] == "control" and ledger.cases.any_in_arm("control")


def test_a_grouped_message_counts_as_one_contact(ledger):
    first, second = open_case(ledger, "in_1"), open_case(ledger, "in_2")
    ledger.conn.execute("UPDATE cases SET customer_id = 'cus_in_1' WHERE id = ?", [second])
    for case_id in (first, second):
        action = ledger.journal("actions").claim_action(case_id, "step", "notice", "email", "email", "customer",
                                                        T0, T0, f"k{case_id}", None)
        ledger.journal("actions").record_result(action, "done", T0 + timedelta(minutes=1), message_ref="m1")
    assert ledger.cases.customer_contacts("cus_in_1", T0) == [T0 + timedelta(minutes=1)]


def test_keep_only_splits_a_copy_by_arm_and_leaves_the_file_alone(ledger):
    held, treated = open_case(ledger, "in_1"), open_case(ledger, "in_2")
    ledger.cases.assign_arm(held, "x", "holdout")
    ledger.cases.assign_arm(treated, "x", "control")
    part = ledger.snapshot_in_memory()
    part.cases.keep_only("holdout", in_arm=True)
    assert [c["id"] for c in part.cases.listed()] == [held]
    assert len(ledger.cases.listed()) == 2
    part.close()
