"""`collections:` in dunctl.yaml: where a `hand_off` step writes a case's collections packet (a directory, and a
webhook when set), and which cases may be handed off (dunctl/receivables/handoff.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from dunctl.offsets import parse_duration


class CollectionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    dir: str = "collections"                # relative to dunctl.yaml: one JSON and one HTML file per case
    min_amount: dict[str, int] = {}         # per currency, minor units: smaller amounts stay with you
    after: timedelta = timedelta(0)         # days past the due date before a case may be handed off
    # `webhook:` (where the packet is also POSTed, signed like channels.webhook) is added by dunctl/config/schema.py,
    # which defines the webhook settings and imports this module

    @field_validator("after", mode="before")
    @classmethod
    def _after(cls, value: Any) -> timedelta:
        return value if isinstance(value, timedelta) else parse_duration(value)

    @field_validator("min_amount")
    @classmethod
    def _amounts(cls, value: dict[str, int]) -> dict[str, int]:
        if any(amount < 0 for amount in value.values()):
            raise ValueError("amounts are 0 or more, in the currency's minor unit (cents)")
        return {currency.lower(): amount for currency, amount in value.items()}
