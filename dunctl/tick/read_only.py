"""The gateway a dry run and monitor mode see: the real one for reads, a refusal for anything that changes the
account."""

from __future__ import annotations

from dunctl.errors import DunctlError
from dunctl.gateway import Gateway


class ReadOnlyGateway:
    """A gateway for dry runs and monitor mode: reads go through, anything that changes the account is refused
    loudly (the executor never asks: it describes instead of delivering)."""

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    @property
    def mode(self) -> str:
        return self._gateway.mode

    @property
    def requests(self) -> int:
        return self._gateway.requests

    def sync(self, cursor, now, full=False):
        return self._gateway.sync(cursor, now, full)

    def get_invoice(self, invoice_id):
        return self._gateway.get_invoice(invoice_id)

    def preview_invoice(self, subscription_id):
        return self._gateway.preview_invoice(subscription_id)

    def sync_subscriptions(self, after=None):
        return self._gateway.sync_subscriptions(after)

    def __getattr__(self, name):
        raise DunctlError(f"not live: refusing to call {name} on the payment provider")
