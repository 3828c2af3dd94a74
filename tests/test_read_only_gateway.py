"""The gateway a dry run and monitor mode act through: the provider's reads pass, anything that changes the account
is refused. Pinned here because the executor relies on the refusal being loud, never silent."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dunctl.errors import DunctlError
from dunctl.simulation.account import SimulatedAccount
from dunctl.tick.read_only import ReadOnlyGateway
from tests.gateway_contract import T0


def test_reads_pass_through_and_every_write_is_refused():
    account = SimulatedAccount([], seed=0, start=T0, customers_respond=False)
    invoice_id = account.script_failure(1000, "usd", "insufficient_funds", "card", T0, "a@example.com")
    read_only = ReadOnlyGateway(account)

    assert read_only.mode == account.mode
    assert read_only.get_invoice(invoice_id).id == invoice_id
    assert [batch.invoices for batch in read_only.sync(None, T0 + timedelta(hours=1))]
    assert read_only.requests == account.requests
    for write, args in (("pay_invoice", (invoice_id, "k1")), ("mark_uncollectible", (invoice_id, "k2")),
                        ("disable_automatic_retries", (invoice_id, "k3"))):
        with pytest.raises(DunctlError, match=f"not live: refusing to call {write} on the payment provider"):
            getattr(read_only, write)(*args)
    assert account.get_invoice(invoice_id).status == "open"
