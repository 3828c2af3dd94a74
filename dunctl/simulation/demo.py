"""The core of `dunctl demo` and `dunctl simulate`: run the real engine, tick by tick on a cron-like schedule,
against the simulated account, and measure what happened. Returns dataclasses; the CLI renders them.

The schedule is cron's `7 * * * *`: a tick at seven minutes past every simulated hour. After each tick the
driver tells the account what dunctl did that customers (or a person) would notice: each email and SMS sent,
each escalation, so the simulated customers can respond.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from dunctl.channels import Delivery
from dunctl.clock import iso
from dunctl.config import Config, load_config
from dunctl.tick import ChannelSet, TickResult, run_tick
from dunctl.errors import UsageError
from dunctl.experiments import HOLDOUT
from dunctl.ledger import Ledger
from dunctl.ledger.views.report import messages_delivered, retries_made
from dunctl.messages import Templates
from dunctl.report import build_report, headline as report_headline
from dunctl.scaffold import write_starter
from dunctl.simulation.account import SimulatedAccount
from dunctl.simulation.assumptions import (
    DEFAULT_PRESET,
    Assumptions,
    preset_assumptions,
    preset_name,
)
from dunctl.receivables.aging import receivables_section
from dunctl.simulation.net_terms import build_net_terms_book
from dunctl.simulation.net_terms_outcome import card_part, measure_net_terms
from dunctl.simulation.population import build_book
from dunctl.simulation.results import CurrencyOutcome, DemoResult, Outcome, SimulationResult

# A Monday, so that business days and weekends fall the same way on every run. Fixed, never the wall clock:
# the same seed must give the same numbers.
DEFAULT_START = datetime(2026, 11, 2, tzinfo=timezone.utc)
TICK_EVERY = timedelta(hours=1)
TICK_MINUTE = 7                     # cron: 7 * * * *
DEFAULT_SEED = 42
CUSTOMER_ACTIONS = ("email", "sms")
Progress = Callable[[int, int, datetime], None]


# -- channels for `simulate`: nothing leaves the machine ----------------------------------------------------------


class RecordingChannels(ChannelSet):
    """Every channel the config names, delivering nowhere: `simulate` may run a production config without
    emailing, texting or posting to anyone."""

    def email(self, message, key, now) -> Delivery:
        to = message.to if isinstance(message.to, str) else ", ".join(message.to)
        return Delivery(f"simulated email to {to}")

    def sms(self, message, key) -> Delivery:
        return Delivery(f"simulated sms to {message.to}")

    def slack(self, text, key) -> Delivery:
        return Delivery("simulated slack post")

    def webhook(self, event, payload, key, now) -> Delivery:
        return Delivery(f"simulated webhook {event}")


# -- the driver ---------------------------------------------------------------------------------------------------


def stripe_retries(config: Config) -> bool:
    """Whether the simulated account runs Stripe's Smart Retries: with `retries: stripe`, and with `retries:
    dunctl` when an experiment has a holdout, whose cases dunctl leaves to Stripe (dunctl turns them off on
    every other case it works, before the first one is due)."""
    return config.file.stripe.retries == "stripe" or any(
        e.holdout for e in getattr(config.file, "experiments", None) or [])


_NAME = re.compile(r"\{\{[^}]*customer\.(first_name|name)")
_WHAT = re.compile(r"\{\{[^}]*(amount|invoice\.number|invoice\.lines|line\.description)")


def personalised_templates(config: Config) -> frozenset[str]:
    """Templates that name the customer and say what the charge was for: the guide's 'personalised' email, as
    opposed to generic templated messaging."""
    names = set()
    for path in config.templates_dir.glob("*.txt.j2"):
        text = path.read_text()
        if _NAME.search(text) and _WHAT.search(text):
            names.add(path.name.split(".")[0])
    return frozenset(names)


class Driver:
    """Runs ticks on a schedule and feeds what dunctl did back to the simulated customers."""

    def __init__(self, config: Config, ledger: Ledger, account: SimulatedAccount, channels: ChannelSet, *,
                 tick_every: timedelta = TICK_EVERY):
        self.config, self.ledger, self.account, self.channels = config, ledger, account, channels
        self.tick_every = tick_every
        self.personalised = personalised_templates(config)
        # messages: customer message steps done (a grouped email once per case it covers); Outcome.messages_sent
        # counts deliveries instead.
        self.ticks = self.actions = self.failed_actions = self.messages = self.notices = 0
        self.last_tick: datetime | None = None
        self._steps: dict[int, dict[str, dict]] = {}

    def run(self, start: datetime, end: datetime, progress: Progress | None = None) -> None:
        first = start.replace(minute=TICK_MINUTE, second=0, microsecond=0)
        if first < start:
            first += self.tick_every
        total = int((end - first) / self.tick_every) + 1 if end >= first else 0

        with Templates.held(self.config.templates_dir):
            self._ticks(first, total, progress)

    def _ticks(self, first: datetime, total: int, progress: Progress | None) -> None:
        for n in range(total):
            now = first + n * self.tick_every
            self.account.advance_to(now)
            # A simulated account is always worked live: monitor mode guards real accounts, not simulations.
            result = run_tick(self.ledger, self.config, self.account, self.channels, now, mode="live")
            self._feed(result, now)
            self.last_tick = now
            if progress:
                progress(n + 1, total, now)

    def _feed(self, result: TickResult, now: datetime) -> None:
        self.ticks += 1
        self.actions += len(result.actions)
        self.failed_actions += len(result.failed)
        for report in result.actions:
            if report.status != "done":
                continue
            if report.step.startswith("notice:"):          # pre-dunning (dunctl/notices)
                self.notices += 1
                self.account.notice_delivered(report.step[7:].split("@")[0], report.invoice_id, now)
            elif report.action in CUSTOMER_ACTIONS:
                self.messages += 1
                self._message(report.invoice_id, report.step, report.action, report.recipient, now)
            elif report.action == "escalate":
                self.account.escalated(report.invoice_id, now)

    def _message(self, invoice_id: str, step_id: str, action: str, recipient: str | None, now: datetime) -> None:
        """`recipient`: as the tick reported it, which is what it recorded (the case's actions are not read again)."""
        case = self.ledger.cases.for_invoice(invoice_id)
        if case is None:
            return
        customer = self.ledger.sync.customer(case["customer_id"]) or {}
        manager = json.loads(customer.get("metadata") or "{}").get("account_manager_email")
        if recipient and manager and recipient == manager:
            self.account.escalated(invoice_id, now)      # the account manager picks it up
            return
        template = self._step(case).get(step_id, {}).get("template")
        self.account.message_delivered(invoice_id, action, now, recipient=recipient,
                                       personalised=template in self.personalised)

    def _step(self, case: dict) -> dict[str, dict]:
        if case["id"] not in self._steps:
            steps = self.ledger.cases.sequence_definition(case["sequence_hash"]).get("steps", [])
            self._steps[case["id"]] = {s["id"]: s for s in steps}
        return self._steps[case["id"]]

    def outcome(self, name: str, customers: int, now: datetime, preset: str = DEFAULT_PRESET,
                subscriptions: int | None = None) -> Outcome:
        """What the run achieved; `subscriptions` is the book's size when it is known (the synthetic book)."""
        stats = self.account.stats
        with card_part(self.ledger) as cards:
            # Deliveries, not steps: one grouped email covering three invoices is one message to the customer.
            outcome = measure(name, cards, now, self.config.file.dunning.attribution_window, customers=customers,
                              messages=messages_delivered(cards.conn), retries_dunctl=stats.dunctl_retries,
                              retries_stripe=stats.provider_retries, subscriptions=subscriptions,
                              invoices_billed=stats.invoices, collected_by=stats.recovered_by, ticks=self.ticks,
                              actions=self.actions, failed_actions=self.failed_actions, preset=preset)
        outcome.notices_sent = self.notices          # pre-dunning (dunctl/notices)
        outcome.cards_updated_after_notice = stats.responses["card updated after an expiry notice"]
        outcome.net_terms = measure_net_terms(self.ledger, now, self.account.net_terms_stats.collected_by)
        return outcome


def measure(name: str, ledger: Ledger, now: datetime, window: timedelta, *, customers: int, messages: int,
            retries_dunctl: int, retries_stripe: int, subscriptions: int | None, invoices_billed: int = 0,
            collected_by: dict | None = None, ticks: int = 0, actions: int = 0, failed_actions: int = 0,
            preset: str = DEFAULT_PRESET) -> Outcome:
    """A run's outcome. Every figure about cases comes from `dunctl report`'s code over the run's ledger; the
    rest is passed in. Involuntary churn needs `subscriptions` (the book's size); None leaves it unknown."""
    report = build_report(ledger, now, dimensions=["channel"], attribution_window=window)
    h = report.headline
    channels: dict[str, int] = {}
    for row in report.breakdowns.get("channel", []):
        channels[row.key] = channels.get(row.key, 0) + row.recovered
    within_14 = next((p.recovered for p in report.recovery_curve if p.day == 13), None)
    if within_14 is None and report.recovery_curve:
        within_14 = report.recovery_curve[-1].recovered if report.recovery_curve[-1].day < 13 else 0
    retries = retries_dunctl + retries_stripe

    def per(value: int, denominator: int, places: int = 4) -> float | None:
        return round(value / denominator, places) if denominator else None

    return Outcome(
        name=name, customers=customers, invoices_billed=invoices_billed, failed_invoices=h.failed_invoices,
        recovered=h.recovered, open=h.open, ended=h.ended, ended_by_state=dict(h.ended_by_state),
        recovered_of_failed=per(h.recovered, h.failed_invoices), recovered_of_ended=per(h.recovered, h.ended),
        currencies=[CurrencyOutcome(c.currency, c.cases, c.ended, c.recovered, c.amount_at_stake,
                                    c.amount_recovered, per(c.amount_recovered, c.amount_at_stake), c.amount_failed,
                                    per(c.amount_recovered, c.amount_failed))
                    for c in h.currencies],
        days_to_recovery_median=h.days_to_recovery.median, days_to_recovery_mean=h.days_to_recovery.mean,
        days_to_recovery_p90=h.days_to_recovery.p90,
        recovered_after_day_14=per(h.recovered - (within_14 or 0), h.recovered),
        messages_sent=messages, messages_per_recovered=per(messages, h.recovered, 2),
        retries_dunctl=retries_dunctl, retries_stripe=retries_stripe,
        retries_per_recovered=per(retries, h.recovered, 2), handed_to_people=h.with_person,
        churned=h.churn.churned_subscriptions,
        involuntary_churn=per(h.churn.churned_subscriptions, subscriptions) if subscriptions else None,
        subscriptions=subscriptions, **_monthly_churn(h.churn),
        recovered_by_channel=dict(sorted(channels.items(), key=lambda kv: (-kv[1], kv[0]))),
        collected_by=dict(sorted((collected_by or {}).items())), ticks=ticks, actions=actions,
        failed_actions=failed_actions, preset=preset)


def _monthly_churn(churn) -> dict:
    whole = [m for m in churn.months if not m.partial and m.active_customers is not None]
    return {"churned_customers": sum(m.churned_customers for m in whole),
            "customer_months": sum(m.active_customers for m in whole), "churn_per_month": churn.monthly_rate}


def _fast(ledger: Ledger) -> Ledger:
    # A simulated ledger is rebuilt by re-running; it does not need every commit on disk before the next.
    ledger.skip_fsync()
    return ledger


@contextmanager
def worked_in_memory(path: Path) -> Iterator[Ledger]:
    """The simulated ledger at `path`, worked in memory and written to the file once, when the run ends (SQLite's
    backup API). Its thousands of ticks then commit without a file write and a lock each: about a quarter of the
    demo's system time and half of what the file cost. Like `_fast`, only for a ledger rebuilt by re-running: a
    run that fails leaves the file as migrated, with no history."""
    with Ledger.open(path) as file:
        ledger = _fast(file.snapshot_in_memory())
        try:
            yield ledger
            ledger.conn.backup(file.conn)
        finally:
            ledger.close()


def simulate_config(config: Config, ledger: Ledger, channels: ChannelSet, *, name: str, customers: int, seed: int,
                    start: datetime, billing_days: int, follow_up_days: int = 0,
                    preset: str = DEFAULT_PRESET, assumptions: Assumptions | None = None,
                    progress: Progress | None = None, tick_every: timedelta = TICK_EVERY) -> tuple[Outcome, Driver]:
    """One run: a fresh book of `customers`, billed for `billing_days`, followed for `follow_up_days` more, in
    the world of the named assumptions `preset` (or of `assumptions`, when given: calibration tries variants),
    with a tick every `tick_every` (cron's hour; tests of a property that holds at any cadence may tick less)."""
    if assumptions is None:
        assumptions = preset_assumptions(preset)
    else:
        preset = preset_name(assumptions)
    book = build_book(customers, seed, assumptions)
    net_terms = build_net_terms_book(customers, seed, assumptions)     # added to the book, never drawn from it
    if not (ledger.get_state("simulation") or {}).get("customers"):
        # The book's customers: the denominator of churn per month (dunctl.report.customer_denominator).
        ledger.set_state("simulation", {"customers": customers})
    bill_until = start + timedelta(days=billing_days)
    account = SimulatedAccount(book, seed=seed, start=start, bill_until=bill_until, assumptions=assumptions,
                               smart_retries=stripe_retries(config), net_terms=net_terms)
    driver = Driver(config, ledger, account, channels, tick_every=tick_every)
    end = bill_until + timedelta(days=follow_up_days)
    driver.run(start, end, progress)
    # The book's subscriptions (main plans and add-ons) are the churn denominator.
    return driver.outcome(name, customers, driver.last_tick or end, preset,
                          subscriptions=book_subscriptions(book)), driver


def book_subscriptions(book) -> int:
    return sum(customer.subscriptions for customer in book)


# -- dunctl demo --------------------------------------------------------------------------------------------------


class DemoChannels(RecordingChannels):
    """The demo's channels: email through the config's own (file) transport into `outbox/`, so the messages can
    be read; SMS, Slack and webhooks recorded only, so a config naming real ones contacts nobody."""

    def email(self, message, key, now) -> Delivery:
        return ChannelSet.email(self, message, key, now)


def prepare_demo(directory: Path, config_source: Path | None = None) -> Path:
    """Write the demo's config into `directory`, set up for the simulated account, with emails landing in
    `outbox/` as files. Without `config_source`: the starter config, sequences and templates, with dunctl doing
    the retries (so they go through the account). With it: that config (validated first), its ledger moved into
    `directory` and its sequences and templates used where they are."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} already exists and is not empty; the demo never overwrites",
                         "pass another directory: dunctl demo DIR, or remove this one")
    if config_source is not None:
        return _demo_config_from(Path(config_source), directory)
    write_starter(directory, email_transport="file")
    config_path = directory / "dunctl.yaml"
    text = config_path.read_text()
    text, n = re.subn(r"(?m)^(\s*retries:\s*)stripe\b", r"\1dunctl", text, count=1)
    if n != 1:
        raise UsageError(f"cannot set stripe.retries in {config_path}: the starter config changed shape")
    text = text.replace("Example Billing <billing@example.com>", "Demo Billing <billing@dunctl-demo.test>")
    text = re.sub(r"(?m)^(\s*company:\s*)Example\b", r"\1Demo Co", text, count=1)
    text = "# Written by `dunctl demo`: the starter config, with dunctl doing the retries on a simulated account.\n" + text
    config_path.write_text(text)
    return config_path


def _demo_config_from(source: Path, directory: Path) -> Path:
    loaded = load_config(source)                      # a bad config stops here, before anything is written
    data = yaml.safe_load(source.read_text())
    data["ledger"] = {"path": "dunctl.db"}
    data["sequences"] = {"dir": str((loaded.base_dir / loaded.file.sequences.dir).resolve())}
    data["templates"] = {"dir": str(loaded.templates_dir)}
    data["channels"] = {**(data.get("channels") or {}), "email": {"transport": "file", "dir": "outbox"}}
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "dunctl.yaml"
    config_path.write_text(f"# Written by `dunctl demo --config {source}`: that config on a simulated account, with "
                           "its ledger here and emails as files in outbox/.\n" + yaml.safe_dump(data, sort_keys=False))
    return config_path


# Billing days and follow-up days of the default demo: 35 days after billing stops let almost every case end (a
# 30-day sequence), so its rates can stand next to the anchors', which measure cases that ended; a demo cut off
# mid-dunning showed half its cases open (issue 24). 30 + 35 days cost about what 45 days did.
DEFAULT_DEMO_DAYS = 30
DEFAULT_FOLLOW_UP_DAYS = 35


def run_demo(directory: Path, *, customers: int = 500, days: int = DEFAULT_DEMO_DAYS, seed: int = DEFAULT_SEED,
             start: datetime = DEFAULT_START, preset: str = DEFAULT_PRESET, config: Path | None = None,
             progress: Progress | None = None, follow_up_days: int = 0) -> DemoResult:
    """Create `directory` with a config (the starter, or `config`), a ledger and an outbox, then bill for `days`
    and follow the cases `follow_up_days` more, in hourly ticks against a simulated account of `customers` in the
    world of `preset`. The same seed gives the same numbers. `dunctl demo` follows DEFAULT_FOLLOW_UP_DAYS; callers
    that only need a ledger (tests, backtests) may skip the follow-up."""
    if customers < 1 or days < 1 or follow_up_days < 0:
        raise UsageError("--customers and --days must be at least 1, --follow-up at least 0")
    preset_assumptions(preset)                        # an unknown preset fails before anything is written
    directory = Path(directory)
    config_path = prepare_demo(directory, config)
    loaded = load_config(config_path)
    end = start + timedelta(days=days + follow_up_days)
    with worked_in_memory(loaded.ledger_path) as ledger:
        ledger.set_state("simulation", {"seed": seed, "customers": customers, "preset": preset, "start": iso(start),
                                        "end": iso(end)})
        outcome, driver = simulate_config(loaded, ledger, DemoChannels(loaded, {}), name="demo",
                                          customers=customers, seed=seed, start=start, billing_days=days,
                                          follow_up_days=follow_up_days, preset=preset, progress=progress)
        subscriptions, billed = outcome.subscriptions, outcome.invoices_billed
        outcome, holdout = split_holdout(loaded, ledger, outcome, driver.last_tick or end)
        ledger.set_state("simulation", {"seed": seed, "customers": customers, "preset": preset, "start": iso(start),
                                        "end": iso(end), "last_tick": iso(driver.last_tick),
                                        "subscriptions": subscriptions})
        example = _example_case(ledger)
        net_terms_example = _example_case(ledger, net_terms=True)
        headline = report_headline(ledger, driver.last_tick or end)
        receivables = receivables_section(ledger, driver.last_tick or end)
    outbox = loaded.base_dir / (loaded.file.channels.email.dir if loaded.file.channels.email else "outbox")
    return DemoResult(directory.resolve(), config_path.resolve(), loaded.ledger_path, outbox.resolve(), seed,
                      start, end, outcome, headline, example, driver.last_tick, preset, holdout, follow_up_days,
                      billed, receivables, net_terms_example)


def split_holdout(config: Config, ledger: Ledger, outcome: Outcome, now: datetime) -> tuple[Outcome, Outcome | None]:
    """(what dunning did, the holdout): each measured by the report's engine over a copy of the ledger that holds
    only its cases. Without holdout cases, (outcome, None). Figures only the whole run knows (invoices billed,
    who collected, the book's subscriptions) stay with the whole run: the parts leave them out."""
    if not ledger.cases.any_in_arm(HOLDOUT):
        return outcome, None
    window = config.file.dunning.attribution_window
    parts = []
    for name, in_arm in (("dunning (arms)", False), ("holdout (no dunctl action)", True)):
        part = ledger.snapshot_in_memory()
        conn = part.conn
        part.set_state("simulation", {})      # the book's customers are not the part's: no churn denominator
        part.cases.keep_only(HOLDOUT, in_arm)
        part.cases.keep_net_terms(False)      # card figures on card cases; net-terms ones are the whole run's
        ours, stripes = retries_made(conn)
        parts.append(measure(name, part, now, window, customers=outcome.customers, messages=messages_delivered(conn),
                             retries_dunctl=ours, retries_stripe=stripes, subscriptions=None, ticks=outcome.ticks,
                             preset=outcome.preset))
        part.close()
    return parts[0], parts[1]


def _example_case(ledger: Ledger, net_terms: bool = False) -> str | None:
    """A card case with a story (or a net-terms one, `net_terms`): recovered after messages, else handed to a
    person, else any."""
    cases = [c for c in ledger.cases.listed(include_ended=True) if (c["failure_type"] == "net_terms") == net_terms]
    for wanted in (lambda c: c["state"] == "recovered" and c["recovered_by"] == "customer",
                   lambda c: c["with_person"], lambda c: True):
        found = next((c for c in cases if wanted(c)), None)
        if found:
            return found["invoice_id"]
    return None


# -- dunctl simulate ----------------------------------------------------------------------------------------------


def variant_config(source: Path, work: Path) -> tuple[str, Config]:
    """A variant to simulate: a dunctl.yaml (its segments, sequences and templates as they are), or a directory
    of sequence files run under the starter config's segments and templates, with dunctl making the retries and
    no pre-dunning notices (they would be the same for every sequence set)."""
    source = Path(source)
    if source.is_file():
        return source.stem if source.name != "dunctl.yaml" else source.parent.name or "config", load_config(source)
    if not source.is_dir():
        raise UsageError(f"{source} is neither a config file nor a directory of sequences",
                         "pass a dunctl.yaml or a directory holding sequence *.yaml files")
    target = work / f"variant-{source.name}"
    if target.exists():
        shutil.rmtree(target)
    write_starter(target)
    _overlay_sequences(source, target / "sequences")
    text = (target / "dunctl.yaml").read_text()
    if (source / "templates").is_dir():     # the sequence set brings its own templates
        text = re.sub(r"(?m)^templates:.*$", f"templates: {{dir: {json.dumps(str((source / 'templates').resolve()))}}}",
                      text)
    # The sequences' own retry steps are what is being compared, so dunctl makes them (not Smart Retries); and
    # pre-dunning notices, the same for every sequence set, stay off (compare configs to weigh notices).
    text = re.sub(r"(?m)^(\s*retries:\s*)stripe\b", r"\1dunctl", text, count=1)
    text = re.sub(r"(?m)^(notices:\n\s*enabled:\s*)true\b", r"\1false", text, count=1)
    (target / "dunctl.yaml").write_text(text)
    return source.name, load_config(target / "dunctl.yaml")


def _overlay_sequences(source: Path, sequences: Path) -> None:
    """The directory's sequences over the starter's: a starter sequence stays only when the directory defines no
    sequence of its name, so a directory holding just `net-terms.yaml` compares net-terms cadences with the card
    sequences as shipped (a whole set replaces the whole set, as before)."""
    def name(path: Path) -> str | None:
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            return None                 # loading the variant's config reports it, with the file
        return data.get("name") if isinstance(data, dict) else None

    given = {name(path) for path in source.glob("*.yaml")} | {path.stem for path in source.glob("*.yaml")}
    for path in sequences.glob("*.yaml"):
        if path.stem in given or name(path) in given:
            path.unlink()
    shutil.copytree(source, sequences, ignore=shutil.ignore_patterns("templates"), dirs_exist_ok=True)


def run_simulation(sources: list[Path], work: Path, *, customers: int = 1000, days: int = 30,
                   follow_up_days: int = 35, seed: int = DEFAULT_SEED, start: datetime = DEFAULT_START,
                   preset: str = DEFAULT_PRESET, assumptions: Assumptions | None = None,
                   progress: Callable[[str, int, int], None] | None = None,
                   tick_every: timedelta = TICK_EVERY) -> SimulationResult:
    """Run the same synthetic book under each config or sequence set. Billing runs for `days`; every case then
    gets `follow_up_days` more, so each sequence can play out. Nothing is sent anywhere."""
    if len(sources) < 1:
        raise UsageError("give at least one config file or sequences directory to simulate")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    result = SimulationResult(seed, customers, start, days, follow_up_days,
                              preset=preset if assumptions is None else preset_name(assumptions))
    names: set[str] = set()
    for i, source in enumerate(sources):
        name, config = variant_config(source, work)
        while name in names:
            name = f"{name}-{i + 1}"
        names.add(name)
        ledger_path = work / f"{i + 1:02d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.db"
        for stale in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm")):
            stale.unlink(missing_ok=True)
        with worked_in_memory(ledger_path) as ledger:
            step = (lambda done, total, now, name=name: progress(name, done, total)) if progress else None
            outcome, _ = simulate_config(config, ledger, RecordingChannels(config, {}), name=name,
                                         customers=customers, seed=seed, start=start, billing_days=days,
                                         follow_up_days=follow_up_days, preset=preset, assumptions=assumptions,
                                         progress=step, tick_every=tick_every)
        result.outcomes.append(outcome)
    return result
