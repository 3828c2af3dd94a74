"""`collections:` in dunctl.yaml: where a `hand_off` step sends a case's collections packet (a directory, a
webhook, or both), and which cases may be handed off (dunctl/receivables/handoff.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from dunctl.errors import ConfigProblem
from dunctl.offsets import parse_duration


class CollectionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # relative to dunctl.yaml: one JSON and one HTML file per case. None: the packet goes only to `webhook` (an
    # agency's or a CRM's endpoint); a config with a hand_off step and neither is refused (handoff_problems)
    dir: str | None = None
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


def handoff_problems(config, lines: dict) -> list:
    """A `hand_off` step with nowhere to send the packet (neither `collections.dir` nor `collections.webhook`):
    refused when the config loads, naming the step, rather than a packet lost at 45 days past due."""
    settings = config.file.collections
    if settings.dir is not None or settings.webhook is not None:
        return []
    steps = [f"{config.sequence_files[name]} steps[{i}]" for name, sequence in sorted(config.sequences.items())
             for i, step in enumerate(sequence.steps) if step.action == "hand_off"]
    if not steps:
        return []
    return [ConfigProblem(str(config.path), "collections", f"the hand_off step ({steps[0]}) needs somewhere to send "
                          "the collections packet; set collections.dir (a directory, relative to dunctl.yaml) "
                          "and/or collections.webhook ({url_env: ..., secret_env: ...})",
                          lines.get(("collections",)))]
