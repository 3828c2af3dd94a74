"""Which payment provider a command talks to. Kept in one place so tests and the demo can swap it."""

from __future__ import annotations

from dunctl.config import Config
from dunctl.gateway import Gateway


def make_gateway(config: Config, environ: dict[str, str]) -> Gateway:
    from dunctl.stripe_gateway import StripeGateway

    return StripeGateway.from_config(config.file.stripe, environ)
