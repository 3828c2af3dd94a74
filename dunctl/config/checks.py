"""Checks the schema alone cannot make: inside a sequence (unique step ids, time order, what each action
accepts, the retry cap, announcements) and across files (segments and the sequences they name, templates,
channels). Problems stop the load; notes are warnings `dunctl check` prints.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dunctl.conditions import check_condition
from dunctl.config.schema import CUSTOMER, CUSTOMER_FACING, IRREVERSIBLE, Config, Segment, Sequence, Step
from dunctl.errors import ConfigProblem
from dunctl.failures import NEVER_RETRY
from dunctl.fx import threshold_spread
from dunctl.notices.config import STARTER_UPDATE_URL
from dunctl.receivables.settings import handoff_problems
from dunctl.strict import format_path

MESSAGE_CHANNELS = ("email", "sms", "slack", "webhook")   # actions that are a message on the channel of their name


# -- inside one sequence ----------------------------------------------------------------------------------------


def sequence_problems(sequence: Sequence, path: Path, lines: dict) -> list[ConfigProblem]:
    """Every step of a sequence that validated against the schema, checked against the others."""
    found: list[tuple[tuple, str]] = []
    seen: set[str] = set()
    previous = None
    for i, step in enumerate(sequence.steps):
        if step.id in seen:
            found.append((("steps", i, "id"), f"step id '{step.id}' is used twice; step ids must be unique"))
        seen.add(step.id)
        if previous is not None and step.at.sort_key < previous.sort_key:
            found.append((("steps", i, "at"), f"'{step.at.text}' comes before the previous step's "
                                              f"'{previous.text}'; list steps in time order"))
        previous = step.at
        found += [(("steps", i) + rel, message) for rel, message in _step_problems(sequence, i)]
    found += _retry_cap_problems(sequence)
    return [ConfigProblem(str(path), format_path(loc), message, lines.get(loc)) for loc, message in found]


def _step_problems(sequence: Sequence, index: int) -> Iterator[tuple[tuple, str]]:
    """(key path inside the step, message) for what step `index` asks that its action does not allow."""
    step = sequence.steps[index]
    for rel, message in check_condition(step.when):
        yield ("when",) + rel, message
    if step.action in ("email", "sms") and not step.template:
        yield ("template",), f"a {step.action} step needs a template"
    if step.action == "escalate" and any(rule in ("billing_contact", "customer") for rule in step.recipient_rules):
        yield ("to",), ("an escalation goes to the escalation channel, to account_manager or to an address, never "
                        "to the customer")
    if step.to and step.action not in ("email", "sms", "escalate"):
        yield ("to",), f"'to' applies to email, sms and escalate steps, not {step.action}"
    if step.cc and step.action != "email":
        yield ("cc",), f"'cc' applies to email steps, not {step.action}"
    if step.announces is not None:
        message = _announcement_problem(sequence, index)
        if message:
            yield ("announces",), message


def _retry_cap_problems(sequence: Sequence) -> list[tuple[tuple, str]]:
    retries = [i for i, step in enumerate(sequence.steps) if step.action == "retry"]
    # The first failed attempt counts against the cap, so a sequence may plan max_attempts - 1 retries.
    if len(retries) <= sequence.max_attempts - 1:
        return []
    return [(("steps", retries[sequence.max_attempts - 1]),
             f"{len(retries)} retry steps exceed the cap: max_attempts is {sequence.max_attempts}, counting the "
             f"failed attempt, so at most {sequence.max_attempts - 1} retries are allowed")]


def _announcement_problem(sequence: Sequence, index: int) -> str:
    """What is wrong with step `index`'s `announces:` key, or ''."""
    step = sequence.steps[index]
    ids = [s.id for s in sequence.steps]
    if step.audience != CUSTOMER:
        return (f"only a customer message (an email or sms step to the customer) can announce a step; "
                f"'{step.id}' is {step.action}" + (" to someone internal" if step.action in CUSTOMER_FACING else ""))
    if step.announces not in ids:
        return f"unknown step '{step.announces}'; steps of this sequence: {', '.join(ids)}"
    target = ids.index(step.announces)
    if target <= index:
        return f"'{step.announces}' is not a later step; a message announces a step that comes after it"
    action = sequence.steps[target].action
    if action not in IRREVERSIBLE:
        return (f"'{step.announces}' ({action}) is not an irreversible step; only those are announced: "
                f"{', '.join(sorted(IRREVERSIBLE))}")
    return ""


# -- across files -----------------------------------------------------------------------------------------------


def cross_check(config: Config, lines: dict, broken: set[str]) -> list[ConfigProblem]:
    """Problems between the config and its sequences and templates; warnings go to `config.notes`. `broken`
    names the sequences whose files are invalid (already reported)."""
    problems = _segment_problems(config, lines, broken) + _template_problems(config)
    problems += handoff_problems(config, lines)
    config.notes.extend(_channel_notes(config))
    config.notes.extend(_threshold_notes(config.file.segments))
    config.notes.extend(_setting_notes(config))
    return problems


def _segment_problems(config: Config, lines: dict, broken: set[str]) -> list[ConfigProblem]:
    path = str(config.path)
    segments = config.file.segments
    problems = []
    if not segments or segments[-1].when:
        problems.append(ConfigProblem(path, "segments", "the last segment must be a default: a segment with no "
                                      "'when', which catches every case the rules above do not",
                                      lines.get(("segments",))))
    names: set[str] = set()
    for i, segment in enumerate(segments):
        loc = ("segments", i)
        if segment.name in names:
            problems.append(ConfigProblem(path, format_path(loc + ("name",)),
                                          f"segment name '{segment.name}' is used twice", lines.get(loc)))
        names.add(segment.name)
        if not segment.when and i != len(segments) - 1:
            problems.append(ConfigProblem(path, format_path(loc), "a segment with no 'when' matches everything; "
                                          "only the last segment may be the default", lines.get(loc)))
        for rel, message in check_condition(segment.when):
            problems.append(ConfigProblem(path, format_path(loc + ("when",) + rel), message,
                                          lines.get(loc + ("when",) + rel) or lines.get(loc)))
        if segment.sequence not in broken:
            problems += _segment_sequence_problems(config, segment, loc, lines)
    return problems


def _segment_sequence_problems(config: Config, segment: Segment, loc: tuple, lines: dict) -> list[ConfigProblem]:
    """The segment's sequence must exist, and must not retry the hard declines the segment is for."""
    if config.sequences and segment.sequence not in config.sequences:
        return [ConfigProblem(str(config.path), format_path(loc + ("sequence",)),
                              f"unknown sequence '{segment.sequence}'; known sequences: "
                              f"{', '.join(sorted(config.sequences))}", lines.get(loc + ("sequence",)))]
    sequence = config.sequences.get(segment.sequence)
    hard = _failure_types(segment.when) & NEVER_RETRY
    problems = []
    for j, step in enumerate(sequence.steps if sequence and hard else []):
        step_types = _failure_types(step.when) or None
        if step.action == "retry" and (step_types is None or step_types & hard):
            problems.append(ConfigProblem(
                str(config.sequence_files[sequence.name]), format_path(("steps", j)),
                f"retry step in sequence '{sequence.name}', which segment '{segment.name}' uses for "
                f"{', '.join(sorted(hard))}: a hard decline must never be retried (give the step a when: "
                f"failure_type that excludes them, or use another sequence)"))
    return problems


def _template_problems(config: Config) -> list[ConfigProblem]:
    """Every template a sequence's steps or its thank-you name must exist, in each part the action sends."""
    problems = []
    for name, sequence in config.sequences.items():
        file = str(config.sequence_files[name])
        for j, step in enumerate(sequence.steps):
            if step.template:
                kinds = ("sms",) if step.action == "sms" else ("subject", "txt")
                problems += _missing_template(config, file, ("steps", j, "template"), step.template, kinds)
        if sequence.on_recovery is not None:
            problems += _missing_template(config, file, ("on_recovery", "email"), sequence.on_recovery.email,
                                          ("subject", "txt"))
    return problems


def _missing_template(config: Config, file: str, loc: tuple, template: str, kinds: tuple) -> list[ConfigProblem]:
    return [ConfigProblem(file, format_path(loc), f"unknown template '{template}': {config.templates_dir}/"
                                                  f"{template}.{kind}.j2 does not exist; known templates: "
                                                  f"{', '.join(known_templates(config.templates_dir))}")
            for kind in kinds
            if config.templates_dir.is_dir() and not (config.templates_dir / f"{template}.{kind}.j2").exists()]


def known_templates(templates_dir: Path) -> list[str]:
    if not templates_dir.is_dir():
        return []
    return sorted({p.name.split(".")[0] for p in templates_dir.glob("*.j2") if not p.name.startswith("_")})


def _channel_notes(config: Config) -> list[str]:
    # Not an error: shipped sequences go multi-channel where the channel exists, and skip the step (recorded on
    # the case) where it does not.
    notes = []
    for name, sequence in config.sequences.items():
        for step in sequence.steps:
            needed = _channel_of(config, step)
            if needed and getattr(config.file.channels, needed) is None:
                notes.append(f"{config.sequence_files[name]}: step '{step.id}' uses the {needed} channel, which is "
                             f"not configured (channels.{needed}); the step will be skipped")
    return notes


def _channel_of(config: Config, step: Step) -> str | None:
    if step.action == "escalate":
        return step.channel or config.file.escalation.channel
    return step.action if step.action in MESSAGE_CHANNELS else None


def _threshold_notes(segments: list[Segment]) -> list[str]:
    """A warning for each amount test whose per-currency values are far apart once roughly converted: meant as
    the same amount, one of them is off (a zero-decimal currency written in cents)."""
    notes = []
    for i, segment in enumerate(segments):
        for field_name in ("amount_due", "amount_remaining"):
            test = (segment.when or {}).get(field_name)
            for op, values in (test.items() if isinstance(test, dict) else []):
                why = threshold_spread(values) if isinstance(values, dict) else None
                if why:
                    notes.append(f"segments[{i}] ({segment.name}) {field_name}.{op}: the thresholds differ by more "
                                 f"than 10x: {why}; make them the same amount in each currency")
    return notes


def _setting_notes(config: Config) -> list[str]:
    """Settings that are valid but probably not what the user wants yet."""
    notes = []
    if config.file.stripe.retries == "stripe" and any(
            step.action == "retry" for seq in config.sequences.values() for step in seq.steps):
        notes.append("stripe.retries is 'stripe': retry steps are left to Stripe's Smart Retries and recorded on "
                     "the case; set stripe.retries: dunctl for dunctl to retry itself")
    if config.file.notices.enabled and config.file.notices.update_url == STARTER_UPDATE_URL:
        notes.append("notices.update_url is still the starter's placeholder: set it to your customer portal login "
                     "link before notices reach customers")
    return notes


def _failure_types(when: dict | None) -> set[str]:
    """The failure types a `when:` names. A malformed test (a mapping, a nested list) names none: check_condition
    has already reported it with its key path, and this must not crash on it (a dict is not hashable)."""
    types = (when or {}).get("failure_type") if isinstance(when, dict) else None
    return {t for t in (types if isinstance(types, list) else [types]) if isinstance(t, str)}
