"""The gateway a dry run and monitor mode see: the real one for reads, a refusal for anything that changes the
account."""

from __future__ import annotations

from dunctl.errors import DunctlError
from dunctl.gateway import Gateway


class ReadOnlyGateway:
    """A gateway for dry runs and monitor mode: reads go through, anything that changes the account is refused
    loudly (the executor never asks: it describes instead of delivering)."""

    # What a dry run may use: the provider's reads and what it says about itself. Anything else changes the account.
    READS = frozenset({"mode", "requests", "sync", "sync_subscriptions", "get_invoice", "preview_invoice"})

    def __init__(self, gateway: Gateway):
        self._gateway = gateway

    def __getattr__(self, name):
        if name in self.READS:
            return getattr(self._gateway, name)
        raise DunctlError(f"not live: refusing to call {name} on the payment provider")
