"""The sync store (`ledger.sync`), on a real file: what a batch lands, the cursor with it, and the stale-ledger
check of dunctl's own idempotency keys."""

from dataclasses import replace
from datetime import timedelta

import pytest

from dunctl.errors import StaleLedger
from dunctl.model import SyncBatch
from tests.helpers import T0, failed_invoice, seed
from tests.test_ledger import ledger, open_case   # ledger: the fixture


def test_a_batch_lands_its_invoices_once_and_its_cursor_with_them(ledger):
    invoice = failed_invoice("in_1")
    assert ledger.sync.apply_batch(SyncBatch(invoices=[invoice], cursor={"last": "evt_1"}), T0) == 1
    assert ledger.sync.apply_batch(SyncBatch(invoices=[invoice], cursor={"last": "evt_2"}), T0) == 0
    assert ledger.get_state("cursor") == {"last": "evt_2"}
    assert [(i.id, case_id) for i, case_id in ledger.sync.pending_invoices()] == [("in_1", None)]
    ledger.sync.clear_pending("in_1")
    assert ledger.sync.pending_invoices() == []


def test_the_first_failure_never_moves_later(ledger):
    seed(ledger, failed_invoice("in_1"))
    seed(ledger, replace(failed_invoice("in_1"), first_failed_at=T0 + timedelta(days=2),
                         failed_at=T0 + timedelta(days=2)))
    assert ledger.sync.invoice("in_1")["first_failed_at"] == "2026-11-02T14:00:00Z"
    assert ledger.sync.invoice_record("in_1").first_failed_at == T0


def test_a_batch_reads_its_invoices_first_failures_in_one_query_and_an_invoice_twice_keeps_the_earliest(ledger):
    """A batch's invoices are not read one by one before their upserts; an invoice twice in one batch (its event
    and its backfill) is new once, and its first failure is the earlier of the two, as with separate batches."""
    seed(ledger, failed_invoice("in_0"))
    later = replace(failed_invoice("in_1"), first_failed_at=T0 + timedelta(days=2), failed_at=T0 + timedelta(days=2))
    reads = []
    ledger.conn.set_trace_callback(lambda sql: reads.append(sql) if "first_failed_at FROM invoices" in sql else None)
    new = ledger.sync.apply_batch(SyncBatch(invoices=[failed_invoice("in_0"), failed_invoice("in_1"), later,
                                                      failed_invoice("in_2")]), T0)
    ledger.conn.set_trace_callback(None)
    assert new == 2
    assert len(reads) == 1
    assert ledger.sync.invoice("in_1")["first_failed_at"] == "2026-11-02T14:00:00Z"


def test_a_key_is_known_whatever_the_gateway_and_the_tries_added_to_it(ledger):
    case_id = open_case(ledger)
    ledger.journal("actions").claim_action(case_id, "step", "retry-1", "retry", None, "customer", T0, T0,
                                           "dunctl-in_1-retry-1:2", None)
    known = ["dunctl-in_1-retry-1:2~0123abcd", "dunctl-in_1-retry-1", "dunctl-in_1-sys-mark-1"]
    assert ledger.sync.unknown_keys([*known, "dunctl-in_9-notice"]) == ["dunctl-in_9-notice"]
    with pytest.raises(StaleLedger):
        ledger.sync.apply_batch(SyncBatch(dunctl_keys=["dunctl-in_9-notice"]), T0)
    assert ledger.sync.apply_batch(SyncBatch(dunctl_keys=["dunctl-in_9-notice"]), T0, accept_stale=True) == 0


def test_a_decline_is_stored_whole_and_flat(ledger):
    """The sync stores a Decline's fields as they are (not through asdict's deep copy): right while every field is
    a code as text, which this checks."""
    from dataclasses import asdict, fields

    from dunctl.failures import Decline

    assert all(f.type == "str | None" for f in fields(Decline)), fields(Decline)
    decline = Decline(code="card_declined", decline_code="do_not_honor", advice_code="try_again_later",
                      network_decline_code="05", payment_method_type="card", message="declined")
    ledger.sync.apply_batch(SyncBatch(invoices=[replace(failed_invoice("in_1"), decline=decline)]), T0)
    assert ledger.sync.invoice_record("in_1").decline == asdict(decline)


def test_a_batch_leaves_pending_only_the_invoices_reconciling_can_act_on(ledger):
    """A renewal paid on the first try cannot open a case: the batch marks it reconciled as it lands, so a tick
    whose sync brought only such invoices has nothing to reconcile (issue #25). A failed one stays pending."""
    paid = replace(failed_invoice("in_paid"), status="paid", amount_paid=4900, amount_remaining=0, attempt_count=1,
                   first_failed_at=None, failed_at=None, decline=None)
    ledger.sync.apply_batch(SyncBatch(invoices=[paid]), T0)
    assert ledger.sync.pending_invoices() == []
    ledger.sync.apply_batch(SyncBatch(invoices=[paid, failed_invoice("in_failed")]), T0)
    assert [i.id for i, _ in ledger.sync.pending_invoices()] == ["in_failed"]
