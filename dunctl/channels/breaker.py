"""A circuit breaker per channel for one tick: after `after` consecutive failures a channel is not called again
until the next tick, so a dead SMTP server costs `after` timeouts, not one per due email.

    breaker = Breaker()                                            # one per tick, next to the transports
    delivery = breaker.call("email", lambda: transport.send(...))  # raises ChannelError at once when open

A skipped call raises plain ChannelError (nothing left), so the executor records it `failed` and retries it on a
later tick. DeliveryUncertain counts as a failure too: a channel that times out after sending is not healthy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dunctl.errors import ChannelError

T = TypeVar("T")

AFTER = 3


class Breaker:
    def __init__(self, after: int = AFTER):
        self.after = after
        self.failures: dict[str, int] = {}

    def is_open(self, channel: str) -> bool:
        return self.failures.get(channel, 0) >= self.after

    def call(self, channel: str, send: Callable[[], T]) -> T:
        failures = self.failures.get(channel, 0)
        if failures >= self.after:
            raise ChannelError(f"the {channel} channel failed {failures} times in a row in this tick; not tried "
                               "again until the next tick")
        try:
            result = send()
        except ChannelError:
            self.failures[channel] = failures + 1
            raise
        self.failures[channel] = 0
        return result
