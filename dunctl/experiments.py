"""Experiments: `experiments:` in dunctl.yaml, and which arm a customer is in.

An experiment names a segment (or every segment), two or more arms, each a sequence (or the segment's own,
`default`), with weights, and an optional holdout: a share of customers who get no dunctl action at all, so that
what dunctl adds over Stripe's own retries and emails can be measured.

Assignment is a pure function of (experiment name, customer id): sha256, never Python's `hash()` (salted per
process), never the clock or a random generator. A customer therefore stays in one arm across invoices, and
re-running a tick, rebuilding a ledger or moving to another machine assigns the same arm. The arm is recorded on
the case when it opens (`ledger.cases.assign_arm`) and never changed afterwards;
removing an experiment from the config ends it for new cases and keeps the history of the old ones.

Two hashes are used: one decides the holdout, the other the arm. Changing the holdout share therefore never
moves a customer from one arm to another, and changing the arms' weights never moves anyone in or out of the
holdout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from dunctl.clock import iso
from dunctl.errors import ConfigProblem, UsageError
from dunctl.strict import Strict as _Strict
from dunctl.strict import format_path

HOLDOUT = "holdout"          # the arm name a holdout case is recorded under
DEFAULT_SEQUENCE = "default"  # an arm that keeps the segment's own sequence


class Arm(_Strict):
    name: str
    sequence: str = DEFAULT_SEQUENCE
    weight: float = Field(1.0, gt=0)


def parse_share(value: Any) -> float:
    """'10%' -> 0.10; a number is a fraction (0.1). Refuses anything outside [0, 0.9]."""
    if isinstance(value, str):
        text = value.strip()
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise ValueError(f"'{value}' is not a share; write a percentage such as 10% (or a fraction, 0.1)")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        share = float(value)
    else:
        raise ValueError(f"'{value}' is not a share; write a percentage such as 10% (or a fraction, 0.1)")
    if not 0 <= share <= 0.9:
        raise ValueError(f"holdout {value} is outside 0% to 90%; a holdout is the share of customers who get no "
                         "dunctl action, such as 10%")
    return share


def parse_points(value: Any) -> float:
    """'5 points' or '5%' -> 0.05; a number is a fraction (0.05). The smallest difference in recovery rate an
    experiment is meant to find: between 0.5 and 50 points."""
    text = str(value).strip().lower()
    hint = f"'{value}' is not a difference in recovery rate; write points such as 5 points (or 5%, or 0.05)"
    if isinstance(value, bool) or not text:
        raise ValueError(hint)
    number = text.removesuffix("points").removesuffix("point").removesuffix("%").strip()
    try:
        share = float(number) / 100 if number != text else float(number)
    except ValueError:
        raise ValueError(hint)
    if not 0.005 <= share <= 0.5:
        raise ValueError(f"minimum detectable effect {value} is outside 0.5 to 50 points; 5 points is typical")
    return share


class Experiment(_Strict):
    name: str = Field(min_length=1)
    segment: str | None = None           # None: every segment
    arms: list[Arm] = Field(min_length=2)
    holdout: float = 0.0
    control: str | None = None           # the arm others are compared with; default the first arm
    # What the report needs to say "not enough cases: 41 of ~800 needed": the smallest difference worth
    # finding and the chance of finding it (dunctl/sequential.py).
    minimum_detectable_effect: float = 0.05
    power: float = Field(0.8, ge=0.5, le=0.99)

    _share = field_validator("holdout", mode="before")(classmethod(lambda cls, v: parse_share(v)))
    _points = field_validator("minimum_detectable_effect", mode="before")(
        classmethod(lambda cls, v: parse_points(v)))

    @property
    def control_arm(self) -> str:
        return self.control or self.arms[0].name


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    sequence_name: str | None     # None for the holdout: no dunctl action
    holdout: bool


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) from the parts, the same on every machine and every run."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def _experiments(config) -> list[Experiment]:
    file = getattr(config, "file", config)
    return list(getattr(file, "experiments", None) or [])


def _segment_sequence(config, segment: str) -> str | None:
    file = getattr(config, "file", config)
    return next((s.sequence for s in file.segments if s.name == segment), None)


def experiment_for(config, segment: str) -> Experiment | None:
    """The experiment a case of `segment` belongs to: the first one naming the segment, or naming none."""
    return next((e for e in _experiments(config) if e.segment in (None, segment)), None)


def assign(config, customer_id: str, segment: str) -> Assignment | None:
    """The arm of `customer_id` in the experiment running on `segment`, or None when no experiment covers it.

    `config` is a loaded Config (or its ConfigFile). An arm whose sequence is `default` keeps the segment's own
    sequence. A holdout assignment has no sequence: the case is tracked, but dunctl does nothing on it."""
    experiment = experiment_for(config, segment)
    if experiment is None:
        return None
    if experiment.holdout and unit_hash(experiment.name, "holdout", customer_id) < experiment.holdout:
        return Assignment(experiment.name, HOLDOUT, None, True)
    point = unit_hash(experiment.name, "arm", customer_id) * sum(arm.weight for arm in experiment.arms)
    chosen = experiment.arms[-1]
    for arm in experiment.arms:
        point -= arm.weight
        if point < 0:
            chosen = arm
            break
    sequence = chosen.sequence
    if sequence == DEFAULT_SEQUENCE:
        sequence = _segment_sequence(config, segment) or sequence
    return Assignment(experiment.name, chosen.name, sequence, False)


def case_sequence(config, assignment: Assignment | None, segment: str):
    """The sequence to fix on a case that opens with `assignment` (from `assign`): the arm's sequence; the
    segment's own when the case is in no experiment; for the holdout, an empty sequence named 'holdout', which
    plans no step at all, so dunctl does nothing on the case (the caller also skips turning Stripe's own
    retries off, so the customer sees exactly what Stripe alone would do)."""
    if assignment is not None and assignment.holdout:
        return config.sequence_without_steps(HOLDOUT, f"holdout of experiment {assignment.experiment}: no dunctl "
                                             "action")
    name = assignment.sequence_name if assignment is not None else _segment_sequence(config, segment)
    return config.sequences[name]


# -- validation (called from dunctl.config's cross-checks) -------------------------------------------------------


def check_experiments(config, lines: dict, broken: set[str] = frozenset()) -> list[ConfigProblem]:
    """Arms naming unknown sequences, experiments naming unknown segments, duplicate names, two experiments
    over the same cases: each a problem naming the file, the key path and what is allowed."""
    experiments = _experiments(config)
    path = str(config.path)
    segments = [s.name for s in config.file.segments]
    problems: list[ConfigProblem] = []

    def problem(loc: tuple, message: str) -> None:
        problems.append(ConfigProblem(path, format_path(loc), message, lines.get(loc) or lines.get(loc[:-1])))

    names: set[str] = set()
    covered: list[tuple[str | None, str]] = []
    for i, experiment in enumerate(experiments):
        loc = ("experiments", i)
        if experiment.name in names:
            problem(loc + ("name",), f"experiment name '{experiment.name}' is used twice; names must be unique "
                                     "(the name is what assigns customers to arms)")
        names.add(experiment.name)
        if experiment.segment is not None and experiment.segment not in segments:
            problem(loc + ("segment",), f"unknown segment '{experiment.segment}'; known segments: "
                                        f"{', '.join(segments)} (or leave segment out for every segment)")
        overlap = next((name for segment, name in covered if None in (segment, experiment.segment)
                        or segment == experiment.segment), None)
        if overlap:
            problem(loc + ("segment",), f"experiment '{experiment.name}' covers the same cases as '{overlap}'; a "
                                        "case can be in one experiment only: give each its own segment")
        covered.append((experiment.segment, experiment.name))
        arm_names: set[str] = set()
        for j, arm in enumerate(experiment.arms):
            arm_loc = loc + ("arms", j)
            if arm.name == HOLDOUT:
                problem(arm_loc + ("name",), f"'{HOLDOUT}' is reserved for the holdout; use holdout: 10% for a "
                                             "share of customers who get no dunctl action")
            if arm.name in arm_names:
                problem(arm_loc + ("name",), f"arm name '{arm.name}' is used twice in experiment "
                                             f"'{experiment.name}'")
            arm_names.add(arm.name)
            if arm.sequence != DEFAULT_SEQUENCE and arm.sequence not in broken \
                    and config.sequences and arm.sequence not in config.sequences:
                problem(arm_loc + ("sequence",), f"unknown sequence '{arm.sequence}'; known sequences: "
                                                 f"{', '.join(sorted(config.sequences))}, or {DEFAULT_SEQUENCE} "
                                                 "(the segment's own)")
        if experiment.control is not None and experiment.control not in arm_names:
            problem(loc + ("control",), f"unknown arm '{experiment.control}'; arms: {', '.join(arm_names)}")
    return problems


# -- the report by arm (`dunctl report --by arm`) ----------------------------------------------------------------

# /2: comparisons are always-valid, cluster-robust by customer and Holm-corrected (issue 24); /1's ci_low,
# ci_high and distinguishable meant a fixed-sample Newcombe interval, which peeking made wrong a third of the time.
ARMS_SCHEMA = "dunctl.arms/2"


@dataclass
class ArmCurrency:
    currency: str
    cases: int
    recovered: int
    amount_at_stake: int          # ended cases, minor units of this currency only
    amount_recovered: int


@dataclass
class ArmFigures:
    arm: str
    customers: int                # customers with a case in the arm: the unit randomised
    cases: int                    # failed invoices assigned to the arm
    open: int
    ended: int
    recovered: int
    recovered_of_failed: float | None     # recovered / cases: open cases count as not yet recovered
    recovered_of_ended: float | None   # recovered / ended cases
    currencies: list[ArmCurrency]
    days_to_recovery_median: float | None
    days_to_recovery_mean: float | None
    messages: int                 # emails and SMS dunctl sent on the arm's cases
    messages_per_recovered: float | None
    retries: int                  # payment attempts after the failed one (Stripe's and dunctl's)
    retries_per_recovered: float | None
    with_person: int


@dataclass
class ExperimentReport:
    experiment: str
    control: str
    arms: list[ArmFigures]
    comparisons: list  # list[dunctl.sequential.ArmComparison], each arm against the control, on recovered_of_failed
    method: str                   # how the comparisons were made, with its sources
    alpha: float                  # the false-positive rate over every look and every arm
    minimum_detectable_effect: float
    power: float
    min_customers: int            # no verdict before this many customers in each of the two arms
    note: str


@dataclass
class ArmReport:
    since: str | None
    until: str | None
    experiments: list[ExperimentReport]
    schema: str = ARMS_SCHEMA


def _ratio(numerator: int | None, denominator: int | None, places: int = 6) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, places)


def _median(values: list[int]) -> float | None:
    if not values:
        return None
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _arm_figures(row: dict, customers: int, money: list[dict], seconds: list[int], sent: int) -> ArmFigures:
    arm, days = row["arm"], [s / 86400 for s in seconds]
    return ArmFigures(
        arm=arm, customers=customers, cases=row["cases"], open=row["open"], ended=row["ended"],
        recovered=row["recovered"], recovered_of_failed=_ratio(row["recovered"], row["cases"]),
        recovered_of_ended=_ratio(row["recovered"], row["ended"]),
        currencies=[ArmCurrency(m["currency"], m["cases"], m["recovered"], m["at_stake"], m["recovered_amount"])
                    for m in money if m["arm"] == arm],
        days_to_recovery_median=None if not days else round(_median(days), 4),
        days_to_recovery_mean=None if not days else round(sum(days) / len(days), 4),
        messages=sent, messages_per_recovered=_ratio(sent, row["recovered"], 2),
        retries=row["retries"], retries_per_recovered=_ratio(row["retries"], row["recovered"], 2),
        with_person=row["with_person"])


def _control(names: list[str], configured: Experiment | None) -> str:
    if configured is not None:
        return configured.control_arm
    # no case in the period: any name will do, there is nothing to compare
    return "control" if "control" in names or not names else next((n for n in names if n != HOLDOUT), names[0])


NOTE = ("Differences are in recovered of failed: of every case of the arm (open ones count as not yet recovered), arm "
        "minus control. The intervals stay valid however often this report is looked at (an always-valid mSPRT "
        "confidence sequence: Johari, Koomen, Pekelis & Walsh 2022, Operations Research; Howard, Ramdas, McAuliffe & "
        "Sekhon 2021, Annals of Statistics), count customers, not cases, as the unit (customers are randomised), and "
        "are Holm-corrected across the {k} arm(s) compared with the control. 'needed' is cases per arm to detect {mde}"
        " points with power {power:g} at alpha {alpha:g}; no verdict before {floor} customers in each arm.")


def _experiment_report(ledger, name: str, configured: Experiment | None, lo, hi) -> ExperimentReport:
    from dunctl.ledger.views import experiments as q   # lazy: see dunctl/lazy.py
    from dunctl.sequential import METHOD, ArmSample, Design, compare_arms   # lazy: see dunctl/lazy.py

    money = q.arm_currencies(ledger, name, lo, hi)
    seconds = q.arm_recovery_seconds(ledger, name, lo, hi)
    messages = q.arm_messages(ledger, name, lo, hi)
    sums = q.arm_customer_sums(ledger, name, lo, hi)
    arms = [_arm_figures(row, sums[row["arm"]]["customers"], money, seconds.get(row["arm"], []),
                         messages.get(row["arm"], 0)) for row in q.arm_counts(ledger, name, lo, hi)]
    control = _control([a.arm for a in arms], configured)
    design = Design() if configured is None else Design(
        minimum_detectable_effect=configured.minimum_detectable_effect, power=configured.power)
    empty = {"customers": 0, "cases": 0, "recovered": 0}
    samples = {arm: ArmSample(**{k: v for k, v in row.items() if k != "arm"}) for arm, row in sums.items()}
    others = [a.arm for a in arms if a.arm != control]
    comparisons = compare_arms(control, samples.get(control, ArmSample(**empty)),
                               [(arm, samples[arm]) for arm in others], design)
    note = NOTE.format(k=len(others), mde=f"{design.minimum_detectable_effect * 100:.1f}", power=design.power,
                       alpha=design.alpha, floor=design.min_customers)
    return ExperimentReport(name, control, arms, comparisons, METHOD, design.alpha,
                            design.minimum_detectable_effect, design.power, design.min_customers, note)


def arm_report(ledger, config=None, experiment: str | None = None, since=None, until=None) -> ArmReport:
    """Every arm of `experiment` (default: every experiment recorded in the ledger), over the cases first failed
    in [since, until): counts, both recovery rates, money per currency, days to recovery, messages and retries
    per recovered invoice, and each arm against the control (dunctl/sequential.py): an always-valid interval,
    by customer, Holm-corrected, with the cases still needed and a verdict or a refusal.

    The control is the experiment's `control` (else its first arm) when `config` still has the experiment, else
    the arm named `control`, else the first arm in name order. The holdout is compared with the control too. A
    control with no case in the period refuses every comparison instead of leaving them out."""
    from dunctl.ledger.views import experiments as q   # lazy: see dunctl/lazy.py

    lo, hi = iso(since), iso(until)
    recorded = q.experiments_in_ledger(ledger)
    if experiment is not None and experiment not in recorded:
        raise UsageError(f"no case in the ledger belongs to experiment '{experiment}'",
                         "experiments with cases: " + (", ".join(recorded) or "none yet"))
    configured = {e.name: e for e in _experiments(config)} if config is not None else {}
    return ArmReport(lo, hi, [_experiment_report(ledger, name, configured.get(name), lo, hi)
                              for name in ([experiment] if experiment else recorded)])
