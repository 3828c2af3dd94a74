"""Which payment provider a command talks to. Kept in one place so tests and the demo can swap it."""

from __future__ import annotations

import time

from dunctl.account_binding import bind, read_binding, refuse_if_simulated
from dunctl.ledger.file import StateFile
from dunctl.config import Config
from dunctl.errors import GatewayAuthError
from dunctl.gateway import Gateway


class LazyGateway:
    """Builds the Stripe gateway on first use, so a tick that needs no Stripe call (--no-sync, email-only steps)
    runs without a key, and a missing key is reported where it matters."""

    def __init__(self, config: Config, environ: dict[str, str], deadline: float | None = None):
        self._config = config
        self._environ = environ
        # The tick's deadline (time.monotonic()), however late the gateway is built (a `tick --no-sync` builds it
        # at its first Stripe step): its requests get what is left of the budget the tick itself keeps to.
        self._deadline = deadline
        self._gateway: Gateway | None = None

    def _real(self) -> Gateway:
        if self._gateway is None:
            from dunctl.stripe.gateway import StripeGateway   # lazy: see dunctl/lazy.py

            try:
                left = None if self._deadline is None else max(0.0, self._deadline - time.monotonic())
                self._gateway = StripeGateway.from_config(self._config.file.stripe, self._environ, budget=left)
            except GatewayAuthError as exc:
                exc.exit_code = 2  # no key, or not a key: the operator's setup, like a config error (issue 11)
                raise
        return self._gateway

    def bind(self, ledger) -> None:
        """Check that the key reaches the account the ledger follows, recording it on first use
        (dunctl/account_binding.py). One request, only when the key or stripe.account changed."""
        settings = self._config.file.stripe
        key = self._environ.get(settings.api_key_env, "").strip()
        bind(ledger, self._real(), key, settings.api_key_env, settings.account)

    @property
    def mode(self) -> str:
        return self._real().mode

    @property
    def stripe_date(self):
        """Stripe's clock (dunctl/tick/clocks.py), once a request was answered; None before any."""
        return self._gateway.stripe_date if self._gateway is not None else None

    @property
    def requests(self) -> int:
        return self._gateway.requests if self._gateway is not None else 0

    def __getattr__(self, name: str):
        return getattr(self._real(), name)


def make_gateway(config: Config, environ: dict[str, str], ledger=None, check_account: bool = True,
                 deadline: float | None = None) -> Gateway:
    """The Stripe gateway for `config`, checked against the account the ledger follows before the command does
    anything: a demo ledger (simulated account) is refused before any request is built; with a key set, a key for
    another account is refused (AccountMismatch, exit 2). Without a key nothing is checked yet: a `tick --no-sync`
    needs none, and a command that needs one says so when it tries.

    Pass the command's open `ledger` to record the binding through it; otherwise a short-lived connection of its
    own does (this runs before the command opens a transaction, so the two never overlap).

    With `deadline` (time.monotonic(): when a tick's budget ends), every Stripe request, retry and backoff comes out
    of what is left of it."""
    settings = config.file.stripe
    has_key = bool(environ.get(settings.api_key_env, "").strip())
    refuse_if_simulated(read_binding(config.ledger_path), settings.api_key_env, has_key)
    gateway = LazyGateway(config, environ, deadline)
    if has_key and check_account:   # (tick --no-sync asks Stripe nothing it does not need)
        if ledger is not None:
            gateway.bind(ledger)
        elif config.ledger_path.is_file():      # no ledger yet: nothing to check, and nothing is created
            own = StateFile(config.ledger_path)
            try:
                gateway.bind(own)
            finally:
                own.close()
    return gateway
