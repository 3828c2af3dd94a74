"""What sync adds for pre-dunning: on the first sync (and with --full), the active subscriptions with their
customers and default payment methods, listed in pages of a hundred (one request each, expanded). Afterwards only
events keep them current (customer.subscription.*, payment_method.*, customer.updated), so a sync with no changes
still costs one request."""

from __future__ import annotations

from collections.abc import Iterator

from dunctl.ledger import Ledger
from dunctl.model import SyncBatch

DONE, AFTER = "billing_backfill_done", "billing_backfill_after"


def with_billing_backfill(ledger: Ledger, gateway, batches: Iterator[SyncBatch], full: bool) -> Iterator[SyncBatch]:
    yield from batches
    # Again whenever the invoices were backfilled again (a lost events cursor): events were missed then too.
    backfilled = (ledger.get_state("cursor") or {}).get("since")
    if not hasattr(gateway, "sync_subscriptions") or (ledger.get_state(DONE) == backfilled and not full):
        return
    after = None if full or ledger.get_state(DONE) is not None else ledger.get_state(AFTER)
    for batch, last in gateway.sync_subscriptions(after):
        yield batch
        # A page applied twice is harmless (every write is an upsert): resuming needs no stricter bookkeeping.
        ledger.set_state(AFTER, last)
    ledger.set_state(DONE, backfilled)
