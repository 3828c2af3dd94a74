"""Measure the model against the guide's headline figures (assumptions.CALIBRATION_TARGETS).

Each measurement runs the shipped segments with the shipped sequences cut down to one kind of step:

- retries only: every sequence keeps its retry steps and nothing else; share of failed invoices a retry collected
- day-0 email only: every sequence keeps only its first email; share of failed invoices paid after that email
- the full shipped sequences: overall recovery, and the share of recoveries after day 14
- nothing at all: what customers pay unprompted (the floor every sequence is measured above)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from dunctl.scaffold import shipped_dir
from dunctl.simulation.assumptions import DEFAULT_PRESET, Assumptions
from dunctl.simulation.demo import DEFAULT_SEED, Outcome, run_simulation


def write_sequences(target: Path, keep: Callable[[int, dict], bool], *, source: Path | None = None) -> Path:
    """Copy the shipped sequences into `target`, keeping the steps for which keep(index, step) is true."""
    source = source or shipped_dir() / "sequences"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["steps"] = [step for i, step in enumerate(data["steps"]) if keep(i, step)]
        (target / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return target


@dataclass
class Calibration:
    retries_alone: float | None          # target about 21%
    day0_email_alone: float | None       # target about 13%
    after_day_14: float | None           # target about 42%
    overall: float | None                # target 70-85%
    unprompted: float | None
    outcomes: list[Outcome]


def calibrate(work: Path, *, customers: int = 3000, days: int = 30, follow_up_days: int = 35,
              seed: int = DEFAULT_SEED, preset: str = DEFAULT_PRESET, assumptions: Assumptions | None = None,
              progress=None) -> Calibration:
    work = Path(work)
    only_retries = write_sequences(work / "retries-only", lambda i, s: s["action"] == "retry")
    def first_email_only(i: int, step: dict) -> bool:
        return step["action"] == "email" and step.get("to") != "account_manager" and step["id"] in ("notice",)

    only_email = write_sequences(work / "day0-email-only", first_email_only)
    nothing = write_sequences(work / "nothing", lambda i, s: False)
    shipped = write_sequences(work / "shipped", lambda i, s: True)
    result = run_simulation([only_retries, only_email, shipped, nothing], work / "runs", customers=customers,
                            days=days, follow_up_days=follow_up_days, seed=seed, preset=preset, assumptions=assumptions,
                            progress=progress)
    retries, email, full, floor = result.outcomes

    def share(outcome: Outcome, *sources: str) -> float | None:
        if not outcome.failed_invoices:
            return None
        return round(sum(outcome.collected_by.get(s, 0) for s in sources) / outcome.failed_invoices, 4)

    return Calibration(retries_alone=share(retries, "retry"), day0_email_alone=share(email, "email"),
                       after_day_14=full.recovered_after_day_14, overall=full.recovered_of_failed,
                       unprompted=floor.recovered_of_failed, outcomes=result.outcomes)
