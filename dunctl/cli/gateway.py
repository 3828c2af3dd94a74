"""Which payment provider a command talks to. Kept in one place so tests and the demo can swap it."""

from __future__ import annotations

from dunctl.config import Config
from dunctl.gateway import Gateway


class LazyGateway:
    """Builds the Stripe gateway on first use, so a tick that needs no Stripe call (--no-sync, email-only steps)
    runs without a key, and a missing key is reported where it matters."""

    def __init__(self, config: Config, environ: dict[str, str]):
        self._config = config
        self._environ = environ
        self._gateway: Gateway | None = None

    def _real(self) -> Gateway:
        if self._gateway is None:
            from dunctl.errors import GatewayAuthError
            from dunctl.stripe_gateway import StripeGateway

            try:
                self._gateway = StripeGateway.from_config(self._config.file.stripe, self._environ)
            except GatewayAuthError as exc:
                exc.exit_code = 2  # no key, or not a key: the operator's setup, like a config error (issue 11)
                raise
        return self._gateway

    @property
    def mode(self) -> str:
        return self._real().mode

    @property
    def requests(self) -> int:
        return self._gateway.requests if self._gateway is not None else 0

    def __getattr__(self, name: str):
        return getattr(self._real(), name)


def make_gateway(config: Config, environ: dict[str, str]) -> Gateway:
    return LazyGateway(config, environ)
