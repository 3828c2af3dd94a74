"""Which payment provider a command talks to. Kept in one place so tests and the demo can swap it."""

from __future__ import annotations

from dunctl.account_binding import bind, read_binding, refuse_if_simulated
from dunctl.config import Config
from dunctl.gateway import Gateway


class LazyGateway:
    """Builds the Stripe gateway on first use, so a tick that needs no Stripe call (--no-sync, email-only steps)
    runs without a key, and a missing key is reported where it matters. On first use it also checks that the key
    reaches the account the ledger follows (dunctl/account_binding.py)."""

    def __init__(self, config: Config, environ: dict[str, str], ledger=None):
        self._config = config
        self._environ = environ
        self._ledger = ledger
        self._gateway: Gateway | None = None

    def _real(self) -> Gateway:
        if self._gateway is None:
            from dunctl.stripe_gateway import StripeGateway

            settings = self._config.file.stripe
            gateway = StripeGateway.from_config(settings, self._environ)
            key = self._environ.get(settings.api_key_env, "").strip()
            if self._ledger is not None:
                bind(self._ledger, gateway, key, settings.api_key_env, settings.account)
            else:
                from dunctl.ledger import Ledger

                ledger = Ledger.open(self._config.ledger_path)
                try:
                    bind(ledger, gateway, key, settings.api_key_env, settings.account)
                finally:
                    ledger.db.close()
            self._gateway = gateway
        return self._gateway

    @property
    def mode(self) -> str:
        return self._real().mode

    @property
    def requests(self) -> int:
        return self._gateway.requests if self._gateway is not None else 0

    def __getattr__(self, name: str):
        return getattr(self._real(), name)


def make_gateway(config: Config, environ: dict[str, str], ledger=None) -> Gateway:
    """The Stripe gateway for `config`. A ledger bound to the simulated account (`dunctl demo`) is refused here,
    before any request; pass the command's open `ledger` so the account check shares its transaction."""
    refuse_if_simulated(read_binding(config.ledger_path), config.file.stripe.api_key_env)
    return LazyGateway(config, environ, ledger)
